"""The in-memory projection every read is served from.

Index rows for all issues are loaded at start-up (fast); full issues are loaded from
their issue files on first use and warmed in the background, so start-up does not
wait on parsing every issue file. Writes update memory at once and mark files dirty
for the flusher; files are never on the read path after warm-up.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from events.log import EventLog, LogCorrupt
from events.model import Event
from hydraissue.evolve import SequenceGap, fold
from hydraissue.model import Issue
from projections.files import ProjectionFiles
from projections.query import ListQuery, row_matches, sort_key
from projections.rows import IndexRow, row_for

log = logging.getLogger("hydraissue.projections")

_FACETS = ("status", "category", "priority", "project")
RESULT_CACHE = 256  # distinct filters whose sorted ids are kept


@dataclass(slots=True)
class StartupReport:
    """What loading found: how much was current and what had to be repaired."""

    rows: int = 0
    replayed: list[int] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    index_missing: bool = False


def fold_log(event_log: EventLog, issue_id: int) -> tuple[list[Event], Issue | None]:
    """One issue's events and the state they fold to; a sequence gap is a damaged log."""
    events = event_log.read(issue_id)
    try:
        return events, fold(events)
    except SequenceGap as exc:
        raise LogCorrupt(f"events/{issue_id}.yaml: {exc}") from exc


class IssueProjection:
    def __init__(self, data_dir: Path, event_log: EventLog) -> None:
        self.log = event_log
        self.files = ProjectionFiles(data_dir)
        self.rows: dict[int, IndexRow] = {}
        self.checkpoint = 0
        self.next_id = 1
        self._issues: dict[int, Issue] = {}
        self._json: dict[int, bytes] = {}
        self._search: dict[int, str] = {}
        self._live: list[int] = []  # live ids, ascending = creation order
        self._facets: dict[str, dict[str | None, set[int]]] = {f: {} for f in _FACETS}
        self._results: OrderedDict[tuple[object, ...], tuple[int, list[int]]] = OrderedDict()
        self._generation = 0  # bumped by every change of rows: invalidates _results
        self.dirty_issues: set[int] = set()
        self.removed_issues: set[int] = set()
        self.index_dirty = False
        self.on_dirty: Callable[[], None] = lambda: None

    # -- loading -------------------------------------------------------------------

    def load(self) -> StartupReport:
        """Load the index and replay only the issues whose log changed since it was written."""
        report = StartupReport()
        loaded = self.files.read_index()
        rows: dict[int, IndexRow] = {}
        next_id = 1
        if loaded is None:
            report.index_missing = True
        else:
            header, row_list = loaded
            rows = {row.id: row for row in row_list}
            next_id = header.get("next_id", 1)
        sizes = self.log.sizes()
        for issue_id in sorted(set(rows) - set(sizes)):
            report.dropped.append(issue_id)  # a row without a log: the log is the truth
            del rows[issue_id]
        for issue_id, size in sorted(sizes.items()):
            row = rows.get(issue_id)
            if row is not None and row.log_size == size:
                continue
            repair = self.log.repair(issue_id)
            if repair:
                report.repairs.append(repair.describe())
                if repair.kept_size == 0:
                    rows.pop(issue_id, None)
                    continue
            rows[issue_id] = self._replay_one(issue_id)
            report.replayed.append(issue_id)
        for row in rows.values():
            self._add_row(row)
        self.checkpoint = max((row.pos for row in rows.values()), default=0)
        self.next_id = max(next_id, max(sizes, default=0) + 1)
        report.rows = len(rows)
        if report.replayed or report.dropped or report.index_missing:
            self._mark_index()
        return report

    def _replay_one(self, issue_id: int) -> IndexRow:
        events, issue = fold_log(self.log, issue_id)
        if issue is None:
            raise ValueError(f"events/{issue_id}.yaml holds no events")
        size = self.log.path(issue_id).stat().st_size
        if issue.deleted:
            self.removed_issues.add(issue_id)
        else:
            self._issues[issue_id] = issue
            self.dirty_issues.add(issue_id)
        return row_for(issue, events[-1].pos, size)

    def warm(self, ids: Iterable[int]) -> None:
        """Load full issues for ``ids`` now, so later reads touch no file."""
        for issue_id in ids:
            self.issue(issue_id)

    def unloaded(self) -> list[int]:
        return [i for i in self._live if i not in self._issues]

    # -- reads ---------------------------------------------------------------------

    def issue(self, issue_id: int) -> Issue | None:
        """The live issue, or None (never existed, or deleted)."""
        found = self._issues.get(issue_id)
        if found is not None:
            return found
        row = self.rows.get(issue_id)
        if row is None or row.deleted:
            return None
        issue = self.files.read_issue(issue_id)
        if issue is None or issue.seq != row.seq:
            # Missing or behind its log (e.g. a crash between commit and flush).
            _, folded = fold_log(self.log, issue_id)
            if folded is None:
                return None
            issue = folded
            self._mark_issue(issue_id)
        self._issues[issue_id] = issue
        return issue

    def issue_json(self, issue: Issue) -> bytes:
        cached = self._json.get(issue.id)
        if cached is None:
            # A copy: orjson's own buffer is several times larger than its content.
            cached = memoryview(orjson.dumps(issue.to_dict())).tobytes()
            self._json[issue.id] = cached
        return cached

    def count(self) -> int:
        return len(self._live)

    def known_projects(self, limit: int = 50) -> list[str]:
        """The most used project names (bounded: anyone can name a project on /report)."""
        used = [(len(ids), p) for p, ids in self._facets["project"].items() if p and ids]
        return sorted(p for _, p in sorted(used, reverse=True)[:limit])

    def query_json(self, query: ListQuery) -> tuple[int, bytes]:
        """Total matches and the requested page as a JSON array, from memory.

        The sorted ids of a filter are cached until the next write, so paging through
        a result and agents polling the same stage cost a slice, not a scan; the page
        is joined from each issue's cached JSON.
        """
        ids = self._matching_ids(query)
        cached = self._json.get
        parts = [
            cached(i) or self.issue_json(self._must(i))
            for i in ids[query.offset : query.offset + query.limit]
        ]
        return len(ids), b"[" + b",".join(parts) + b"]"

    def _matching_ids(self, query: ListQuery) -> list[int]:
        key = query.filter_key()
        cached = self._results.get(key)
        if cached is not None and cached[0] == self._generation:
            self._results.move_to_end(key)
            return cached[1]
        candidates = self._candidates(query)
        if candidates is None and not query.words and query.sort == "created":
            ids = self._live
        else:
            pool = self._live if candidates is None else candidates
            rows = [r for r in map(self.rows.__getitem__, pool) if row_matches(r, query)]
            if query.words:
                rows = [r for r in rows if self._has_words(r.id, query.words)]
            rows.sort(key=sort_key(query.sort), reverse=query.sort.startswith("-"))
            ids = [r.id for r in rows]
        self._results[key] = (self._generation, ids)
        if len(self._results) > RESULT_CACHE:
            self._results.popitem(last=False)
        return ids

    def _candidates(self, query: ListQuery) -> set[int] | None:
        """The smallest facet set that bounds the result, or None for 'everything'."""
        best: set[int] | None = None
        for facet, wanted in (
            ("status", query.statuses),
            ("category", query.categories),
            ("priority", query.priorities),
            ("project", query.projects),
        ):
            if wanted is None:
                continue
            index = self._facets[facet]
            union: set[int] = set().union(*(index.get(v, ()) for v in wanted))
            if best is None or len(union) < len(best):
                best = union
        return best

    def _has_words(self, issue_id: int, words: tuple[str, ...]) -> bool:
        text = self._search.get(issue_id)
        if text is None:
            issue = self._must(issue_id)
            text = self._search[issue_id] = f"{issue.title}\n{issue.description}".lower()
        return all(word in text for word in words)

    def _must(self, issue_id: int) -> Issue:
        issue = self.issue(issue_id)
        if issue is None:  # pragma: no cover - rows and issues are kept together
            raise KeyError(issue_id)
        return issue

    # -- writes --------------------------------------------------------------------

    def apply(self, events: list[Event], issue: Issue, log_size: int) -> None:
        """Record the state that ``events`` led to (already folded by the service)."""
        last = events[-1]
        old = self.rows.get(issue.id)
        if old is not None:
            self._remove_row(old)
        row = row_for(issue, last.pos, log_size)
        self._add_row(row)
        self._json.pop(issue.id, None)
        self._search.pop(issue.id, None)
        if issue.deleted:
            self._issues.pop(issue.id, None)
            self.removed_issues.add(issue.id)
            self.dirty_issues.discard(issue.id)
            self._mark_index()
        else:
            self._issues[issue.id] = issue
            self._mark_issue(issue.id)
        self.checkpoint = max(self.checkpoint, last.pos)
        self.next_id = max(self.next_id, issue.id + 1)

    def _add_row(self, row: IndexRow) -> None:
        self._generation += 1
        self.rows[row.id] = row
        if row.deleted:
            return
        index = bisect.bisect_left(self._live, row.id)
        if index == len(self._live) or self._live[index] != row.id:
            self._live.insert(index, row.id)
        for facet in _FACETS:
            self._facets[facet].setdefault(getattr(row, facet), set()).add(row.id)

    def _remove_row(self, row: IndexRow) -> None:
        if row.deleted:
            return
        index = bisect.bisect_left(self._live, row.id)
        if index < len(self._live) and self._live[index] == row.id:
            del self._live[index]
        for facet in _FACETS:
            self._facets[facet].get(getattr(row, facet), set()).discard(row.id)

    def _mark_issue(self, issue_id: int) -> None:
        self.dirty_issues.add(issue_id)
        self._mark_index()

    def _mark_index(self) -> None:
        self.index_dirty = True
        self.on_dirty()

    # -- flushing (snapshots taken on the event loop, written by a worker thread) --

    def take_issue_files(self) -> tuple[list[Issue], list[int]]:
        issues = [self._issues[i] for i in sorted(self.dirty_issues) if i in self._issues]
        removed = sorted(self.removed_issues)
        self.dirty_issues.clear()
        self.removed_issues.clear()
        return issues, removed

    def take_index(self) -> IndexSnapshot | None:
        if not self.index_dirty:
            return None
        self.index_dirty = False
        return IndexSnapshot(list(self.rows.values()), self.checkpoint, self.next_id)

    def write_files(
        self, issues: list[Issue], removed: list[int], index: IndexSnapshot | None
    ) -> float:
        """Issue files first, then the index: an index never points past its issue files.

        Returns the seconds the index took, so the flusher can space index writes.
        """
        self.files.write_issues(issues, removed)
        if index is None:
            return 0.0
        started = time.monotonic()
        self.files.write_index(index.rows, index.checkpoint, index.next_id)
        return time.monotonic() - started


@dataclass(frozen=True, slots=True)
class IndexSnapshot:
    rows: list[IndexRow]
    checkpoint: int
    next_id: int
