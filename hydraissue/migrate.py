"""Migration from the original HydraIssue (the Go service) to the event store.

The original kept one ``issues/{id}.yaml`` per issue, an ``issues.yaml`` index and the
files in ``uploads/{id}/``; this build keeps the truth in ``events/`` and rewrites
``issues/`` and ``issues.yaml`` as projections. So a writing command pointed at the
original's data dir would start empty and overwrite the original's files:
``refuse_original`` stops it first (every writing command, and the service's start,
call it before anything is written).

``run_import`` (``hydraissue import``) turns each original issue file into one
``issue.imported`` event that carries the whole issue, keeping its id. A file it cannot
read is reported and skipped whole; an issue whose log exists is not imported again.
Before anything is written the original files are copied to ``pre-import-<time>/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from events.fsio import fsync_dir, replace_atomically
from events.logs import SUFFIX, scan
from events.model import Actor, NewEvent
from events.store import Append, StoreError
from hydraissue.model import (
    CATEGORIES,
    DEFAULT_CATEGORY,
    PRIORITIES,
    STATUS_ALIASES,
    STATUSES,
)
from hydraissue.uploads import INCOMING, SAFE_NAME, clean_original_name, sniff

IMPORTING = ".import-in-progress"  # present while an import writes: serve refuses
BACKUP_PREFIX = "pre-import-"
OUR_INDEX = b"# HydraIssue index"  # how projections/files.py's issues.yaml begins
IMPORTED_KEY = "imported"  # custom_fields key for what the original held beyond our fields
ACTOR = Actor("system", "import")
BATCH = 256  # appends in flight at once (one group commit)
MARGIN = 1 << 20
KNOWN = frozenset(
    {
        "id",
        "title",
        "description",
        "status",
        "priority",
        "category",
        "project",
        "reporter",
        "custom_fields",
        "plan",
        "comments",
        "nim_actions",
        "attachments",
        "created_at",
        "updated_at",
        "status_at",
        "key",  # written by this build's issue files (a projection imported again)
        "seq",
    }
)
_ID = re.compile(r"^(?:[A-Za-z]+-)?0*([1-9][0-9]{0,17})$")  # 12, "12", "HYDRA-12"
_FRACTION = re.compile(r"(\.\d{6})\d+")  # Go writes nanoseconds; Python reads micro
_EXT = re.compile(r"\.([A-Za-z0-9]{1,10})$")

Progress = Callable[[int, int], None]
DiskUsage = Callable[[str], Any]  # shutil.disk_usage's shape: .free


class OriginalData(Exception):
    """A writing command met a data dir of the original service (one line for the CLI)."""


class ImportRefused(Exception):
    """The import cannot start (no room for the backup, the store refused): one line."""


# -- the guard ------------------------------------------------------------------------


def _issue_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        (p for p in folder.iterdir() if p.suffix == ".yaml" and p.is_file()),
        key=lambda p: (len(p.stem), p.stem),
    )


def has_event_logs(data_dir: Path) -> bool:
    folder = data_dir / "events"
    if not folder.is_dir():
        return False
    with os.scandir(folder) as entries:
        return any(e.name.endswith(SUFFIX) and e.name[:1].isdigit() for e in entries)


def original_index(data_dir: Path) -> bool:
    """``issues.yaml`` exists and is not this build's snapshot."""
    try:
        with (data_dir / "issues.yaml").open("rb") as handle:
            head = handle.read(len(OUR_INDEX))
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return False
    return head != OUR_INDEX


def refuse_original(data_dir: Path) -> None:
    """Raise OriginalData when a writing command must not touch ``data_dir``: it holds
    the original's issue files and no event logs, or an import into it did not finish.
    Reads only (a few directory entries, the index's first bytes)."""
    if (data_dir / IMPORTING).exists():
        raise OriginalData(
            f"an import into {data_dir} did not finish; nothing was written; run "
            f"`hydraissue import --data-dir {data_dir}` again (it skips what it imported)"
        )
    if has_event_logs(data_dir):
        return
    files = len(_issue_files(data_dir / "issues"))
    index = original_index(data_dir)
    if not files and not index:
        return
    found = []
    if files:
        found.append(f"{files} issue file(s) in issues/")
    if index:
        found.append("an issues.yaml index")
    raise OriginalData(
        f"{data_dir} holds {' and '.join(found)} of the original HydraIssue and no event "
        f"logs (events/); nothing was written; import them first: "
        f"hydraissue import --data-dir {data_dir}"
    )


# -- reading an original issue file ------------------------------------------------------


class Unreadable(Exception):
    """One file that cannot be imported, with the reason."""


def stamp(moment: datetime) -> str:
    """Our fixed-width UTC stamp (``2026-03-04T12:00:00.000Z``), so times sort as text."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # a bare YYYY-MM-DD HH:MM:SS is taken as UTC
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_time(value: Any) -> str | None:
    """RFC 3339, ``YYYY-MM-DD HH:MM:SS`` (UTC), a date, or Unix seconds; else None."""
    if isinstance(value, datetime):
        return stamp(value)
    if isinstance(value, date):
        return stamp(datetime(value.year, value.month, value.day))
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        seconds = value / 1000 if value > 1e11 else value
        try:
            return stamp(datetime.fromtimestamp(seconds, UTC))
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str) and value.strip():
        text = _FRACTION.sub(r"\1", value.strip())
        text = text[:-3] + "Z" if text.endswith(" UTC") else text
        try:
            return stamp(datetime.fromisoformat(text))
        except ValueError:
            return None
    return None


def parse_id(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value > 0 else None
    if isinstance(value, str):
        match = _ID.match(value.strip())
        return int(match.group(1)) if match else None
    return None


def jsonable(value: Any) -> Any:
    """What a YAML file held, as the event log can store it (times become our stamps)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return parse_time(value)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)
    return str(value)


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(jsonable(value))


def _first(raw: dict[str, Any], *names: str) -> Any:
    for name in names:
        if raw.get(name) not in (None, ""):
            return raw[name]
    return None


@dataclass(slots=True)
class Found:
    """One original issue, read and normalised: the data of its ``issue.imported``."""

    issue_id: int
    source: Path
    data: dict[str, Any]
    files: list[tuple[Path, str]] = field(default_factory=list)  # (original file, name here)
    found: int = 0
    missing: list[str] = field(default_factory=list)
    size: int = 0


def _choice(value: Any, allowed: Iterable[str], extra: dict[str, Any], name: str) -> str | None:
    if value in (None, ""):
        return None
    text = _text(value).strip().lower()
    text = STATUS_ALIASES.get(text, text) if name == "status" else text
    if text in allowed:
        return text
    if text not in ("", "unset", "none"):
        extra[name] = jsonable(value)  # an unknown value is kept, the field defaults
    return None


def _servable(issue_id: int, name: str) -> str:
    """The name the file is served under here: its own when this build can serve that,
    else a stable generated one (hard-linked beside it, so a rerun finds the same)."""
    if SAFE_NAME.match(name):
        return name
    match = _EXT.search(name)
    ext = f".{match.group(1).lower()}" if match else ""
    return hashlib.sha256(f"{issue_id}/{name}".encode()).hexdigest()[:16] + ext


def _attachments(
    found: Found, raw: Any, folder: Path, created: str, extra: dict[str, Any]
) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = []
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, str):
            listed.append({"filename": item})
        elif isinstance(item, dict):
            listed.append(item)
    names_on_disk = (
        sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != INCOMING)
        if folder.is_dir()
        else []
    )
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    unlisted = [{"filename": n} for n in names_on_disk]
    for item in [*listed, *unlisted]:
        stored = _text(_first(item, "filename", "file", "path", "stored_name", "name"))
        stored = stored.replace("\\", "/").rsplit("/", 1)[-1]
        if not stored or stored in seen:
            continue
        seen.add(stored)
        path = folder / stored
        person = _text(_first(item, "original_name", "name", "filename")) or stored
        if not path.is_file():
            found.missing.append(stored)
            continue
        with path.open("rb") as handle:
            head = handle.read(16)
        size = path.stat().st_size
        found.found += 1
        found.size += size
        name_here = _servable(found.issue_id, stored)
        seen.add(name_here)  # a link an earlier, interrupted run made is not a second file
        found.files.append((path, name_here))
        out.append(
            {
                "name": clean_original_name(person.replace("\\", "/").rsplit("/", 1)[-1]),
                "filename": name_here,
                "size": size,
                "content_type": sniff(head, person),
                "at": parse_time(_first(item, "created_at", "uploaded_at", "at")) or created,
            }
        )
    if found.missing:
        extra["missing_attachments"] = list(found.missing)
    return out


def read_original(path: Path, uploads: Path) -> Found:
    """One original issue file, normalised; Unreadable (with the reason) when it is not
    an issue this import can take whole."""
    try:
        raw = yaml.load(path.read_bytes(), Loader=yaml.CSafeLoader)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise Unreadable(f"not valid YAML{line}") from exc
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise Unreadable(f"cannot be read: {exc}") from exc
    if not isinstance(raw, dict):
        raise Unreadable("does not hold an issue (a mapping of fields)")
    by_name = parse_id(path.stem)
    own = parse_id(raw.get("id")) if raw.get("id") is not None else by_name
    if own is None:
        raise Unreadable(f"its id {raw.get('id')!r} is not a positive number")
    if by_name is not None and own != by_name:
        raise Unreadable(f"it says id {own}, but the file is named {path.name}")
    extra: dict[str, Any] = {k: jsonable(v) for k, v in raw.items() if str(k) not in KNOWN}
    found = Found(own, path, {})
    updated = parse_time(raw.get("updated_at"))
    created = parse_time(raw.get("created_at"))
    for name in ("created_at", "updated_at"):
        if raw.get(name) is not None and parse_time(raw.get(name)) is None:
            extra[name] = jsonable(raw[name])  # kept as written; a default stands in
    created = created or updated or stamp(datetime.fromtimestamp(path.stat().st_mtime, UTC))
    updated = max(updated or created, created)
    custom = raw.get("custom_fields")
    custom_fields = jsonable(custom) if isinstance(custom, dict) else {}
    if custom is not None and not isinstance(custom, dict):
        extra["custom_fields"] = jsonable(custom)
    plan = raw.get("plan")
    if isinstance(plan, dict):  # {text, status, …}: the text is the plan
        extra["plan"] = jsonable(plan)
        plan = _first(plan, "text", "body", "content")
    comments = []
    for number, item in enumerate(raw.get("comments") or [], start=1):
        comment = item if isinstance(item, dict) else {"text": item}
        comments.append(
            {
                "id": parse_id(comment.get("id")) or number,
                "author": _text(_first(comment, "author", "name", "by")) or "anonymous",
                "text": _text(_first(comment, "text", "body", "content")),
                "created_at": parse_time(_first(comment, "created_at", "timestamp", "at", "time"))
                or created,
            }
        )
    actions = []
    for item in raw.get("nim_actions") or []:
        if not isinstance(item, dict):
            continue
        actions.append(
            {
                "name": _text(_first(item, "name", "nim", "agent")),
                "action": _text(item.get("action")),
                "at": parse_time(_first(item, "created_at", "timestamp", "at", "time")) or created,
            }
        )
    attachments = _attachments(found, raw.get("attachments"), uploads / str(own), created, extra)
    status = _choice(raw.get("status"), STATUSES, extra, "status") or "open"
    if raw.get("updated_at") is None:  # the last thing that happened to it, then
        history = [c["created_at"] for c in comments] + [a["at"] for a in actions]
        updated = max([updated, *history, *(a["at"] for a in attachments)])
    data: dict[str, Any] = {
        "title": _text(raw.get("title")).strip() or "(no title)",
        "description": _text(raw.get("description")),
        "project": _text(raw.get("project")) or None,
        "category": _choice(raw.get("category"), CATEGORIES, extra, "category") or DEFAULT_CATEGORY,
        "priority": _choice(raw.get("priority"), PRIORITIES, extra, "priority"),
        "status": status,
        "reporter": _text(raw.get("reporter")) or None,
        "custom_fields": custom_fields,
        "plan": _text(plan) or None,
        "created_at": created,
        "updated_at": updated,
        "status_at": parse_time(raw.get("status_at")) or updated,
        "comments": comments,
        "nim_actions": actions,
        "attachments": attachments,
    }
    if extra:
        key = IMPORTED_KEY if IMPORTED_KEY not in custom_fields else f"hydraissue_{IMPORTED_KEY}"
        data["custom_fields"] = {**custom_fields, key: extra}
    data["source"] = f"issues/{path.name}"
    found.data = data
    return found


# -- the import ---------------------------------------------------------------------------


class Skipped(NamedTuple):
    name: str
    reason: str


@dataclass(slots=True)
class ImportResult:
    source: Path
    data_dir: Path
    dry_run: bool
    files: int = 0
    imported: list[int] = field(default_factory=list)
    already: list[int] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)  # unreadable or in the way
    found: int = 0
    missing: list[str] = field(default_factory=list)  # "issue 12: shot.png"
    backup: Path | None = None
    next_id: int = 1
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        verb = "would import" if self.dry_run else "imported"
        out = [
            f"{self.files} issue file(s) in {self.source / 'issues'}: {verb} "
            f"{len(self.imported)}, already imported {len(self.already)}, "
            f"skipped {len(self.skipped)}"
        ]
        out += [f"  skipped {s.name}: {s.reason}" for s in self.skipped]
        out.append(f"attachments: {self.found} found, {len(self.missing)} missing")
        out += [f"  missing {name}" for name in self.missing]
        out += [f"note: {note}" for note in self.notes]
        if self.backup is not None:
            out.append(f"the original files are copied to {self.backup}")
        if self.imported:
            out.append(f"new issues get ids from {self.next_id} on")
        return out


def _folder_size(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _logged(data_dir: Path) -> dict[int, bool]:
    """Issues with a log here, and whether that log begins with an import."""
    folder = data_dir / "events"
    if not folder.is_dir():
        return {}
    out: dict[int, bool] = {}
    for issue_id in scan(folder):
        with (folder / f"{issue_id}{SUFFIX}").open("rb") as handle:
            out[issue_id] = b'"type":"issue.imported"' in handle.readline()
    return out


def _copy_durably(source: Path, target: Path, *, link: bool) -> None:
    """``target`` holds ``source``'s bytes, on disk: a hard link where allowed (upload
    files are never changed in place, only replaced or removed), else a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(source, target)
            return
        except FileExistsError:
            return
        except OSError:
            pass
    temp = target.with_name(f".{target.name}.tmp")
    shutil.copy2(source, temp)
    fd = os.open(temp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, target)


def _backup(source: Path, data_dir: Path) -> Path:
    """Copy the original's issue files, its index and its uploads (hard-linked) to
    ``pre-import-<time>/``, whole before it gets its name."""
    name = f"{BACKUP_PREFIX}{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    final = data_dir / name
    number = 1
    while final.exists():
        number += 1
        final = data_dir / f"{name}-{number}"
    temp = data_dir / f".{final.name}.tmp"
    if temp.exists():
        shutil.rmtree(temp)
    for path in _issue_files(source / "issues"):
        _copy_durably(path, temp / "issues" / path.name, link=False)
    if (source / "issues.yaml").is_file():
        _copy_durably(source / "issues.yaml", temp / "issues.yaml", link=False)
    uploads = source / "uploads"
    for root, _dirs, files in os.walk(uploads) if uploads.is_dir() else ():
        here = Path(root)
        if INCOMING in here.relative_to(uploads).parts:
            continue
        for name in files:
            target = temp / "uploads" / here.relative_to(uploads) / name
            _copy_durably(here / name, target, link=True)
    for root, dirs, _files in os.walk(temp):
        for folder in dirs:
            fsync_dir(Path(root) / folder)
    temp.mkdir(parents=True, exist_ok=True)
    fsync_dir(temp)
    os.rename(temp, final)
    fsync_dir(data_dir)
    return final


def _needed(source: Path, data_dir: Path) -> int:
    issue_bytes = sum(p.stat().st_size for p in _issue_files(source / "issues"))
    index = source / "issues.yaml"
    index_bytes = index.stat().st_size if index.is_file() else 0
    same_device = _existing(source).stat().st_dev == _existing(data_dir).stat().st_dev
    # The backup copies the issue files (the uploads only where they cannot be
    # hard-linked: another disk, twice with their copy into the data dir); the event
    # logs and the rewritten projections take about as much as the issue files each.
    copies = 0 if same_device else 2 * _folder_size(source / "uploads")
    return 3 * issue_bytes + 2 * index_bytes + copies + MARGIN


def _human(size: int) -> str:
    if size < 1 << 20:
        return f"{size / 1024:.1f} KB"
    if size < 1 << 30:
        return f"{size / (1 << 20):.1f} MB"
    return f"{size / (1 << 30):.1f} GB"


async def run_import(
    source: Path,
    data_dir: Path,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
    disk_usage: DiskUsage = shutil.disk_usage,
) -> ImportResult:
    """Import every original issue file of ``source`` into ``data_dir``'s event store.

    The caller holds the data dir lock (not needed for a dry run, which writes nothing).
    Raises ImportRefused when it cannot start; after a refusal nothing was written.
    """
    from events.filestore import FileEventStore
    from projections.rebuild import replay

    result = ImportResult(source, data_dir, dry_run)
    paths = _issue_files(source / "issues")
    result.files = len(paths)
    logged = await asyncio.to_thread(_logged, data_dir)
    readable: list[Found] = []
    claimed: dict[int, str] = {}
    unreadable = False  # a skipped file stays in issues/: replay would remove it
    for done, path in enumerate(paths, start=1):
        name = f"issues/{path.name}"
        try:
            item = await asyncio.to_thread(read_original, path, source / "uploads")
        except Unreadable as exc:
            result.skipped.append(Skipped(name, str(exc)))
            unreadable = True
            continue
        finally:
            if progress is not None:
                progress(done, len(paths))
        if item.issue_id in logged:
            if logged[item.issue_id]:
                result.already.append(item.issue_id)
            else:
                result.skipped.append(
                    Skipped(name, f"issue {item.issue_id} here is not this one (created here)")
                )
            continue
        if item.issue_id in claimed:
            result.skipped.append(
                Skipped(name, f"issue {item.issue_id} is also in {claimed[item.issue_id]}")
            )
            unreadable = True
            continue
        claimed[item.issue_id] = name
        readable.append(item)
    readable.sort(key=lambda f: f.issue_id)
    for item in readable:
        result.found += item.found
        result.missing += [f"issue {item.issue_id}: {name}" for name in item.missing]
    result.imported = [item.issue_id for item in readable]
    result.next_id = max([*logged, *result.imported], default=0) + 1
    # Nothing to import but the original's index: moved aside, so serve may start.
    index_only = not readable and not logged and not unreadable and original_index(source)
    if dry_run or not (readable or index_only):
        return result
    needed = _needed(source, data_dir)
    free = disk_usage(str(_existing(data_dir))).free
    if free < needed:
        raise ImportRefused(
            f"not enough room in {data_dir} for the pre-import copy and the event logs: "
            f"needs about {_human(needed)}, {_human(free)} free; free some space, or "
            "copy the data dir to a bigger disk and import there with --from"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    result.backup = await asyncio.to_thread(_backup, source, data_dir)
    await asyncio.to_thread(
        replace_atomically, data_dir / IMPORTING, f"backup: {result.backup}\n".encode()
    )
    store = FileEventStore(data_dir)
    await store.open()
    try:
        for start in range(0, len(readable), BATCH):
            chunk = readable[start : start + BATCH]
            await asyncio.to_thread(_place, chunk, source, data_dir)
            appends = [
                Append(
                    store.reserve_id(item.issue_id),
                    0,
                    [NewEvent("issue.imported", item.data)],
                    ACTOR,
                )
                for item in chunk
            ]
            outcomes = await asyncio.gather(
                *(store.append(a) for a in appends), return_exceptions=True
            )
            for item, outcome in zip(chunk, outcomes, strict=True):
                if isinstance(outcome, StoreError):
                    raise ImportRefused(
                        f"the event store refused issue {item.issue_id} ({outcome}); "
                        f"issues before it are imported; run `hydraissue import --data-dir "
                        f"{data_dir}` again once fixed"
                    )
                if isinstance(outcome, BaseException):
                    raise outcome
    finally:
        await store.close()
    if unreadable:
        result.notes.append(
            "issues/ and issues.yaml are rebuilt from the events when the server starts; "
            "the skipped files stay where they are: fix them and run import again "
            "(a new issue may take the id of a skipped file above the highest imported)"
        )
    else:
        replayed = await replay(data_dir)  # issues/ and issues.yaml as this build writes them
        result.notes += replayed.notes
    await asyncio.to_thread(_finish, data_dir)
    return result


def _place(chunk: list[Found], source: Path, data_dir: Path) -> None:
    """Attachment files where this build serves them: ``uploads/{id}/{name}`` of the
    data dir (a hard link, or a copy, when the name or the folder differs)."""
    for item in chunk:
        for path, name in item.files:
            target = data_dir / "uploads" / str(item.issue_id) / name
            if target != path:
                _copy_durably(path, target, link=True)
        if item.files:
            fsync_dir(data_dir / "uploads" / str(item.issue_id))


def _finish(data_dir: Path) -> None:
    (data_dir / IMPORTING).unlink(missing_ok=True)
    fsync_dir(data_dir)
