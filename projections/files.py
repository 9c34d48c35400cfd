"""On-disk projections: ``issues/{id}.yaml`` for people, ``issues.yaml`` as the index."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from events.codec import dump_block_yaml, dump_item, load_block_yaml, load_items
from events.fsio import fsync_dir, replace_atomically, replace_many
from hydraissue.model import Issue, display_key, issue_from_dict
from projections.rows import IndexRow

INDEX_FORMAT = 1
_HEADER = re.compile(rb"^([a-z_]+): *(\d+)$")


class ProjectionFiles:
    def __init__(self, data_dir: Path) -> None:
        self.issues_dir = data_dir / "issues"
        self.issues_dir.mkdir(parents=True, exist_ok=True)
        self.index_path = data_dir / "issues.yaml"

    def issue_path(self, issue_id: int) -> Path:
        return self.issues_dir / f"{issue_id}.yaml"

    # -- issue files ---------------------------------------------------------------

    @staticmethod
    def render_issue(issue: Issue) -> bytes:
        body: dict[str, Any] = issue.to_dict()
        body["seq"] = issue.seq
        header = (
            f"# {display_key(issue.id)}: projection of events/{issue.id}.yaml, "
            "rebuilt by `hydraissue replay`. Edits here are overwritten.\n"
        )
        return header.encode() + dump_block_yaml(body)

    def read_issue(self, issue_id: int) -> Issue | None:
        """The issue file, or None when it is missing or unreadable (then replay it)."""
        try:
            raw = load_block_yaml(self.issue_path(issue_id).read_bytes())
            return issue_from_dict(raw)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, yaml.YAMLError):
            return None

    def write_issues(self, issues: Iterable[Issue], removed: Iterable[int] = ()) -> None:
        """Replace many issue files with one filesystem sync (see fsio.replace_many)."""
        replace_many([(self.issue_path(i.id), self.render_issue(i)) for i in issues])
        unlinked = False
        for issue_id in removed:
            with contextlib.suppress(FileNotFoundError):
                self.issue_path(issue_id).unlink()
                unlinked = True
        if unlinked:
            fsync_dir(self.issues_dir)

    # -- the index -----------------------------------------------------------------

    @staticmethod
    def render_index(rows: Iterable[IndexRow], checkpoint: int, next_id: int) -> bytes:
        parts = [
            b"# HydraIssue index: one summary row per issue (deleted ones too).\n",
            b"# Derived from events/; rebuilt by `hydraissue replay`.\n",
            f"format: {INDEX_FORMAT}\ncheckpoint: {checkpoint}\n".encode(),
            f"next_id: {next_id}\nissues:\n".encode(),
        ]
        parts.extend(dump_item(row) for row in rows)  # orjson reads dataclasses
        return b"".join(parts)

    def write_index(self, rows: Iterable[IndexRow], checkpoint: int, next_id: int) -> None:
        replace_atomically(self.index_path, self.render_index(rows, checkpoint, next_id))

    def read_index(self) -> tuple[dict[str, int], list[IndexRow]] | None:
        """Header numbers and rows, or None when there is no usable index."""
        try:
            data = self.index_path.read_bytes()
        except FileNotFoundError:
            return None
        header: dict[str, int] = {}
        body_at = data.find(b"\nissues:\n")
        if body_at < 0:
            return None
        for line in data[:body_at].splitlines():
            match = _HEADER.match(line)
            if match:
                header[match.group(1).decode()] = int(match.group(2))
        if header.get("format") != INDEX_FORMAT:
            return None
        try:
            rows = [IndexRow.from_dict(item) for item in load_items(data[body_at + 9 :])]
        except (ValueError, TypeError, KeyError):
            return None
        return header, rows
