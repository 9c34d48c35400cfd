"""Replay and verify: rebuild every projection from the logs, or check they agree.

Both run with the server stopped (they take the data dir lock). Replay writes issue
files like the flusher does (all temp files, one filesystem sync, renames), so each
file is replaced atomically without one fsync per file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from events.log import EventLog, LogCorrupt
from events.model import Event
from hydraissue.model import Issue
from projections.files import ProjectionFiles
from projections.rows import IndexRow, row_for
from projections.store import fold_log

Progress = Callable[[int, int], None]


@dataclass(slots=True)
class Folded:
    issue: Issue
    events: list[Event]
    size: int

    @property
    def row(self) -> IndexRow:
        return row_for(self.issue, self.events[-1].pos, self.size)


@dataclass(slots=True)
class ReplayResult:
    issues: int = 0
    deleted: int = 0
    events: int = 0
    repairs: list[str] = field(default_factory=list)


def _fold_all(
    log: EventLog, progress: Progress | None, repair: bool
) -> tuple[dict[int, Folded], list[str], list[str]]:
    folded: dict[int, Folded] = {}
    problems: list[str] = []
    repairs: list[str] = []
    ids = sorted(log.sizes())
    for done, issue_id in enumerate(ids, start=1):
        if repair:
            fixed = log.repair(issue_id)
            if fixed:
                repairs.append(fixed.describe())
                if fixed.kept_size == 0:
                    continue
        try:
            events, issue = fold_log(log, issue_id)
        except LogCorrupt as exc:
            problems.append(str(exc))
            continue
        if issue is None or not events:
            problems.append(f"events/{issue_id}.yaml: holds no events")
            continue
        size = log.path(issue_id).stat().st_size
        folded[issue_id] = Folded(issue, events, size)
        if progress:
            progress(done, len(ids))
    return folded, problems, repairs


def replay(data_dir: Path, progress: Progress | None = None) -> ReplayResult:
    log = EventLog(data_dir)
    files = ProjectionFiles(data_dir)
    folded, problems, repairs = _fold_all(log, progress, repair=True)
    if problems:
        raise LogCorrupt("; ".join(problems))
    live = [item.issue for item in folded.values() if not item.issue.deleted]
    keep = {files.issue_path(issue.id).name for issue in live}
    stale = [
        int(entry.name.removesuffix(".yaml"))
        for entry in os.scandir(files.issues_dir)
        if entry.name.endswith(".yaml")
        and entry.name not in keep
        and entry.name.removesuffix(".yaml").isdigit()
    ]
    files.write_issues(live, removed=stale)
    rows = [item.row for item in folded.values()]
    checkpoint = max((row.pos for row in rows), default=0)
    files.write_index(rows, checkpoint, max(folded, default=0) + 1)
    return ReplayResult(
        issues=sum(1 for f in folded.values() if not f.issue.deleted),
        deleted=sum(1 for f in folded.values() if f.issue.deleted),
        events=sum(len(f.events) for f in folded.values()),
        repairs=repairs,
    )


def verify(data_dir: Path, progress: Progress | None = None) -> list[str]:
    """Every disagreement between logs and projections, as readable lines."""
    log = EventLog(data_dir)
    files = ProjectionFiles(data_dir)
    folded, problems, _ = _fold_all(log, progress, repair=False)
    logged = set(log.sizes())  # every issue with events, readable or not
    seen_positions: dict[int, int] = {}
    for issue_id, item in folded.items():
        name = f"events/{issue_id}.yaml"
        if not log.path(issue_id).read_bytes().endswith(b"\n"):
            problems.append(f"{name}: torn last event; start the server or run replay to cut it")
        if item.events[0].type != "issue.created":
            problems.append(f"{name}: first event is {item.events[0].type}, not issue.created")
        last = 0
        for event in item.events:
            if event.issue_id != issue_id:
                problems.append(f"{name}: event seq {event.seq} belongs to issue {event.issue_id}")
            if event.pos <= last:
                problems.append(f"{name}: position {event.pos} does not increase")
            last = event.pos
            other = seen_positions.setdefault(event.pos, issue_id)
            if other != issue_id:
                problems.append(f"{name}: position {event.pos} is also used by issue {other}")
        on_disk = files.read_issue(issue_id)
        if item.issue.deleted:
            if files.issue_path(issue_id).exists():
                problems.append(f"issues/{issue_id}.yaml: exists but the issue was deleted")
        elif on_disk is None:
            problems.append(f"issues/{issue_id}.yaml: missing or unreadable")
        elif on_disk != item.issue:
            problems.append(f"issues/{issue_id}.yaml: differs from its event log")
    for entry in os.scandir(files.issues_dir):
        stem = entry.name.removesuffix(".yaml")
        if entry.name.endswith(".yaml") and stem.isdigit() and int(stem) not in logged:
            problems.append(f"issues/{entry.name}: has no event log")
    index = files.read_index()
    if index is None:
        problems.append("issues.yaml: missing or unreadable")
    else:
        header, rows = index
        by_id = {row.id: row for row in rows}
        for issue_id, item in folded.items():
            row = by_id.pop(issue_id, None)
            if row is None:
                problems.append(f"issues.yaml: no row for issue {issue_id}")
            elif row != item.row:
                problems.append(f"issues.yaml: row for issue {issue_id} differs from its log")
        problems.extend(
            f"issues.yaml: row for issue {i} has no event log"
            for i in sorted(by_id)
            if i not in logged  # a damaged log was reported above
        )
        checkpoint = max((f.events[-1].pos for f in folded.values()), default=0)
        if header.get("checkpoint") != checkpoint:
            problems.append(
                f"issues.yaml: checkpoint {header.get('checkpoint')} "
                f"but the logs end at {checkpoint}"
            )
    return problems
