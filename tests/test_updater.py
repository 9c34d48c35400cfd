"""Updates through a release server: a real aiohttp server on 127.0.0.1 serving a folder
laid out as hydrarelease serves it, with small shell-script artifacts."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import zipapp
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

import hydraissue
from hydraissue import signing
from hydraissue.config import ConfigError, check
from hydraissue.updater import (
    AutoUpdater,
    ServeUpdates,
    UpdateError,
    Updater,
    auto_update_off,
    failed_file,
    parse_version,
    remember_failed,
    staged_path,
)
from tests.conftest import (
    REPO,
    Server,
    free_port,
    local_site,
    server_env,
    start_server,
    stop,
)

NAME = "hydraissue-linux-amd64"


def script(version: str, *, exit_code: int = 0) -> bytes:
    """A fake artifact: answers ``version`` like the real one."""
    return (
        f'#!/bin/sh\nif [ "$1" = version ]; then echo "hydraissue {version}"; '
        f"exit {exit_code}; fi\necho running {version}\n"
    ).encode()


def healthy_script(version: str) -> bytes:
    """A fake artifact whose ``serve`` answers ``/api/v1/health`` on its ``--listen``."""
    return f"""#!{sys.executable}
import http.server, sys
if sys.argv[1] == "version":
    print("hydraissue {version}")
    sys.exit(0)
port = int(sys.argv[sys.argv.index("--listen") + 1].rsplit(":", 1)[1])
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/api/v1/health" else 404)
        self.end_headers()
        self.wfile.write(b"{{}}")
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
""".encode()


def broken_script(version: str, serve: str) -> bytes:
    """A fake artifact that answers ``version`` but whose ``serve`` runs ``serve``."""
    return (
        f'#!/bin/sh\nif [ "$1" = version ]; then echo "hydraissue {version}"; exit 0; fi\n{serve}\n'
    ).encode()


@dataclass
class ReleaseServer:
    root: Path
    url: str
    runner: web.AppRunner

    def publish(
        self,
        version: str,
        artifact: bytes | None = None,
        *,
        channel: str = "production",
        sums: str | None = None,
        latest: bytes | None = None,
        sign: Ed25519PrivateKey | None = None,
    ) -> Path:
        folder = self.root / "hydraissue" / channel / f"v{version}"
        folder.mkdir(parents=True, exist_ok=True)
        body = script(version) if artifact is None else artifact
        (folder / NAME).write_bytes(body)
        digest = hashlib.sha256(body).hexdigest()
        sums_text = sums if sums is not None else f"{'0' * 64}  other-file\n{digest}  {NAME}\n"
        (folder / "SHA256SUMS").write_text(sums_text)
        if sign is not None:
            (folder / "SHA256SUMS.sig").write_bytes(sign.sign(sums_text.encode()))
        latest_body = json.dumps({"version": version}).encode() if latest is None else latest
        (self.root / "hydraissue" / channel / "latest.json").write_bytes(latest_body)
        return folder


@pytest.fixture
async def releases(tmp_path: Path) -> AsyncIterator[ReleaseServer]:
    root = tmp_path / "releases"
    root.mkdir()
    app = web.Application()
    app.router.add_static("/", root)
    runner, url = await local_site(app)
    yield ReleaseServer(root, url, runner)
    await runner.cleanup()


@dataclass
class Installed:
    path: Path
    lines: list[str] = field(default_factory=list)
    restarts: list[str] = field(default_factory=list)

    def updater(self, release_url: str, current: str = "1.2.0", **kw: object) -> Updater:
        return Updater(
            self.path,
            current,
            release_url=release_url,
            restart=lambda version: self.restarts.append(self.path.read_text()),
            say=self.lines.append,
            **kw,  # type: ignore[arg-type]
        )

    def folder_listing(self) -> list[str]:
        return sorted(p.name for p in self.path.parent.iterdir())


@pytest.fixture
def installed(tmp_path: Path) -> Installed:
    folder = tmp_path / "opt"
    folder.mkdir()
    path = folder / NAME
    path.write_bytes(script("1.2.0"))
    path.chmod(0o755)
    return Installed(path)


def test_versions_compare_numerically() -> None:
    assert parse_version("1.10.0") > parse_version("1.9.0")
    assert parse_version("v1.2.3") == parse_version("1.2.3")
    assert parse_version("1.2") == parse_version("1.2.0")
    assert parse_version("0.0.0+source") < parse_version("0.1.0")
    with pytest.raises(ValueError):
        parse_version("latest")


async def test_a_newer_version_is_installed_and_restarted(
    releases: ReleaseServer, installed: Installed
) -> None:
    releases.publish("1.10.0")
    old = installed.path.read_bytes()
    async with installed.updater(releases.url) as updater:
        result = await updater.update()
    assert (result.outcome, result.latest) == ("installed", "1.10.0")
    assert installed.path.read_bytes() == script("1.10.0")
    assert os.access(installed.path, os.X_OK)
    backup = installed.path.with_name(NAME + ".backup")
    assert backup.read_bytes() == old
    # the restart ran after the new artifact was in place, once; no temp file is left
    assert installed.restarts == [script("1.10.0").decode()]
    assert installed.folder_listing() == [NAME, NAME + ".backup"]
    said = "\n".join(installed.lines)
    for step in ("latest.json", "SHA256SUMS", "matches", "answers 'hydraissue 1.10.0'", "kept"):
        assert step in said


@dataclass
class Handover:
    """serve's hand-over after an install, with exec recorded instead of run."""

    updates: ServeUpdates
    execs: list[tuple[str, list[str]]]


def handover(installed: Installed, version: str) -> Handover:
    execs: list[tuple[str, list[str]]] = []
    updates = ServeUpdates(
        installed.path, None, argv=["serve", "--config", "/etc/hydraissue/config.yaml"]
    )
    updates.execv = lambda path, argv: execs.append((path, argv))
    updates.restart_requested, updates.new_version = True, version
    return Handover(updates, execs)


async def test_a_release_that_serves_health_in_its_trial_is_installed(
    releases: ReleaseServer, installed: Installed
) -> None:
    old = installed.path.read_bytes()
    releases.publish("1.4.0", healthy_script("1.4.0"))
    async with installed.updater(releases.url, stage=True) as updater:
        assert (await updater.update()).outcome == "installed"
    # staged beside it: the installed file is never the untried one
    assert installed.path.read_bytes() == old
    assert installed.restarts == [old.decode()]
    assert staged_path(installed.path).read_bytes() == healthy_script("1.4.0")
    run = handover(installed, "1.4.0")
    run.updates.reexec_if_installed(trial_seconds=20)
    assert installed.path.read_bytes() == healthy_script("1.4.0")
    assert installed.path.with_name(NAME + ".backup").read_bytes() == old
    assert installed.folder_listing() == [NAME, NAME + ".backup"]
    path = str(installed.path)
    assert run.execs == [(path, [path, "serve", "--config", "/etc/hydraissue/config.yaml"])]


@pytest.mark.parametrize(
    ("serve", "seconds", "why"),
    [("exit 3", 20.0, "exited with code 3"), ("sleep 30", 1.5, "did not answer")],
    ids=["exits", "hangs"],
)
async def test_a_release_that_fails_its_trial_is_not_installed_and_held_back(
    releases: ReleaseServer,
    installed: Installed,
    caplog: pytest.LogCaptureFixture,
    serve: str,
    seconds: float,
    why: str,
) -> None:
    old = installed.path.read_bytes()
    releases.publish("1.4.0", broken_script("1.4.0", serve))
    async with installed.updater(releases.url, stage=True) as updater:
        assert (await updater.update()).outcome == "installed"
    run = handover(installed, "1.4.0")
    with caplog.at_level("INFO", logger="hydraissue.updater"):
        run.updates.reexec_if_installed(trial_seconds=seconds)
    assert installed.path.read_bytes() == old  # the running version stays, and runs again
    assert os.access(installed.path, os.X_OK)
    assert [path for path, _ in run.execs] == [str(installed.path)]
    assert failed_file(installed.path).read_text() == "1.4.0\n"
    assert installed.folder_listing() == [NAME, NAME + ".failed"]  # the staged file is gone
    assert why in caplog.text and "not installed" in caplog.text
    assert run.updates.status()["held_back"] == ["1.4.0"]
    # the failed version is not tried again ...
    async with installed.updater(releases.url) as updater:
        again = await updater.update()
    assert again.outcome == "held-back" and "failed its start-up trial" in again.message
    assert installed.path.read_bytes() == old and installed.restarts == [old.decode()]
    # ... until a newer one appears
    releases.publish("1.5.0")
    async with installed.updater(releases.url) as updater:
        assert (await updater.update()).outcome == "installed"
    assert installed.path.read_bytes() == script("1.5.0")


async def test_a_checksum_mismatch_is_refused(
    releases: ReleaseServer, installed: Installed
) -> None:
    releases.publish("1.3.0", sums=f"{'ab' * 32}  {NAME}\n")
    before = installed.path.read_bytes()
    async with installed.updater(releases.url) as updater:
        with pytest.raises(UpdateError, match="checksum mismatch"):
            await updater.update()
    assert installed.path.read_bytes() == before
    assert installed.folder_listing() == [NAME]
    assert installed.restarts == []


async def test_a_release_without_its_checksum_line_is_refused(
    releases: ReleaseServer, installed: Installed
) -> None:
    releases.publish("1.3.0", sums=f"{'ab' * 32}  hydraissue-darwin-arm64\n")
    async with installed.updater(releases.url) as updater:
        with pytest.raises(UpdateError, match="no SHA-256 line for hydraissue-linux-amd64"):
            await updater.update()
    assert installed.folder_listing() == [NAME]


@pytest.mark.parametrize(
    ("artifact", "why"),
    [
        (script("1.3.0", exit_code=3), r"`version` failed \(exit 3"),
        (script("1.2.9"), "says 'hydraissue 1.2.9', expected version 1.3.0"),
        (b"\x7fELF not really a program", "cannot run"),
        (b"", "is empty"),
    ],
)
async def test_an_artifact_that_does_not_answer_its_version_is_refused(
    releases: ReleaseServer, installed: Installed, artifact: bytes, why: str
) -> None:
    releases.publish("1.3.0", artifact)
    before = installed.path.read_bytes()
    async with installed.updater(releases.url) as updater:
        with pytest.raises(UpdateError, match=why):
            await updater.update()
    assert installed.path.read_bytes() == before
    assert installed.folder_listing() == [NAME]
    assert installed.restarts == []


@pytest.mark.parametrize("latest", ["1.2.0", "v1.2.0", "1.1.99", "0.9.0"])
async def test_the_same_or_an_older_version_changes_nothing(
    releases: ReleaseServer, installed: Installed, latest: str
) -> None:
    releases.publish(latest.removeprefix("v"), latest=json.dumps({"version": latest}).encode())
    async with installed.updater(releases.url) as updater:
        result = await updater.update()
    assert result.outcome == "up-to-date"
    assert installed.folder_listing() == [NAME]
    assert installed.path.read_bytes() == script("1.2.0")
    assert installed.restarts == []


@pytest.mark.parametrize(
    "body",
    [b"<html>oops</html>", b"[]", b'{"version": 12}', b'{"tag": "1.3.0"}', b'{"version": "new"}'],
)
async def test_garbage_latest_json_is_a_clear_error(
    releases: ReleaseServer, installed: Installed, body: bytes
) -> None:
    releases.publish("1.3.0", latest=body)
    async with installed.updater(releases.url) as updater:
        with pytest.raises(UpdateError, match=r"did not answer a latest\.json like"):
            await updater.update()
    assert installed.folder_listing() == [NAME]


async def test_a_missing_channel_or_a_server_that_is_down_is_a_clear_error(
    releases: ReleaseServer, installed: Installed
) -> None:
    async with installed.updater(releases.url, channel="staging") as updater:
        with pytest.raises(UpdateError, match=r"latest\.json answered 404"):
            await updater.update()
    down = f"http://127.0.0.1:{free_port()}"
    async with installed.updater(down) as updater:
        with pytest.raises(UpdateError, match="release server unreachable"):
            await updater.check()
    assert installed.folder_listing() == [NAME]


def public_hex(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


async def test_a_release_signed_with_the_configured_key_is_installed(
    releases: ReleaseServer, installed: Installed
) -> None:
    key = Ed25519PrivateKey.generate()
    releases.publish("1.3.0", sign=key)
    async with installed.updater(releases.url, public_key=public_hex(key)) as updater:
        assert (await updater.update()).outcome == "installed"
    assert installed.path.read_bytes() == script("1.3.0")
    assert "SHA256SUMS.sig verifies with update.public_key" in installed.lines


@pytest.mark.parametrize("case", ["unsigned", "other key", "tampered sums", "garbage"])
async def test_a_configured_public_key_refuses_what_it_cannot_verify(
    releases: ReleaseServer, installed: Installed, case: str
) -> None:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    folder = releases.publish("1.3.0", sign={"unsigned": None, "other key": other}.get(case, key))
    if case == "tampered sums":  # the signature was made over other checksums
        digest = hashlib.sha256(b"evil").hexdigest()
        (folder / NAME).write_bytes(b"evil")
        (folder / "SHA256SUMS").write_text(f"{digest}  {NAME}\n")
    if case == "garbage":
        (folder / "SHA256SUMS.sig").write_bytes(b"not a signature")
    why = "is not signed" if case == "unsigned" else "does not verify SHA256SUMS"
    async with installed.updater(releases.url, public_key=public_hex(key)) as updater:
        with pytest.raises(UpdateError, match=why):
            await updater.update()
    assert installed.folder_listing() == [NAME]
    assert installed.path.read_bytes() == script("1.2.0") and installed.restarts == []


def test_the_public_key_is_checked_with_the_config() -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    for good in (public_hex(key), base64.b64encode(raw).decode(), pem.decode()):
        check({"update": {"public_key": good}}, "config.yaml")
    with pytest.raises(ConfigError, match=r"update\.public_key must be an Ed25519 public key"):
        check({"update": {"public_key": "MCowBQYDK2VwAyEA"}}, "config.yaml")


def test_make_release_signs_the_checksums(tmp_path: Path) -> None:
    """tools/release.py --sign: SHA256SUMS.sig beside SHA256SUMS, verifying with its key."""
    from tools.release import lay_out

    key = Ed25519PrivateKey.generate()
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    artifact = tmp_path / "dist" / NAME
    artifact.parent.mkdir()
    artifact.write_bytes(script("0.1.0"))
    folder = lay_out(artifact, tmp_path / "dist", "0.1.0", "production", key_file)
    sums = (folder / "SHA256SUMS").read_bytes()
    sig = signing.signature((folder / "SHA256SUMS.sig").read_bytes())
    assert sig is not None
    assert signing.verifies(signing.public_key(public_hex(key)), sums, sig)


async def test_channels_are_separate(releases: ReleaseServer, installed: Installed) -> None:
    releases.publish("2.0.0", channel="staging")
    releases.publish("1.2.0")
    async with installed.updater(releases.url) as updater:
        assert (await updater.check()).outcome == "up-to-date"
    async with installed.updater(releases.url, channel="staging") as updater:
        assert (await updater.update()).latest == "2.0.0"
    assert installed.path.read_bytes() == script("2.0.0")


async def cli(*args: str, home: Path) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYDRAISSUE_", "HYDRA_"))}
    env["HOME"] = str(home)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hydraissue.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_update_check_prints_and_changes_nothing(
    releases: ReleaseServer, installed: Installed, tmp_path: Path
) -> None:
    releases.publish("1.3.0")
    config = tmp_path / "config.yaml"
    config.write_text(f"update:\n  release_url: {releases.url}\n")
    common = ("--config", str(config), "--artifact", str(installed.path))
    code, out, err = await cli("update", "--check", *common, home=tmp_path)
    assert (code, err) == (0, "")
    assert "update available: 1.2.0 -> 1.3.0" in out
    assert installed.folder_listing() == [NAME]

    code, out, err = await cli("update", *common, home=tmp_path)
    assert (code, err) == (0, "")
    assert installed.path.read_bytes() == script("1.3.0")
    assert "systemctl restart hydraissue" in out
    assert installed.folder_listing() == [NAME, NAME + ".backup"]

    code, out, _ = await cli("update", "--check", *common, home=tmp_path)
    assert code == 0 and "up to date: 1.3.0" in out


async def test_update_errors_are_one_line(
    releases: ReleaseServer, installed: Installed, tmp_path: Path
) -> None:
    releases.publish("1.3.0", sums=f"{'ab' * 32}  {NAME}\n")
    config = tmp_path / "config.yaml"
    config.write_text(f"update:\n  release_url: {releases.url}\n")
    common = ("--config", str(config), "--artifact", str(installed.path))
    code, _, err = await cli("update", *common, home=tmp_path)
    assert code == 1
    assert re.fullmatch(r"hydraissue: update refused: checksum mismatch .*\n", err)
    assert installed.folder_listing() == [NAME]
    # not a release artifact: says what to pass
    code, _, err = await cli("update", "--config", str(config), home=tmp_path)
    assert code == 1 and "--artifact" in err and err.count("\n") == 1


def test_auto_update_is_off_in_dev_with_the_variable_or_the_config() -> None:
    assert auto_update_off(enabled=True, dev=False, env={}) is None
    assert auto_update_off(enabled=True, dev=True, env={}) == "--dev"
    assert auto_update_off(enabled=True, dev=False, env={"HYDRA_AUTO_UPDATE": "off"})
    assert auto_update_off(enabled=False, dev=False, env={}) == "update.enabled is false"


async def test_the_periodic_check_installs_and_reports(
    releases: ReleaseServer, installed: Installed
) -> None:
    auto = AutoUpdater(lambda: installed.updater(releases.url), 3600.0)
    assert auto.status()["last_result"] is None
    releases.publish("1.2.0")
    assert (await auto.check_once()).outcome == "up-to-date"
    releases.publish("1.4.0")
    assert (await auto.check_once()).outcome == "installed"
    status = auto.status()
    assert (status["last_result"], status["latest"]) == ("installed", "1.4.0")
    assert status["last_check"] and installed.restarts == [script("1.4.0").decode()]


async def test_the_periodic_check_survives_a_server_that_is_down(installed: Installed) -> None:
    auto = AutoUpdater(lambda: installed.updater(f"http://127.0.0.1:{free_port()}"), 3600.0)
    result = await auto.check_once()
    assert result.outcome == "failed" and "unreachable" in result.message
    assert auto.status()["last_result"] == "failed"
    assert installed.folder_listing() == [NAME]


def test_the_interval_is_jittered() -> None:
    def auto(r: float) -> AutoUpdater:
        return AutoUpdater(lambda: None, 6 * 3600.0, rng=lambda: r)  # type: ignore[arg-type,return-value]

    assert auto(0.0).delay() == pytest.approx(6 * 3600 * 0.9)
    assert auto(1.0).delay() == pytest.approx(6 * 3600 * 1.1)
    assert auto(0.5).delay() == pytest.approx(6 * 3600)
    assert 0 <= auto(1.0).delay(first=True) <= 6 * 3600 * 0.1


async def test_serve_does_not_update_in_dev_or_when_switched_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dev = await start_server(tmp_path / "dev-data", tmp_path, tmp_path / "dev.log", "--dev")
    stop(dev, signal.SIGTERM)
    assert "automatic updates off (--dev)" in dev.output()
    monkeypatch.setenv("HYDRA_AUTO_UPDATE", "off")
    off = await start_server(tmp_path / "data", tmp_path, tmp_path / "off.log")
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{off.url}/api/v1/health") as resp,  # health says so too
    ):
        update = (await resp.json())["extra"]["update"]
    stop(off, signal.SIGTERM)
    assert "automatic updates off (HYDRA_AUTO_UPDATE=off)" in off.output()
    assert update == {
        "automatic": False,
        "why": "HYDRA_AUTO_UPDATE=off",
        "checks": 0,
        "held_back": [],
    }


def test_the_update_section_is_checked() -> None:
    assert check({"update": {"channel": "staging"}}, "c")["update_channel"] == "staging"
    for bad, why in (
        ({"channel": "beta"}, "production or staging"),
        ({"release_url": "releases.example.com"}, "http"),
        ({"interval_hours": 0}, "at least 1"),
        ({"interval": 6}, "unknown key 'update.interval'"),
    ):
        with pytest.raises(ConfigError, match=why):
            check({"update": bad}, "c")


def test_the_release_target_exists_and_the_version_matches() -> None:
    """Building a release is checked by hand (docs/runbook.md); CI checks its parts."""
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^release:.*\n\t.*tools/release\.py", makefile, re.MULTILINE)
    assert not re.search(r"^test:.*release", makefile, re.MULTILINE)
    out = subprocess.run(
        [sys.executable, "-m", "hydraissue.cli", "version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == f"hydraissue {hydraissue.__version__}\n"
    from tools.release import project_version

    assert project_version() == hydraissue.__version__


def launcher(folder: Path, version: str, *, serve_fails: bool = False) -> bytes:
    """A release artifact for the end-to-end test: a zipapp (so ``serve`` takes itself
    for an installed release) that runs this checkout as ``version``."""
    source = folder / f"launcher-{version}"
    source.mkdir(parents=True, exist_ok=True)
    (source / "__main__.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "import hydraissue\n"
        f"hydraissue.__version__ = {version!r}\n"
        f"if {serve_fails!r} and sys.argv[1:2] == ['serve']:\n"
        "    sys.exit(3)  # a release that cannot start\n"
        "from hydraissue.cli import main\n"
        "sys.exit(main())\n"
    )
    target = folder / f"launcher-{version}.pyz"
    zipapp.create_archive(source, target, interpreter=sys.executable)
    return target.read_bytes()


async def health_of(url: str) -> dict[str, Any] | None:
    try:
        async with aiohttp.ClientSession() as session, session.get(f"{url}/api/v1/health") as r:
            return dict(await r.json()) if r.status == 200 else None
    except (aiohttp.ClientError, OSError):
        return None


async def until_health(url: str, proc: subprocess.Popen[bytes], log: Path, want: Any) -> None:
    """Poll health until ``want(health)`` holds (the server answers with the version)."""
    deadline = asyncio.get_running_loop().time() + 60
    while asyncio.get_running_loop().time() < deadline:
        assert proc.poll() is None, log.read_text()
        health = await health_of(url)
        if health is not None and want(health):
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"health never matched:\n{log.read_text()}")


async def test_serve_updates_itself_and_keeps_its_version_when_a_release_cannot_start(
    releases: ReleaseServer, tmp_path: Path
) -> None:
    """The whole hand-over, as a deployed server does it: the running artifact finds a
    newer release, stages it, stops, tries it, installs it and executes it (same PID);
    a later release that cannot start is not installed, and is held back."""
    installed = tmp_path / "opt" / NAME
    installed.parent.mkdir()
    v1_0, v1_1 = launcher(tmp_path, "1.0.0"), launcher(tmp_path, "1.1.0")
    installed.write_bytes(v1_0)
    installed.chmod(0o755)
    releases.publish("1.1.0", v1_1)
    home = tmp_path / "home"
    (home / ".hydraissue").mkdir(parents=True)
    (home / ".hydraissue" / "config.yaml").write_text(
        f"update:\n  release_url: {releases.url}\n  interval_hours: 1\n"
    )
    env = {k: v for k, v in server_env(home).items() if k != "HYDRA_AUTO_UPDATE"}
    env["HYDRAISSUE_UPDATE_FIRST_CHECK_SECONDS"] = "0.2"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(installed), "serve", "--data-dir", str(tmp_path / "data")]
    command += ["--listen", f"127.0.0.1:{port}"]

    def start(log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)

    log = tmp_path / "serve.log"
    proc = start(log)
    try:
        await until_health(url, proc, log, lambda h: h["version"] == "1.1.0")
        assert installed.read_bytes() == v1_1
        assert installed.with_name(NAME + ".backup").read_bytes() == v1_0
        assert "update 1.1.0 passed its trial" in log.read_text()
        assert stop(Server(proc, url, log), signal.SIGTERM) == 0

        releases.publish("1.2.0", launcher(tmp_path, "1.2.0", serve_fails=True))
        proc = start(log)
        await until_health(url, proc, log, lambda h: h["extra"]["update"]["held_back"] == ["1.2.0"])
        health = await health_of(url)
        assert health is not None and health["version"] == "1.1.0"
        text = log.read_text()
        assert "update 1.2.0 failed its trial (it exited with code 3" in text
        assert installed.read_bytes() == v1_1  # the backup is back
        assert stop(Server(proc, url, log), signal.SIGTERM) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_hand_edited_failed_file_does_not_stop_the_hand_over(installed: Installed) -> None:
    failed_file(installed.path).write_text("not a version\n1.3.0\n")
    remember_failed(installed.path, "1.2.5")
    assert failed_file(installed.path).read_text() == "not a version\n1.2.5\n1.3.0\n"


def test_a_hand_over_with_nothing_staged_starts_what_is_installed(installed: Installed) -> None:
    old = installed.path.read_bytes()
    run = handover(installed, "1.4.0")
    run.updates.reexec_if_installed(trial_seconds=1)
    assert installed.path.read_bytes() == old
    assert [path for path, _ in run.execs] == [str(installed.path)]
