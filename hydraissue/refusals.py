"""Moves the lifecycle refused (409): not events (nothing changed), but the quality
report lists reopen-like attempts, so the service keeps a log of them in
``audit/refused.yaml`` (appended; the last 10,000 kept in memory).
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path
from typing import Any

from events.codec import dump_item, load_items

KEEP = 10_000


class RefusalLog:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "audit" / "refused.yaml"
        self.entries: deque[dict[str, Any]] = deque(maxlen=KEEP)

    def load(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        for line in data.splitlines():
            try:
                self.entries.extend(i for i in load_items(line) if isinstance(i, dict))
            except ValueError:
                continue

    def record(self, entry: dict[str, Any]) -> None:
        """Worker thread. Not fsynced: a lost line costs a line of a report, nothing more."""
        self.entries.append(entry)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, dump_item(entry))
        finally:
            os.close(fd)
