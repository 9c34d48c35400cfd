"""``hydraissue``: serve, version, replay, verify, gc-uploads, import, backup, restore.

Every failure the operator can fix prints one line (what is wrong, how to fix it)
and exits non-zero; tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydraissue import __version__
from hydraissue.backup import BackupError
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
    _backup_parsers(commands)
    _update_parser(commands)
    return parser


def _backup_parsers(commands: Any) -> None:
    backup = commands.add_parser(
        "backup", help="write a consistent archive of the data dir (server may run)"
    )
    _common(backup)
    backup.add_argument("dest", type=Path, metavar="DEST.tar.gz", help="the archive to write")
    restore = commands.add_parser(
        "restore", help="unpack an archive into an empty data dir, then replay and verify"
    )
    _common(restore)
    restore.add_argument("src", type=Path, metavar="SRC.tar.gz", help="the archive to read")


def _update_parser(commands: Any) -> None:
    update = commands.add_parser(
        "update", help="install the newest release from update.release_url (docs/runbook.md)"
    )
    update.add_argument("--config", type=Path, help=f"config file (default {DEFAULT_CONFIG})")
    update.add_argument(
        "--check", action="store_true", help="only say whether a newer version exists"
    )
    update.add_argument(
        "--artifact",
        type=Path,
        help="the installed hydraissue-linux-amd64 to replace (default: the one running)",
    )


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
    from web import serving
    from web.accesslog import setup_logging
    from web.app import create_app

    config_existed = (args.config or DEFAULT_CONFIG).expanduser().exists()
    config = _config(args, dev=args.dev)
    setup_logging(config.log_level, config.log_format)
    lock = _locked(config)
    host, port = config.host_port
    if args.dev:
        _dev_banner(config, fresh=not config_existed)
    updates = _serve_updates(config)  # hydraissue/updater.py: the periodic check
    dev_restart = DevRestart() if args.dev else None
    try:
        # web/serving.py: connection limits, one access line per request, and a
        # shutdown bounded by shutdown_timeout_seconds (instead of web.run_app).
        serving.run(
            create_app(
                config,
                own_lock=False,
                # live config (web/reload.py): the file is watched and loaded again
                config_file=(args.config or DEFAULT_CONFIG).expanduser(),
                reload_config=lambda: _config(args, dev=args.dev),
                update_status=updates.status,
                code_reload=dev_restart,  # --dev: a code change restarts (web/devreload.py)
            ),
            config,
            lambda: print(
                f"hydraissue {__version__} listening on http://{host}:{port}", flush=True
            ),
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
    updates.reexec_if_installed()  # an update was installed: run it in this process
    if dev_restart is not None and dev_restart.requested:
        logging.shutdown()
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    return 0


class DevRestart:
    """``serve --dev``'s restart on a code change: stop as on SIGTERM (in-flight
    requests finish, the lock is released), then ``cmd_serve`` runs the command again."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self) -> None:
        self.requested = True
        os.kill(os.getpid(), signal.SIGTERM)


def _serve_updates(config: Config) -> Any:
    """Automatic updates (off in --dev, with HYDRA_AUTO_UPDATE=off, update.enabled false)."""
    from hydraissue.updater import serve_updates

    return serve_updates(config)


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


def cmd_update(args: argparse.Namespace) -> int:
    from hydraissue.updater import UpdateError, Updater, ask_version, running_artifact

    config = load(args.config, require_tokens=False)
    installed = args.artifact.expanduser().absolute() if args.artifact else running_artifact()
    if installed is None:
        raise CliError(
            "this hydraissue does not run from a release artifact (a source tree or a pip "
            "install); pass --artifact PATH of the installed hydraissue-linux-amd64"
        )
    if not installed.is_file():
        raise CliError(f"{installed}: no such file; pass --artifact the installed artifact")

    def say(line: str) -> None:
        print(line, flush=True)

    def restart(version: str) -> None:
        say(
            "restart the service to run it: `sudo systemctl restart hydraissue` "
            "(a `hydraissue serve` started by hand: stop it and start it again)"
        )

    async def run() -> int:
        current = __version__
        if args.artifact:
            current = (await ask_version(installed)).split()[-1]
        say(f"installed: {installed} ({current}), channel {config.update_channel}")
        async with Updater(
            installed,
            current,
            release_url=config.update_release_url,
            channel=config.update_channel,
            public_key=config.update_public_key,
            restart=restart,
            say=say,
        ) as updater:
            if args.check:
                result = await updater.check()
                if result.outcome == "available":
                    say(
                        f"update available: {current} -> {result.latest}; "
                        "run `hydraissue update` to install it"
                    )
                return 0
            await updater.update()
        return 0

    try:
        return asyncio.run(run())
    except UpdateError as exc:
        raise CliError(f"update refused: {exc}") from None


def _belongs_to(path: Path, ids: set[int], root: Path) -> bool:
    parts = path.relative_to(root).parts
    return bool(parts) and parts[0].isdigit() and int(parts[0]) in ids


def _stage_progress() -> Callable[[str, int, int], None] | None:
    if not sys.stderr.isatty():
        return None
    shown: dict[str, Callable[[int, int], None] | None] = {}

    def show(stage: str, done: int, total: int) -> None:
        if stage not in shown:
            shown[stage] = _progress(stage)
        step = shown[stage]
        if step is not None:
            step(done, total)

    return show


def cmd_backup(args: argparse.Namespace) -> int:
    from hydraissue.backup import backup

    config = _config(args, tokens=False)
    refuse_original(config.data_path)
    dest = args.dest.expanduser()
    started = time.monotonic()
    result = backup(config.data_path, dest, _stage_progress())
    for line in result.notes:
        print(f"note: {line}")
    print(
        f"backup of {config.data_path} at position {result.position}: "
        f"{plural(result.issues, 'issue')}, {plural(result.events, 'event')}, "
        f"{plural(result.uploads, 'upload')}, {plural(result.files, 'file')} "
        f"({result.bytes} bytes) written to {dest} in {time.monotonic() - started:.2f}s"
    )
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from hydraissue.backup import check_empty, restore

    config = _config(args, tokens=False)
    data_dir = config.data_path
    check_empty(data_dir, allowed=(".lock",))  # before the lock creates the folder
    lock = DataDirLock(data_dir)
    lock.acquire()
    try:
        result = asyncio.run(restore(args.src.expanduser(), data_dir, _stage_progress()))
    finally:
        lock.release()
    for line in result.notes:
        print(f"note: {line}")
    print(
        f"restored {plural(result.issues, 'issue')} ({plural(result.events, 'event')}, "
        f"{plural(result.files, 'file')}) up to position {result.position} into {data_dir}"
    )
    if result.problems:
        print(f"verify found {len(result.problems)} problem(s):")
        for problem in result.problems:
            print(f"  - {problem}")
        print("the archive held damaged logs; restore those issues from an older backup")
        return 1
    print(f"ok: verified; start the server with `hydraissue serve --data-dir {data_dir}`")
    return 0


COMMANDS = {
    "serve": cmd_serve,
    "version": cmd_version,
    "replay": cmd_replay,
    "verify": cmd_verify,
    "gc-uploads": cmd_gc_uploads,
    "import": cmd_import,
    "update": cmd_update,
    "backup": cmd_backup,
    "restore": cmd_restore,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, DataDirBusy, CliError, OriginalData, ImportRefused, BackupError) as exc:
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
