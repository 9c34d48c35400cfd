"""Attachment files: streamed to a temp file, moved into ``uploads/{id}/`` once whole.

Names on disk are generated (the person's file name is kept only as metadata), so a
name can never climb out of its folder or collide. The content type we serve with is
decided here from the bytes, not from what the client claimed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import mimetypes
import os
import re
import secrets
import shutil
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

import aiofiles

from events.fsio import fsync_dir
from hydraissue.commands import StoredFile
from hydraissue.errors import StorageUnavailable, TooLarge

SAFE_NAME = re.compile(r"^[a-f0-9]{16}(\.[a-z0-9]{1,10})?$")
_EXT = re.compile(r"\.([A-Za-z0-9]{1,10})$")
INCOMING = ".incoming"

# (magic prefix, content type). Only these are ever served inline.
RASTER_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
# Types we are willing to name when serving as a download; anything else is octet-stream.
DOWNLOAD_TYPES = frozenset(
    {
        "application/pdf",
        "application/zip",
        "application/gzip",
        "application/x-tar",
        "application/json",
        "text/plain",
        "text/csv",
        "video/mp4",
        "audio/mpeg",
    }
)


@dataclass(frozen=True, slots=True)
class Limits:
    max_file_bytes: int
    max_files: int
    max_request_bytes: int


@dataclass(frozen=True, slots=True)
class Received:
    """A whole file in the incoming folder, not yet part of any issue."""

    temp: Path
    name: str
    size: int
    content_type: str
    sha256: str = ""  # of the bytes: part of an idempotent upload's fingerprint


def refused(exc: OSError, what: str) -> StorageUnavailable:
    """The disk refused a file write: the same 503 a refused event append gives."""
    return StorageUnavailable(
        f"{what} could not be written; nothing was saved, retry later",
        {"reason": exc.strerror or str(exc)},
    )


def sniff(head: bytes, original_name: str) -> str:
    for magic, content_type in RASTER_MAGIC:
        if head.startswith(magic):
            return content_type
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    guessed = mimetypes.guess_type(original_name)[0] or "application/octet-stream"
    if guessed in INLINE_TYPES:  # claims to be an image but is not one
        return "application/octet-stream"
    return guessed if guessed in DOWNLOAD_TYPES else "application/octet-stream"


def clean_original_name(name: str) -> str:
    """The person's file name for display: no path, no control characters, bounded."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip() or "file"
    return base[:200]


def generated_name(original: str) -> str:
    match = _EXT.search(original)
    ext = f".{match.group(1).lower()}" if match else ""
    return f"{secrets.token_hex(8)}{ext}"


class Budget:
    """Counts files and bytes across one request."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.files = 0
        self.bytes = 0

    def start_file(self) -> None:
        self.files += 1
        if self.files > self.limits.max_files:
            raise TooLarge(
                f"too many files: at most {self.limits.max_files} per report",
                {"field": "attachments", "limit": self.limits.max_files},
            )

    def add(self, size_of_file: int, chunk: int) -> None:
        self.bytes += chunk
        if size_of_file > self.limits.max_file_bytes:
            raise TooLarge(
                f"a file is larger than {human(self.limits.max_file_bytes)}",
                {"field": "attachments", "limit": self.limits.max_file_bytes},
            )
        if self.bytes > self.limits.max_request_bytes:
            raise TooLarge(
                f"attachments total more than {human(self.limits.max_request_bytes)}",
                {"field": "attachments", "limit": self.limits.max_request_bytes},
            )


def human(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.3g} MB"
    if size >= 1024:
        return f"{size / 1024:.3g} KB"
    return f"{size} bytes"


class UploadStore:
    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "uploads"
        self.incoming = self.root / INCOMING
        self.incoming.mkdir(parents=True, exist_ok=True)

    def folder(self, issue_id: int) -> Path:
        return self.root / str(issue_id)

    def path(self, issue_id: int, filename: str) -> Path | None:
        if not SAFE_NAME.match(filename):
            return None
        return self.folder(issue_id) / filename

    async def receive(
        self, chunks: AsyncIterator[bytes], original_name: str, budget: Budget
    ) -> Received:
        """Stream one file to the incoming folder; on any failure nothing is left behind."""
        budget.start_file()
        temp = self.incoming / f"{secrets.token_hex(12)}.part"
        size = 0
        head = b""
        digest = hashlib.sha256()
        try:
            async with aiofiles.open(temp, "wb") as handle:
                async for chunk in chunks:
                    size += len(chunk)
                    budget.add(size, len(chunk))
                    if len(head) < 16:
                        head += chunk[: 16 - len(head)]
                    digest.update(chunk)
                    await handle.write(chunk)
                await handle.flush()
                await asyncio.to_thread(os.fsync, handle.fileno())
        except OSError as exc:
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)
            raise refused(exc, "the file") from exc
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)
            raise
        name = clean_original_name(original_name)
        return Received(
            temp=temp,
            name=name,
            size=size,
            content_type=sniff(head, name),
            sha256=digest.hexdigest(),
        )

    def discard(self, received: Iterable[Received]) -> None:
        for item in received:
            with contextlib.suppress(OSError):
                item.temp.unlink(missing_ok=True)

    def place(self, issue_id: int, files: Iterable[Received]) -> list[StoredFile]:
        """Move received files into the issue's folder under generated names, durably,
        before the event that records them commits. On failure nothing is left placed.
        """
        placed: list[StoredFile] = []
        folder = self.folder(issue_id)
        created = False
        try:
            if not folder.exists():
                folder.mkdir(parents=True)
                created = True
                fsync_dir(self.root)
            for received in files:
                filename = generated_name(received.name)
                os.replace(received.temp, folder / filename)
                placed.append(
                    StoredFile(received.name, filename, received.size, received.content_type)
                )
            fsync_dir(folder)
            fsync_dir(self.incoming)
        except OSError as exc:
            self.unplace(issue_id, [p.filename for p in placed], remove_folder=created)
            raise refused(exc, "the attachment") from exc
        return placed

    def unplace(self, issue_id: int, filenames: Iterable[str], *, remove_folder: bool) -> None:
        """Remove placed files whose event did not commit (a file no event names)."""
        for filename in filenames:
            path = self.path(issue_id, filename)
            if path is not None:
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)
        if remove_folder:
            with contextlib.suppress(OSError):
                self.folder(issue_id).rmdir()

    def remove_folders_without_issue(self, known: set[int]) -> list[Path]:
        """Folders of ids with no event log: a report whose commit a crash cut off."""
        removed: list[Path] = []
        for entry in sorted(self.root.iterdir()):
            if entry.is_dir() and entry.name.isdigit() and int(entry.name) not in known:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
        if removed:
            fsync_dir(self.root)
        return removed

    def remove_issue(self, issue_id: int) -> bool:
        folder = self.folder(issue_id)
        if not folder.exists():
            return False
        shutil.rmtree(folder)
        fsync_dir(self.root)
        return True

    def orphans(self, attached: dict[int, set[str]]) -> list[Path]:
        """What belongs to no issue: folders of issues that do not exist (or no longer),
        files in a live issue's folder that no event names, and stale temp files.

        ``attached`` maps every live issue id to the file names its events record.
        """
        found: list[Path] = []
        for entry in sorted(self.root.iterdir()):
            if not entry.is_dir() or entry.name == INCOMING:
                continue
            names = attached.get(int(entry.name)) if entry.name.isdigit() else None
            if names is None:
                found.append(entry)
            else:
                found.extend(f for f in sorted(entry.iterdir()) if f.name not in names)
        found.extend(sorted(self.incoming.iterdir()))
        return found

    def remove(self, paths: Iterable[Path]) -> None:
        for path in paths:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    def clear_incoming(self) -> int:
        """Temp files left by a crash mid-upload (only safe while no request runs)."""
        removed = 0
        for entry in self.incoming.iterdir():
            entry.unlink(missing_ok=True)
            removed += 1
        return removed
