"""On-disk projections: ``issues/{id}.yaml`` for people, ``issues.yaml`` (the index) and
``idempotency.yaml`` (keys of the last 24 h) as snapshots that make start-up fast.

All three are derived from ``events/`` and replaced atomically; any of them can be
deleted and is rebuilt (by the server at start-up, or by ``hydraissue replay``).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import yaml

from events.codec import (
    dump_item,
    dump_mapping_yaml,
    load_block_yaml,
    load_flow_items,
    needs_care,
)
from events.fsio import FsyncMap, fsync_dir, remove_stale_temps, replace_atomically, replace_many
from hydraissue.model import Issue, display_key, issue_from_dict
from projections.keys import KeyRecord
from projections.rows import ROW_COLUMNS, IndexRow

INDEX_FORMAT = 5  # rows as arrays, columns in ROW_COLUMNS order
KEYS_FORMAT = 2
_HEADER = re.compile(rb"^([a-z_]+): *(\d+)$")
_ROWS_PER_CHUNK = 2048  # rows encoded per step, so a big index never holds the GIL long


class ProjectionFiles:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.issues_dir = data_dir / "issues"
        self.index_path = data_dir / "issues.yaml"
        self.keys_path = data_dir / "idempotency.yaml"

    def prepare(self) -> list[Path]:
        """Create the folders; remove temp files a crash left (only safe at start-up)."""
        self.issues_dir.mkdir(parents=True, exist_ok=True)
        return remove_stale_temps(self.issues_dir) + remove_stale_temps(self.data_dir)

    def issue_path(self, issue_id: int) -> Path:
        return self.issues_dir / f"{issue_id}.yaml"

    # -- issue files ---------------------------------------------------------------

    @staticmethod
    def render_issue(issue: Issue) -> bytes:
        body: dict[str, Any] = issue.to_dict()
        body["seq"] = issue.seq
        body["status_at"] = issue.status_at
        header = (
            f"# {display_key(issue.id)}: projection of events/{issue.id}.yaml, "
            "rebuilt by `hydraissue replay`. Edits here are overwritten.\n"
        )
        return header.encode() + dump_mapping_yaml(body)

    def read_issue(self, issue_id: int) -> Issue | None:
        """The issue file, or None when it is missing or unreadable (then fold the log)."""
        try:
            raw = load_block_yaml(self.issue_path(issue_id).read_bytes())
            return issue_from_dict(raw)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, yaml.YAMLError):
            return None

    def write_issues(
        self,
        issues: Sequence[Issue],
        removed: Iterable[int] = (),
        fsyncs: FsyncMap | None = None,
        only_changed: bool = False,
    ) -> None:
        """Replace many issue files (fsyncs spread over ``fsyncs``), remove others.
        ``only_changed``: leave files that already say exactly this (replay)."""
        replace_many(
            [(self.issue_path(i.id), self.render_issue(i)) for i in issues],
            fsyncs=fsyncs,
            only_changed=only_changed,
        )
        unlinked = False
        for issue_id in removed:
            with contextlib.suppress(FileNotFoundError):
                self.issue_path(issue_id).unlink()
                unlinked = True
        if unlinked:
            fsync_dir(self.issues_dir)

    # -- snapshots: the index and the keys -----------------------------------------

    @staticmethod
    def render_rows(rows: Sequence[Any], convert: Callable[[Any], Any]) -> Iterator[bytes]:
        """Flow-line items for many records, encoded and yielded a chunk at a time: the
        file is written as it is encoded, never held whole (orjson reads dataclasses)."""
        for start in range(0, len(rows), _ROWS_PER_CHUNK):
            chunk = [convert(row) for row in rows[start : start + _ROWS_PER_CHUNK]]
            raw = b"".join([b"- " + orjson.dumps(row) + b"\n" for row in chunk])
            if needs_care(raw):  # rare: escapes or float fixes, row by row
                raw = b"".join(dump_item(row) for row in chunk)
            yield raw

    def render_index(self, rows: Sequence[IndexRow], checkpoint: int) -> Iterator[bytes]:
        head = (
            b"# HydraIssue index: one summary row per issue (deleted ones too).\n"
            b"# Derived from events/; rebuilt by `hydraissue replay`.\n"
            + f"# Each row: [{', '.join(ROW_COLUMNS)}]\n".encode()
            + f"format: {INDEX_FORMAT}\ncheckpoint: {checkpoint}\nissues:\n".encode()
        )
        yield head
        yield from self.render_rows(rows, IndexRow.values)

    def render_keys(self, keys: Sequence[KeyRecord], checkpoint: int) -> Iterator[bytes]:
        head = (
            b"# HydraIssue idempotency keys of the last 24 hours. Each key is committed in\n"
            b"# the meta of the event it produced; this is a snapshot for fast start-up.\n"
            + f"format: {KEYS_FORMAT}\ncheckpoint: {checkpoint}\nkeys:\n".encode()
        )
        yield head
        yield from self.render_rows(keys, KeyRecord.to_dict)

    def write_snapshot(
        self, rows: Sequence[IndexRow], keys: Sequence[KeyRecord], checkpoint: int
    ) -> None:
        """The keys first, then the index: start-up trusts the lower of the two checkpoints."""
        replace_atomically(self.keys_path, self.render_keys(keys, checkpoint))
        replace_atomically(self.index_path, self.render_index(rows, checkpoint))

    @staticmethod
    def _read_sectioned(
        path: Path, section: bytes, fmt: int, convert: Callable[[Any], Any] | None = None
    ) -> tuple[int, list[Any]] | None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        marker = b"\n" + section + b":\n"
        body_at = data.find(marker)
        if body_at < 0:
            return None
        header: dict[str, int] = {}
        for line in data[:body_at].splitlines():
            match = _HEADER.match(line)
            if match:
                header[match.group(1).decode()] = int(match.group(2))
        if header.get("format") != fmt or "checkpoint" not in header:
            return None
        try:
            items = load_flow_items(data[body_at + len(marker) :], convert)
        except (ValueError, TypeError, KeyError, AttributeError):
            return None
        return header["checkpoint"], items

    def read_index(self) -> tuple[int, list[IndexRow]] | None:
        """The checkpoint and rows, or None when there is no usable index."""
        # _make raises TypeError on an item that is not one of our rows.
        return self._read_sectioned(self.index_path, b"issues", INDEX_FORMAT, IndexRow.load)

    def read_keys(self) -> tuple[int, list[KeyRecord]] | None:
        loaded = self._read_sectioned(self.keys_path, b"keys", KEYS_FORMAT)
        if loaded is None:
            return None
        try:
            return loaded[0], [KeyRecord.from_dict(item) for item in loaded[1]]
        except (ValueError, TypeError, KeyError, AttributeError):
            return None
