"""``make release``: one self-contained executable, laid out as the release server serves it.

    dist/hydraissue-linux-amd64                           the artifact (a shiv zipapp)
    dist/SHA256SUMS, dist/latest.json                     beside it
    dist/hydraissue/{channel}/latest.json                 {"version": "0.1.0"}
    dist/hydraissue/{channel}/v{version}/hydraissue-linux-amd64
    dist/hydraissue/{channel}/v{version}/SHA256SUMS       "<hex>  hydraissue-linux-amd64"
    dist/hydraissue/{channel}/v{version}/SHA256SUMS.sig   with --sign KEY.pem (Ed25519)

Copy ``dist/hydraissue/`` to the release server's root as it is. The zipapp holds every
dependency's wheels (built for this machine: linux, amd64, CPython 3.11) and runs with
the system's ``python3.11``; on its first run it unpacks into ``~/.shiv`` (or
``SHIV_ROOT``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "hydraissue"
PLATFORM = "linux-amd64"
ENTRY_POINT = "hydraissue.cli:main"
INTERPRETER = "/usr/bin/env python3.11"


def project_version(root: Path = ROOT) -> str:
    with (root / "pyproject.toml").open("rb") as handle:
        return str(tomllib.load(handle)["project"]["version"])


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_zipapp(out: Path) -> None:
    shiv = Path(sys.executable).with_name("shiv")
    if not shiv.exists():
        raise SystemExit(
            "release: shiv is not installed; run `.venv/bin/pip install -e '.[test]'` "
            "(or `.venv/bin/pip install shiv`)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            str(shiv),
            "--entry-point",
            ENTRY_POINT,
            "--output-file",
            str(out),
            "--python",
            INTERPRETER,
            "--reproducible",
            "--compressed",
            "--quiet",
            str(ROOT),
        ],
        check=True,
        cwd=ROOT,
    )
    out.chmod(0o755)


def signature(key_file: Path, data: bytes) -> bytes:
    """The Ed25519 signature of ``data`` (``update.public_key`` checks it on install)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(key_file.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"release: cannot read the signing key {key_file}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SystemExit(
            f"release: {key_file} is not an Ed25519 private key "
            "(openssl genpkey -algorithm ed25519 -out key.pem)"
        )
    return key.sign(data)


def lay_out(
    artifact: Path, dist: Path, version: str, channel: str, sign: Path | None = None
) -> Path:
    """SHA256SUMS (and its signature) and latest.json beside the artifact, and the
    server's tree; its folder."""
    name = artifact.name
    sums = f"{sha256(artifact)}  {name}\n"
    latest = json.dumps({"version": version}) + "\n"
    (dist / "SHA256SUMS").write_text(sums)
    (dist / "latest.json").write_text(latest)
    folder = dist / PROJECT / channel / f"v{version}"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(artifact, folder / name)
    (folder / name).chmod(0o755)
    (folder / "SHA256SUMS").write_text(sums)
    if sign is not None:
        signed = signature(sign, sums.encode())
        (dist / "SHA256SUMS.sig").write_bytes(signed)
        (folder / "SHA256SUMS.sig").write_bytes(signed)
    (dist / PROJECT / channel / "latest.json").write_text(latest)
    return folder


def smoke(artifact: Path, version: str) -> None:
    """The artifact answers ``version`` with the version it is released as."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    out = subprocess.run(
        [str(artifact), "version"], capture_output=True, text=True, timeout=120, env=env
    )
    want = f"{PROJECT} {version}"
    if out.returncode != 0 or out.stdout.strip() != want:
        raise SystemExit(
            f"release: {artifact} version printed {out.stdout.strip()!r} "
            f"(exit {out.returncode}, {out.stderr.strip()[-200:]!r}); expected {want!r}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channel", default="production", choices=("production", "staging"))
    parser.add_argument("--dist", type=Path, default=ROOT / "dist")
    parser.add_argument("--sign", type=Path, help="PEM Ed25519 private key: SHA256SUMS.sig")
    args = parser.parse_args(argv)
    if args.sign is not None:
        signature(args.sign, b"")  # a bad key fails before the build, not after
    version = project_version()
    artifact = args.dist / f"{PROJECT}-{PLATFORM}"
    build_zipapp(artifact)
    smoke(artifact, version)
    folder = lay_out(artifact, args.dist, version, args.channel, args.sign)
    print(f"release {version} ({args.channel}): {artifact} ({artifact.stat().st_size} bytes)")
    print(f"  serve {args.dist / PROJECT} as {{release_url}}/{PROJECT}/ ({folder})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
