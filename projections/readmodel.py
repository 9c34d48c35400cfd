"""The in-memory read model every read is served from. One job: apply committed events
and answer queries.

It is the store's first subscriber, applied inside the commit (``EventStore.listen``)
before any append returns, so a response always shows its own write. Index rows of all
issues are in memory from start-up; full issues are handed in by whoever loads them
(start-up catch-up, the warm-up, or the ``loader`` for an issue not loaded yet). The
read model itself does no I/O beyond calling that loader, and writes no file.

Applying is idempotent per issue: an event whose seq the state already has is skipped,
so the same event may be applied twice (a replayed tail) without harm. An event that
does not follow the state it finds (a gap) marks the issue ``needs_fold``: whoever owns
I/O then folds its log and hands the state in with ``put``.
"""

from __future__ import annotations

import bisect
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import cast

from events.model import Event
from hydraissue.evolve import evolve
from hydraissue.model import Issue
from projections.compact import CompactIssues, issue_json
from projections.keys import KeyRecord, record_for
from projections.query import ListQuery, row_matches, sort_key
from projections.rows import IndexRow, row_for
from projections.stats import StatsIndex, counted

Triage = tuple[str, str, str | None]  # (status, category, priority)
RESULT_CACHE = 256  # distinct filters whose sorted ids are kept
PRUNE_EVERY = 600.0  # seconds between sweeps of expired idempotency records

Loader = Callable[[int], Issue | None]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the index writer persists: rows and keys as of (at least) ``position``."""

    rows: list[IndexRow]
    keys: list[KeyRecord]


class IssueReadModel:
    def __init__(self, loader: Loader | None = None) -> None:
        self.rows: dict[int, IndexRow] = {}
        self.position = 0  # the highest position applied
        self.unavailable: dict[int, str] = {}  # damaged logs: issue id -> reason
        self.needs_fold: set[int] = set()
        self.keys: dict[str, KeyRecord] = {}
        self._loader: Loader = loader or (lambda _id: None)
        self._full = CompactIssues()  # full issues, as their JSON
        self._search: dict[int, str] = {}
        self._live: list[int] = []  # live ids, ascending = creation order
        # The facets that bound a list query's candidates. Status, category and priority
        # share one column per combination (at most a few hundred), so an issue is in
        # two, not four. A column is a sorted array of ids: 8 bytes a member where a set
        # cost 40 to 65 (tools/bench.py's memory per stored issue), and a query's union
        # of columns is built faster from arrays than from sets.
        self._triage: dict[Triage, array[int]] = {}
        self._projects: dict[str | None, array[int]] = {}
        self._results: OrderedDict[tuple[object, ...], tuple[int, list[int]]] = OrderedDict()
        # (agent, action), (None, action), (agent, None) -> issues: the nim filters
        self._nims: dict[tuple[str | None, str | None], array[int]] = {}  # columns too
        self.stats = StatsIndex()
        self._generation = 0  # bumped by every change of rows: invalidates _results
        # Rows whose kept JSON is not what a list sends (files: the web adds their URLs;
        # deleted): a list page without any of them is one join (``plain_jsons``).
        self._dressed: set[int] = set()
        self._pruned = time.time()

    # -- loading -------------------------------------------------------------------

    def set_loader(self, loader: Loader) -> None:
        self._loader = loader

    def load(self, rows: Iterable[IndexRow], keys: Iterable[KeyRecord], position: int) -> None:
        """Start from a snapshot (the index): rows of every issue, full issues not yet.

        Built in bulk (one sort, no per-row bookkeeping): 100,000 rows in a few tenths
        of a second, inside the start-up budget.
        """
        for row in rows:
            self.rows[row.id] = row
        self._dressed = {row.id for row in self.rows.values() if row.attachments or row.deleted}
        live = [row for row in self.rows.values() if not row.deleted]
        self._live = sorted(row.id for row in live)
        triage: dict[Triage, list[int]] = {}
        projects: dict[str | None, list[int]] = {}
        by_pair: dict[tuple[str, str], list[int]] = {}
        for row in live:
            triage_key, project = _facets(row)
            triage.setdefault(triage_key, []).append(row.id)
            projects.setdefault(project, []).append(row.id)
            for pair in row.nims:
                by_pair.setdefault(pair, []).append(row.id)
        nims: dict[tuple[str | None, str | None], list[int]] = {}
        for pair, ids in by_pair.items():  # a few dozen (agent, action) pairs
            for key in nim_keys((pair,)):
                nims.setdefault(key, []).extend(ids)
        self._triage = {key: array("q", sorted(ids)) for key, ids in triage.items()}
        self._projects = {key: array("q", sorted(ids)) for key, ids in projects.items()}
        self._nims = {key: array("q", sorted(set(ids))) for key, ids in nims.items()}
        self.stats.load(live)
        self._generation += 1
        now = time.time()
        self.keys = {k.key: k for k in keys if k.expires > now}
        self.position = position

    def put(self, issue: Issue) -> None:
        """Hand in an issue's whole current state (folded from its log, or loaded)."""
        self.needs_fold.discard(issue.id)
        self.unavailable.pop(issue.id, None)
        self._store(issue)

    def remember(self, record: KeyRecord) -> None:
        self.keys[record.key] = record

    def forget(self, issue_id: int) -> None:
        """Drop an issue that has no log (a row in an old index): the log is the truth."""
        row = self.rows.pop(issue_id, None)
        self._dressed.discard(issue_id)
        if row is not None:
            self._remove_row(row)
            self._generation += 1
        self._full.pop(issue_id)
        self._search.pop(issue_id, None)

    def mark_unavailable(self, issue_id: int, reason: str) -> None:
        self.forget(issue_id)
        self.unavailable[issue_id] = reason

    def warm(self, ids: Iterable[int]) -> None:
        """Load full issues for ``ids`` now, so later reads call no loader."""
        for issue_id in ids:
            self.issue(issue_id)

    def offer(self, issue_id: int, issue: Issue | None) -> None:
        """A full issue read in the background: kept if it is what the row describes and
        nothing loaded the issue meanwhile; a missing or stale file means fold the log."""
        if issue_id in self._full or issue_id in self.needs_fold:
            return
        row = self.rows.get(issue_id)
        if row is None or row.deleted:
            return
        if issue is not None and issue.seq == row.seq and issue.id == issue_id:
            self._full.put_json(issue_id, issue_json(issue))
        else:
            self.needs_fold.add(issue_id)

    def unloaded(self) -> list[int]:
        return [i for i in self._live if i not in self._full]

    def loaded(self, issue_id: int) -> Issue | None:
        """The full issue if it is in memory (no loader call), live or deleted."""
        row = self.rows.get(issue_id)
        if row is None:
            return None
        return self._full.get(issue_id, row.seq, row.deleted, row.status_at)

    def json(self, issue_id: int) -> bytes | None:
        """A live issue's JSON as the API shows it (without URLs), if it is in memory."""
        row = self.rows.get(issue_id)
        if row is None or row.deleted:
            return None
        return self._full.json(issue_id)

    def jsons(self, ids: Sequence[int]) -> list[bytes | None]:
        """The JSON of many issues a query gave (live ones), None where not in memory."""
        return self._full.jsons(ids)

    def plain_json(self, issue_id: int) -> bytes | None:
        """``plain_jsons`` of one issue: its kept JSON when that is what the API sends."""
        return None if issue_id in self._dressed else self._full.json(issue_id)

    def live_rows(self, ids: Iterable[int]) -> list[IndexRow]:
        """The index rows of those ids that are live (a query's page, for a list)."""
        return [row for row in map(self.rows.get, ids) if row is not None and not row.deleted]

    def plain_jsons(self, ids: Sequence[int]) -> list[bytes] | None:
        """The kept JSON of every id, when each is live, in memory and without files
        (what a list page sends as it is); else None. A set test and a C-level map: no
        call per issue."""
        if not self._dressed.isdisjoint(ids):
            return None
        raws = self._full.jsons(ids)
        if None in raws:
            return None
        return cast(list[bytes], raws)

    # -- applying ------------------------------------------------------------------

    def apply(self, events: Sequence[Event]) -> None:
        """Apply committed events in position order (the store's commit listener)."""
        for event in events:
            self.apply_one(event)

    def apply_one(self, event: Event) -> None:
        issue_id = event.issue_id
        if event.pos > self.position:
            self.position = event.pos
        if issue_id in self.needs_fold or issue_id in self.unavailable:
            return
        state = self._current(issue_id)
        seq = state.seq if state is not None else 0
        if event.seq <= seq:
            return  # already in the state
        if event.seq != seq + 1:
            self.needs_fold.add(issue_id)
            self._full.pop(issue_id)
            return
        new = evolve(state, event)
        self._store(new)
        if event.meta:
            record = record_for(event, new)
            if record is not None:
                self.keys[record.key] = record
                self._prune_keys()

    def _current(self, issue_id: int) -> Issue | None:
        row = self.rows.get(issue_id)
        if row is None:
            return None
        state = self._full.get(issue_id, row.seq, row.deleted, row.status_at)
        if state is not None:
            return state
        loaded = self._loader(issue_id)
        if loaded is not None and loaded.seq == row.seq:
            self._full.put(loaded)
            return loaded
        # The row knows this issue but there is no matching full state to build on.
        self.needs_fold.add(issue_id)
        return None

    def _store(self, issue: Issue) -> None:
        old = self.rows.get(issue.id)
        row = row_for(issue)
        if old != row:
            self._replace_row(old, row)
        self._search.pop(issue.id, None)
        self._full.put(issue)

    def _prune_keys(self) -> None:
        now = time.time()
        if now - self._pruned > PRUNE_EVERY:
            self._pruned = now
            self.keys = {k: r for k, r in self.keys.items() if r.expires > now}

    def _replace_row(self, old: IndexRow | None, row: IndexRow) -> None:
        """Only the indexes whose keys changed are touched: most events change a row's
        seq and times alone, and moving an id within a column of 100,000 ids moves
        800 KB."""
        self._generation += 1
        self.rows[row.id] = row
        if row.attachments or row.deleted:
            self._dressed.add(row.id)
        elif old is not None and (old.attachments or old.deleted):
            self._dressed.discard(row.id)
        if old is not None and not old.deleted and not row.deleted:
            if _facets(old) != _facets(row):
                self._index_facets(old, add=False)
                self._index_facets(row, add=True)
            if old.nims != row.nims:
                self._index_nims(old, add=False)
                self._index_nims(row, add=True)
            if counted(old) != counted(row):
                self.stats.remove(old)
                self.stats.add(row)
            return
        if old is not None:
            self._remove_row(old)
        if not row.deleted:
            insert_sorted(self._live, row.id)
            self._index_facets(row, add=True)
            self._index_nims(row, add=True)
            self.stats.add(row)

    def _remove_row(self, row: IndexRow) -> None:
        if row.deleted:
            return
        remove_sorted(self._live, row.id)
        self._index_facets(row, add=False)
        self._index_nims(row, add=False)
        self.stats.remove(row)

    def _index_facets(self, row: IndexRow, *, add: bool) -> None:
        triage, project = _facets(row)
        if add:
            insert_sorted(self._triage.setdefault(triage, array("q")), row.id)
            insert_sorted(self._projects.setdefault(project, array("q")), row.id)
        else:
            remove_sorted(self._triage.get(triage, _NO_IDS), row.id)
            remove_sorted(self._projects.get(project, _NO_IDS), row.id)

    def _index_nims(self, row: IndexRow, *, add: bool) -> None:
        nims = self._nims
        for key in nim_keys(row.nims):
            if add:
                insert_sorted(nims.setdefault(key, array("q")), row.id)
            else:
                remove_sorted(nims.get(key, _NO_IDS), row.id)

    # -- reads ---------------------------------------------------------------------

    def issue(self, issue_id: int) -> Issue | None:
        """The live issue, or None (never existed, deleted, or waiting to be folded)."""
        row = self.rows.get(issue_id)
        if row is None or row.deleted:
            return None
        if issue_id in self.needs_fold:
            return None
        return self._current(issue_id)

    def key(self, key: str) -> KeyRecord | None:
        record = self.keys.get(key)
        if record is not None and record.expires <= time.time():
            del self.keys[key]
            return None
        return record

    def count(self) -> int:
        return len(self._live)

    def rows_with_status(self, statuses: Iterable[str]) -> list[IndexRow]:
        """The live rows in these statuses, from the triage facet (not a scan)."""
        wanted = set(statuses)
        ids = set().union(*(ids for key, ids in self._triage.items() if key[0] in wanted))
        return [self.rows[i] for i in sorted(ids) if i in self.rows]

    def known_projects(self, limit: int = 50) -> list[str]:
        """The most used project names (bounded: anyone can name a project on /report)."""
        used = [(len(ids), p) for p, ids in self._projects.items() if p and ids]
        return sorted(p for _, p in sorted(used, reverse=True)[:limit])

    def query(self, query: ListQuery) -> tuple[int, list[int]]:
        """Total matches and the ids of the requested page, from memory.

        The sorted ids of a filter are cached until the next change of any row, so
        paging through a result and agents polling the same stage cost a slice.
        """
        ids = self._matching_ids(query)
        return len(ids), ids[query.offset : query.offset + query.limit]

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
        """A set of ids that bounds the result, or None for 'everything': the smallest
        facet match, narrowed by the nim filters with set operations (in C)."""
        best = self._facet_candidates(query)
        if query.nim_action is not None or (
            query.nim is not None and query.without_nim_action is None
        ):
            having = self._nims.get((query.nim, query.nim_action), _NO_IDS)
            best = set(having) if best is None else _narrowed(best, having, keep=True)
        if query.without_nim_action is not None:
            having = self._nims.get((query.nim, query.without_nim_action), _NO_IDS)
            best = _narrowed(set(self._live) if best is None else best, having, keep=False)
        return best

    def _facet_candidates(self, query: ListQuery) -> set[int] | None:
        """The smaller of the triage match and the project match (None: no filter)."""
        best: set[int] | None = None
        statuses, categories, priorities = query.statuses, query.categories, query.priorities
        if statuses is not None or categories is not None or priorities is not None:
            best = set().union(
                *(
                    ids
                    for (status, category, priority), ids in self._triage.items()
                    if (statuses is None or status in statuses)
                    and (categories is None or category in categories)
                    and (priorities is None or priority in priorities)
                )
            )
        if query.projects is not None:
            index = self._projects
            union: set[int] = set().union(*(index.get(p, ()) for p in query.projects))
            if best is None or len(union) < len(best):
                best = union
        return best

    def _has_words(self, issue_id: int, words: tuple[str, ...]) -> bool:
        text = self._search.get(issue_id)
        if text is None:
            issue = self.issue(issue_id)
            if issue is None:
                return False
            text = self._search[issue_id] = f"{issue.title}\n{issue.description}".lower()
        return all(word in text for word in words)

    def snapshot(self) -> Snapshot:
        """Rows and live keys now, for the index writer (taken on the event loop)."""
        now = time.time()
        return Snapshot(
            list(self.rows.values()), [k for k in self.keys.values() if k.expires > now]
        )


_NO_IDS: array[int] = array("q")  # what a missing column reads as (never written to)


def insert_sorted(ids: list[int] | array[int], issue_id: int) -> None:
    """Into ascending ids, once; a new issue (the usual case) goes at the end."""
    if not ids or ids[-1] < issue_id:
        ids.append(issue_id)
        return
    index = bisect.bisect_left(ids, issue_id)
    if ids[index] != issue_id:  # index < len(ids): the last id is not below issue_id
        ids.insert(index, issue_id)


def remove_sorted(ids: list[int] | array[int], issue_id: int) -> None:
    index = _index_of(ids, issue_id)
    if index is not None:
        del ids[index]


def _index_of(ids: list[int] | array[int], issue_id: int) -> int | None:
    """Where ``issue_id`` is in ascending ids, or None (a binary search)."""
    index = bisect.bisect_left(ids, issue_id)
    return index if index < len(ids) and ids[index] == issue_id else None


def nim_keys(pairs: Iterable[tuple[str, str]]) -> Iterator[tuple[str | None, str | None]]:
    """The nim filters' keys an issue with these (agent, action) pairs is under:
    (agent, action), (None, action) and (agent, None) for each (a key may come twice)."""
    for agent, action in pairs:
        yield (agent, action)
        yield (None, action)
        yield (agent, None)


def _facets(row: IndexRow) -> tuple[Triage, str | None]:
    """A row's keys in the facet columns: its triage combination and its project."""
    return (row.status, row.category, row.priority), row.project


def _narrowed(ids: set[int], column: array[int], *, keep: bool) -> set[int]:
    """The ids that are in the column (``keep``) or are not: a binary search each when
    they are few beside it, else one pass over the column (which boxes every id)."""
    if len(ids) * 32 < len(column):
        return {i for i in ids if (_index_of(column, i) is not None) is keep}
    return ids.intersection(column) if keep else ids.difference(column)
