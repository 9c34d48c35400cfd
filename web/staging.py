"""Files a reporter already sent, kept for the next try of the same form.

When the server refuses a submission (a missing title, one file over a limit, the rate
limit), the files that did arrive are moved to ``uploads/.staged/{token}/`` under the
form's one-time token and listed on the re-shown form ("kept: screen.png (remove)"),
so nobody picks them again. A later submit with the token uses them; they are removed
when the report is created, when the reporter removes them, or after an hour.
Altogether at most ``MAX_STAGED_BYTES`` are kept: past that, files are not kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from hydraissue.uploads import Received

TTL = 3600.0  # seconds a kept file waits for the reporter's next try
MAX_STAGED_BYTES = 512 * 1024 * 1024
TOKEN = re.compile(r"^[A-Za-z0-9_-]{20,64}$")
STAGED = ".staged"
MANIFEST = "kept.json"


def new_token() -> str:
    return secrets.token_urlsafe(18)


def valid_token(raw: str | None) -> str | None:
    """The form's token when it has the shape we hand out, else None (not a token)."""
    return raw if raw is not None and TOKEN.match(raw) else None


@dataclass(frozen=True, slots=True)
class Kept:
    id: str
    name: str
    size: int
    content_type: str
    sha256: str
    file: str  # the file's name inside the token's folder

    def received(self, folder: Path) -> Received:
        return Received(folder / self.file, self.name, self.size, self.content_type, self.sha256)


class Staging:
    def __init__(self, uploads_root: Path) -> None:
        self.root = uploads_root / STAGED

    def _folder(self, token: str) -> Path:
        return self.root / token

    def kept(self, token: str) -> list[Kept]:
        """The files kept under a token (none once they are an hour old)."""
        folder = self._folder(token)
        try:
            if time.time() - folder.stat().st_mtime > TTL:
                self.clear(token)
                return []
            raw = json.loads((folder / MANIFEST).read_text())
            found = [Kept(**item) for item in raw]
        except (OSError, ValueError, TypeError):
            return []
        return [k for k in found if (folder / k.file).is_file()]

    def received(self, token: str, kept: Sequence[Kept]) -> list[Received]:
        folder = self._folder(token)
        return [k.received(folder) for k in kept]

    def keep(self, token: str, files: Sequence[Received]) -> list[Kept]:
        """Move received files under the token; returns everything kept there now.
        Files that cannot be kept (over the overall allowance, a disk error) are
        discarded: the reporter picks them again, as before."""
        self.sweep()
        current = self.kept(token)
        if not files:
            return current
        folder = self._folder(token)
        added: list[Kept] = []
        budget = MAX_STAGED_BYTES - self._used()
        for item in files:
            if item.size > budget:
                with contextlib.suppress(OSError):
                    item.temp.unlink(missing_ok=True)
                continue
            try:
                folder.mkdir(parents=True, exist_ok=True)
                ident = secrets.token_hex(4)
                os.replace(item.temp, folder / f"{ident}.part")
            except OSError:
                with contextlib.suppress(OSError):
                    item.temp.unlink(missing_ok=True)
                continue
            budget -= item.size
            added.append(
                Kept(ident, item.name, item.size, item.content_type, item.sha256, f"{ident}.part")
            )
        if added:
            self._write(token, [*current, *added])
        return [*current, *added]

    def remove(self, token: str, ids: Iterable[str]) -> list[Kept]:
        """Drop the named kept files; returns what is left."""
        gone = set(ids)
        current = self.kept(token)
        if not gone & {k.id for k in current}:
            return current
        folder = self._folder(token)
        for item in current:
            if item.id in gone:
                with contextlib.suppress(OSError):
                    (folder / item.file).unlink(missing_ok=True)
        left = [k for k in current if k.id not in gone]
        self._write(token, left)
        return left

    def clear(self, token: str) -> None:
        shutil.rmtree(self._folder(token), ignore_errors=True)

    def sweep(self) -> None:
        """Remove tokens' folders older than an hour."""
        try:
            entries = list(self.root.iterdir())
        except OSError:
            return
        now = time.time()
        for entry in entries:
            with contextlib.suppress(OSError):
                if now - entry.stat().st_mtime > TTL:
                    shutil.rmtree(entry, ignore_errors=True)

    def _used(self) -> int:
        total = 0
        with contextlib.suppress(OSError):
            for path in self.root.glob("*/*.part"):
                with contextlib.suppress(OSError):
                    total += path.stat().st_size
        return total

    def _write(self, token: str, kept: Sequence[Kept]) -> None:
        folder = self._folder(token)
        if not kept:
            self.clear(token)
            return
        temp = folder / f".{MANIFEST}.tmp"
        with contextlib.suppress(OSError):
            temp.write_text(json.dumps([asdict(k) for k in kept]))
            os.replace(temp, folder / MANIFEST)
