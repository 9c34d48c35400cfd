"""``hydraissue backup`` and ``hydraissue restore``: a consistent archive of a data dir.

**Backup** runs beside a live server and never takes the data dir lock nor writes into
the data dir. It reads the position index first: every position recorded there was
published (records are written only after their events are durable, and batches are
published in position order), so its head P is a committed position below which
everything that will ever be committed already is. Then each event log is read and cut
after its last event at a position <= P: events committed later, a batch still on its
way to disk, a failed batch waiting to be cut back and a torn tail are all above P (or
not whole lines) and are left out. So every log in the archive ends at the same
committed position. Uploads are the files the included events name (of issues not
deleted at P); ``webhooks.yaml``, ``sessions.yaml`` and ``audit/refused.yaml`` are
copied as they are (the first two are replaced atomically, the last is cut after its
last whole line). Projections, snapshots, checkpoints and the webhook journals are
left out: replay rebuilds them, and a restored server starts its webhooks at the
store's head, so nothing is sent twice.

The archive (gzip'd tar) ends with ``MANIFEST.json``: the format, the version that
wrote it, the position, counts, and the size and SHA-256 of every file. It is written
to a temp file beside the destination, fsynced, and renamed into place.

**Restore** goes into an empty (or missing) data dir only, under its lock. Every member
must be a regular file with a relative name without ``..`` that the manifest lists with
a matching checksum; anything else refuses the whole archive and leaves the data dir as
it was. Then replay rebuilds the projections and verify checks the result.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from events.clock import utc_now
from events.fsio import fsync_dir
from events.logs import LogDamaged, parse_log, scan, torn_tail
from events.positions import PositionIndex
from hydraissue import __version__
from hydraissue.evolve import fold

MANIFEST = "MANIFEST.json"
FORMAT = "hydraissue-backup"
FORMAT_VERSION = 1
# Durable state beside the event logs (docs/architecture.md, "Files in the data dir").
STATE_FILES = ("webhooks.yaml", "sessions.yaml")
APPENDED_FILES = ("audit/refused.yaml",)  # appended without fsync: cut at the last line
CHUNK = 1024 * 1024

# progress(stage, done, total)
Progress = Callable[[str, int, int], None]


class BackupError(Exception):
    """A one-line, fixable problem with a backup or a restore."""


@dataclass(slots=True)
class BackupResult:
    path: Path
    position: int
    issues: int = 0
    events: int = 0
    uploads: int = 0
    files: int = 0
    bytes: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class RestoreResult:
    position: int
    issues: int
    events: int
    files: int
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


# -- backup ---------------------------------------------------------------------------


def committed_position(data_dir: Path) -> int | None:
    """The head of the position index as it is on disk now (None: no usable index)."""
    index = PositionIndex(data_dir / "positions.idx")
    if not index.load():
        return None
    return index.head()


@dataclass(slots=True)
class _Cut:
    data: bytes
    events: int
    attachments: list[str]
    damaged: str = ""


def cut_log(issue_id: int, data: bytes, position: int | None) -> _Cut | None:
    """A log's bytes up to its last event at or below ``position`` (None: every whole
    event), the events kept and the attachment files they name; None when it holds
    none at or below it. A damaged log is kept whole (the server does not append to
    it) and marked."""
    body = data[: len(data) - torn_tail(data)]
    try:
        parsed = parse_log(issue_id, body)
    except LogDamaged as exc:
        if not body:
            return None
        return _Cut(body, 0, [], damaged=str(exc))
    events = parsed.events
    keep = len(events)
    if position is not None:
        while keep and events[keep - 1].pos > position:
            keep -= 1
    if keep == 0:
        return None
    offset, length = parsed.spans[keep - 1]
    issue = fold(events[:keep])
    assert issue is not None
    names = [] if issue.deleted else [a.filename for a in issue.attachments]
    return _Cut(body[: offset + length], keep, names)


class _Hashing(io.RawIOBase):
    """A file read through: its SHA-256 and size as tarfile copies it."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        chunk = self.handle.read(size)
        self.digest.update(chunk)
        self.size += len(chunk)
        return chunk


class _Writer:
    def __init__(self, tar: tarfile.TarFile) -> None:
        self.tar = tar
        self.files: dict[str, dict[str, Any]] = {}
        self.bytes = 0

    def add_bytes(self, name: str, data: bytes, mode: int = 0o644, mtime: float = 0) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = mode
        info.mtime = int(mtime or time.time())
        self.tar.addfile(info, io.BytesIO(data))
        self.files[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        self.bytes += len(data)

    def add_file(self, name: str, path: Path) -> bool:
        """An upload (never changed once placed); False when it is gone."""
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            return False
        with handle:
            stat = os.fstat(handle.fileno())
            info = tarfile.TarInfo(name)
            info.size = stat.st_size
            info.mode = stat.st_mode & 0o777
            info.mtime = int(stat.st_mtime)
            reader = _Hashing(handle)
            self.tar.addfile(info, reader)
        if reader.size != stat.st_size:
            raise BackupError(f"{path} changed while it was copied; run the backup again")
        self.files[name] = {"size": reader.size, "sha256": reader.digest.hexdigest()}
        self.bytes += reader.size
        return True


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def backup(data_dir: Path, dest: Path, progress: Progress | None = None) -> BackupResult:
    """Write the archive of ``data_dir`` to ``dest`` (see the module's docstring)."""
    events_dir = data_dir / "events"
    if not events_dir.is_dir():
        raise BackupError(
            f"{data_dir} holds no events/ folder: nothing to back up; check --data-dir"
        )
    if _inside(dest, data_dir):
        raise BackupError(
            f"{dest} is inside the data dir {data_dir}; write the backup somewhere else"
        )
    if not dest.parent.is_dir():
        raise BackupError(f"{dest.parent} is not a folder; create it or pick another path")
    position = committed_position(data_dir)  # first: everything read after is cut to it
    result = BackupResult(dest, position or 0)
    if position is None:
        result.notes.append(
            "positions.idx is missing or unreadable: every whole event is included "
            "(consistent only if the server is stopped)"
        )
    temp = dest.parent / f".{dest.name}.{os.getpid()}.tmp"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise BackupError(f"cannot write {temp}: {exc.strerror}; pick another path") from exc
    try:
        with os.fdopen(fd, "wb") as out:
            with tarfile.open(fileobj=out, mode="w:gz", compresslevel=6) as tar:
                _write_archive(_Writer(tar), data_dir, result, progress)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, dest)
        fsync_dir(dest.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    result.bytes = dest.stat().st_size
    return result


def _write_archive(
    writer: _Writer, data_dir: Path, result: BackupResult, progress: Progress | None
) -> None:
    limit = None if result.notes else result.position  # no index: every whole event
    ids = sorted(scan(data_dir / "events"))
    uploads: list[tuple[int, str]] = []
    highest = 0
    for done, issue_id in enumerate(ids, start=1):
        name = f"events/{issue_id}.yaml"
        try:
            data = (data_dir / name).read_bytes()
        except FileNotFoundError:
            continue  # a torn create removed since the scan
        cut = cut_log(issue_id, data, limit)
        if progress:
            progress("events", done, len(ids))
        if cut is None:
            continue
        if cut.damaged:
            result.notes.append(f"copied a damaged log as it is: {cut.damaged}")
        writer.add_bytes(name, cut.data)
        result.issues += 1
        result.events += cut.events
        uploads.extend((issue_id, filename) for filename in cut.attachments)
        if cut.events and limit is None:
            highest = max(highest, _last_pos(cut.data))
    if limit is None:
        result.position = highest
    missing = 0
    for done, (issue_id, filename) in enumerate(uploads, start=1):
        if progress:
            progress("uploads", done, len(uploads))
        if "/" in filename or filename in ("", ".", ".."):
            result.notes.append(f"issue {issue_id}: attachment name {filename!r} left out")
            continue
        name = f"uploads/{issue_id}/{filename}"
        if writer.add_file(name, data_dir / name):
            result.uploads += 1
        else:
            missing += 1
    if missing:
        result.notes.append(f"{missing} attachment file(s) named by events were missing")
    for name in STATE_FILES:
        path = data_dir / name
        try:
            data = path.read_bytes()
            mode = path.stat().st_mode & 0o777
        except FileNotFoundError:
            continue
        writer.add_bytes(name, data, mode)
    for name in APPENDED_FILES:
        try:
            data = (data_dir / name).read_bytes()
        except FileNotFoundError:
            continue
        writer.add_bytes(name, data[: data.rfind(b"\n") + 1])
    result.files = len(writer.files)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "version": __version__,
        "created_at": utc_now(),
        "position": result.position,
        "counts": {
            "issues": result.issues,
            "events": result.events,
            "uploads": result.uploads,
            "files": result.files,
        },
        "files": writer.files,
    }
    writer.add_bytes(MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode() + b"\n")


def _last_pos(data: bytes) -> int:
    line = data.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    try:
        return int(json.loads(line[2:]).get("pos", 0))
    except (ValueError, AttributeError):
        return 0


# -- restore --------------------------------------------------------------------------


def _entries(data_dir: Path) -> list[str]:
    try:
        return sorted(os.listdir(data_dir))
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        raise BackupError(
            f"{data_dir} is a file, not a data dir; pick another --data-dir"
        ) from None


def check_empty(data_dir: Path, *, allowed: tuple[str, ...] = ()) -> None:
    found = [name for name in _entries(data_dir) if name not in allowed]
    if found:
        shown = ", ".join(found[:3]) + (", …" if len(found) > 3 else "")
        raise BackupError(
            f"{data_dir} is not empty ({shown}); restore only into an empty or new data "
            "dir: pass another --data-dir"
        )


def member_problem(member: tarfile.TarInfo) -> str | None:
    """Why a tar member may not be extracted (None: a plain file with a safe name)."""
    name = member.name
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or (parts and parts[0].endswith(":")):
        return f"{name!r} is an absolute path"
    if not parts or any(part in ("..", "") for part in parts) or "\\" in name:
        return f"{name!r} leaves the data dir"
    if member.issym() or member.islnk():
        return f"{name!r} is a link"
    if not member.isfile():
        return f"{name!r} is not a regular file"
    return None


def _read_manifest(tar: tarfile.TarFile, src: Path) -> dict[str, Any]:
    try:
        member = tar.getmember(MANIFEST)
    except KeyError:
        raise BackupError(f"{src} has no {MANIFEST}: not a hydraissue backup") from None
    handle = tar.extractfile(member)
    if handle is None:
        raise BackupError(f"{src}: {MANIFEST} is not a file: not a hydraissue backup")
    try:
        manifest = json.loads(handle.read())
    except ValueError:
        raise BackupError(f"{src}: {MANIFEST} is not valid JSON; the archive is damaged") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{src}: {MANIFEST} is not a hydraissue backup manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BackupError(
            f"{src}: backup format {manifest.get('format_version')!r} is not one this "
            f"build reads ({FORMAT_VERSION}); restore with the version that wrote it "
            f"({manifest.get('version')})"
        )
    if not isinstance(manifest.get("files"), dict):
        raise BackupError(f"{src}: {MANIFEST} lists no files; the archive is damaged")
    return manifest


def _open_tar(src: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(src, "r:gz")
    except FileNotFoundError:
        raise BackupError(f"{src}: no such file; check the path") from None
    except (tarfile.TarError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BackupError(
            f"{src} is not a readable tar.gz archive ({reason}); use a file `hydraissue "
            "backup` wrote"
        ) from None


def extract(src: Path, target: Path, progress: Progress | None = None) -> dict[str, Any]:
    """Check and unpack the archive into ``target`` (an empty folder); the manifest.
    Raises BackupError on anything unsafe or not matching (``target`` is then the
    caller's to remove)."""
    tar = _open_tar(src)
    with tar:
        try:
            members = tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise BackupError(
                f"{src} is damaged or cut short ({exc}); use another backup"
            ) from None
        for member in members:
            problem = member_problem(member)
            if problem is not None:
                raise BackupError(f"{src}: refused: {problem}; nothing was restored")
        manifest = _read_manifest(tar, src)
        listed: dict[str, Any] = manifest["files"]
        names = [m.name for m in members if m.name != MANIFEST]
        unlisted = [n for n in names if n not in listed]
        if unlisted:
            raise BackupError(
                f"{src}: refused: {unlisted[0]!r} is not in the manifest; nothing was restored"
            )
        absent = sorted(set(listed) - set(names))
        if absent:
            raise BackupError(
                f"{src}: {absent[0]!r} is in the manifest but not in the archive; "
                "the archive is incomplete"
            )
        folders: set[Path] = set()
        files = [m for m in members if m.name != MANIFEST]
        for done, member in enumerate(files, start=1):
            if progress:
                progress("restore", done, len(files))
            _extract_one(tar, member, target, listed[member.name], src, folders)
        for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            fsync_dir(folder)
        fsync_dir(target)
    return manifest


def _extract_one(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    target: Path,
    expected: Any,
    src: Path,
    folders: set[Path],
) -> None:
    path = target.joinpath(*PurePosixPath(member.name).parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    folders.add(path.parent)
    handle = tar.extractfile(member)
    assert handle is not None  # a regular file (member_problem)
    digest = hashlib.sha256()
    size = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, (member.mode & 0o666) | 0o600)
    with os.fdopen(fd, "wb") as out:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    want = expected.get("sha256") if isinstance(expected, dict) else None
    if digest.hexdigest() != want or size != expected.get("size"):
        raise BackupError(
            f"{src}: refused: {member.name} does not match its checksum in the manifest "
            "(the archive was changed or damaged); nothing was restored"
        )


async def restore(src: Path, data_dir: Path, progress: Progress | None = None) -> RestoreResult:
    """Unpack ``src`` into ``data_dir`` (empty or missing; the caller holds its lock,
    so ``.lock`` may be there), then replay and verify."""
    from projections.rebuild import replay, verify

    check_empty(data_dir, allowed=(".lock",))
    data_dir.mkdir(parents=True, exist_ok=True)
    staging = data_dir / f".restore-{os.getpid()}.tmp"
    try:
        staging.mkdir()
        manifest = extract(src, staging, progress)
        for entry in sorted(os.listdir(staging)):
            os.rename(staging / entry, data_dir / entry)
        staging.rmdir()
        fsync_dir(data_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    counts = manifest.get("counts") or {}
    result = RestoreResult(
        position=int(manifest.get("position") or 0),
        issues=int(counts.get("issues") or 0),
        events=int(counts.get("events") or 0),
        files=len(manifest["files"]),
    )
    replayed = await replay(data_dir, _issues(progress, "replay"))
    # the index is left out of archives: rebuilding it is the normal course here
    result.notes.extend(n for n in replayed.notes if not n.startswith("rebuilt the position"))
    result.notes.extend(f"repaired: {line}" for line in replayed.repairs)
    result.problems = await verify(data_dir, _issues(progress, "verify"))
    return result


def _issues(progress: Progress | None, stage: str) -> Callable[[int, int], None] | None:
    if progress is None:
        return None

    def show(done: int, total: int) -> None:
        progress(stage, done, total)

    return show
