"""``hydraissue``: serve, version, replay, verify, gc-uploads, import.

Every failure the operator can fix prints one line (what is wrong, how to fix it)
and exits non-zero; tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydraissue import __version__
from hydraissue.config import DEFAULT_CONFIG, Config, ConfigError, load
from hydraissue.datadir import DataDirBusy, DataDirLock
from hydraissue.migrate import ImportRefused, OriginalData, refuse_original

EXIT_USAGE = 2
LISTEN_ERRORS = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES})


class CliError(Exception):
    pass


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help=f"config file (default {DEFAULT_CONFIG})")
    parser.add_argument("--data-dir", help="data directory (default ~/.hydraissue/data)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hydraissue", description="HydraIssue issue intake service"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the web service")
    _common(serve)
    serve.add_argument("--listen", help="HOST:PORT to listen on (default 127.0.0.1:8080)")
    serve.add_argument(
        "--dev", action="store_true", help="development mode: create a config with generated tokens"
    )
    commands.add_parser("version", help="print the version")
    for name, text in (
        ("replay", "rebuild every projection from the event logs (server stopped)"),
        ("verify", "check event logs and projections agree (server stopped)"),
        ("gc-uploads", "remove upload folders that belong to no issue (server stopped)"),
    ):
        _common(commands.add_parser(name, help=text))
    imports = commands.add_parser(
        "import", help="import the original HydraIssue's issues/ into events (server stopped)"
    )
    _common(imports)
    imports.add_argument(
        "--from",
        dest="from_dir",
        type=Path,
        help="the original's data dir to read (default: the data dir itself)",
    )
    imports.add_argument(
        "--dry-run", action="store_true", help="report what would be imported; write nothing"
    )
    return parser


def _config(args: argparse.Namespace, *, dev: bool = False, tokens: bool = True) -> Config:
    flags: dict[str, Any] = {"data_dir": args.data_dir, "listen": getattr(args, "listen", None)}
    return load(args.config, flags=flags, dev=dev, require_tokens=tokens)


def _locked(config: Config) -> DataDirLock:
    """The data dir lock, for a command that writes: never into the original's data."""
    refuse_original(config.data_path)
    lock = DataDirLock(config.data_path)
    lock.acquire()
    return lock


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def cmd_version(args: argparse.Namespace) -> int:
    print(f"hydraissue {__version__}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from web.app import create_app

    config_existed = (args.config or DEFAULT_CONFIG).expanduser().exists()
    config = _config(args, dev=args.dev)
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    lock = _locked(config)
    host, port = config.host_port
    if args.dev:
        _dev_banner(config, fresh=not config_existed)
    try:
        web.run_app(
            create_app(config, own_lock=False),
            host=host,
            port=port,
            print=lambda _msg: print(f"hydraissue {__version__} listening on http://{host}:{port}"),
            access_log=None,
        )
    except OSError as exc:
        if exc.filename is None and exc.errno in LISTEN_ERRORS:
            raise CliError(
                f"cannot listen on {host}:{port}: {exc.strerror}; pick another --listen"
            ) from exc
        where = f" ({exc.filename})" if exc.filename else ""
        raise CliError(
            f"cannot use the data dir {config.data_path}: {exc.strerror}{where}; "
            "check that it is a directory you can write"
        ) from exc
    finally:
        lock.release()
    return 0


def _dev_banner(config: Config, *, fresh: bool) -> None:
    note = "wrote a dev config with new tokens" if fresh else "dev mode"
    print(f"hydraissue: {note}; data in {config.data_path}")
    print(f"  api token: {config.api_token}")
    print(
        f'  try: curl -H "Authorization: Bearer {config.api_token}" '
        f"{config.public_url}/api/v1/issues"
    )


def _progress(label: str) -> Callable[[int, int], None] | None:
    if not sys.stderr.isatty():
        return None
    last = [0.0]

    def show(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] > 0.1:
            last[0] = now
            end = "\n" if done == total else ""
            print(f"\r{label}: {done}/{total} issues", end=end, file=sys.stderr, flush=True)

    return show


def cmd_replay(args: argparse.Namespace) -> int:
    from projections.rebuild import replay

    config = _config(args, tokens=False)
    lock = _locked(config)
    try:
        started = time.monotonic()
        result = asyncio.run(replay(config.data_path, _progress("replay")))
    finally:
        lock.release()
    for line in result.repairs:
        print(f"repaired: {line}")
    for line in result.notes:
        print(f"note: {line}")
    print(
        f"replayed {plural(result.events, 'event')} into {plural(result.issues, 'issue')} "
        f"({result.deleted} deleted) in {time.monotonic() - started:.2f}s"
    )
    if result.damaged:
        left_out = plural(len(result.damaged), "damaged log")
        print(f"{left_out} left out (those issues stay unavailable):")
        for reason in result.damaged.values():
            print(f"  - {reason}")
        print("restore those files from a backup (docs/runbook.md), then replay again")
        return 1
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from projections.rebuild import verify

    config = _config(args, tokens=False)
    lock = _locked(config)
    try:
        problems = asyncio.run(verify(config.data_path, _progress("verify")))
    finally:
        lock.release()
    if problems:
        print(f"{len(problems)} problem(s) in {config.data_path}:")
        for problem in problems:
            print(f"  - {problem}")
        print(
            "`hydraissue replay` rebuilds issues/ and issues.yaml from the logs; a damaged "
            "events/ file must first be restored from a backup (docs/runbook.md)."
        )
        return 1
    print(f"ok: event logs and projections in {config.data_path} agree")
    return 0


async def _attached(data_dir: Path) -> tuple[dict[int, set[str]], set[int]]:
    """File names each live issue's events record, and the ids whose logs are damaged."""
    from events.filestore import FileEventStore
    from projections.rebuild import fold_all

    store = FileEventStore(data_dir, read_only=True)
    await store.open()
    try:
        folded, damaged = await fold_all(store)
    finally:
        await store.close()
    attached = {
        issue_id: {a.filename for a in item.issue.attachments}
        for issue_id, item in folded.items()
        if not item.issue.deleted
    }
    return attached, set(damaged)


def cmd_gc_uploads(args: argparse.Namespace) -> int:
    from hydraissue.uploads import UploadStore

    config = _config(args, tokens=False)
    lock = _locked(config)
    try:
        attached, damaged = asyncio.run(_attached(config.data_path))
        uploads = UploadStore(config.data_path)
        # A damaged log's files are kept: that issue may be restored from a backup.
        orphans = [
            path
            for path in uploads.orphans(attached)
            if not _belongs_to(path, damaged, uploads.root)
        ]
        uploads.remove(orphans)
    finally:
        lock.release()
    for path in orphans:
        print(f"removed {path}")
    print(f"gc-uploads: removed {len(orphans)} upload folder(s) or file(s) that belong to no issue")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from hydraissue.migrate import IMPORTING, run_import

    config = _config(args, tokens=False)
    data_dir = config.data_path
    source = (args.from_dir or data_dir).expanduser()
    if not (source / "issues").is_dir() and not (source / "issues.yaml").is_file():
        raise CliError(
            f"{source} holds no issues/ folder or issues.yaml of the original HydraIssue; "
            "point --from (or --data-dir) at the original's data dir"
        )
    lock = None
    if not args.dry_run:
        lock = DataDirLock(data_dir)  # not _locked: the guard is what import lifts
        lock.acquire()
    try:
        started = time.monotonic()
        result = asyncio.run(
            run_import(source, data_dir, dry_run=args.dry_run, progress=_progress("import"))
        )
    finally:
        if lock is not None:
            lock.release()
    label = "dry run, nothing written" if args.dry_run else f"{time.monotonic() - started:.2f}s"
    print(f"import from {source} into {data_dir} ({label})")
    for line in result.lines():
        print(line)
    unreadable = [s for s in result.skipped if "created here" not in s.reason]
    if unreadable and not args.dry_run:
        again = f" --from {source}" if source != data_dir else ""
        print(
            f"{plural(len(unreadable), 'file')} not imported: fix and run "
            f"`hydraissue import{again} --data-dir {data_dir}` again before `serve`"
        )
        return 1
    if not args.dry_run and not (data_dir / IMPORTING).exists():
        print(f"done: start the server with `hydraissue serve --data-dir {data_dir}`")
    return 0


def _belongs_to(path: Path, ids: set[int], root: Path) -> bool:
    parts = path.relative_to(root).parts
    return bool(parts) and parts[0].isdigit() and int(parts[0]) in ids


COMMANDS = {
    "serve": cmd_serve,
    "version": cmd_version,
    "replay": cmd_replay,
    "verify": cmd_verify,
    "gc-uploads": cmd_gc_uploads,
    "import": cmd_import,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, DataDirBusy, CliError, OriginalData, ImportRefused) as exc:
        print(f"hydraissue: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        print(
            f"hydraissue: cannot use the data dir: {exc.strerror}{where}; "
            "check that it is a directory you can write",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
