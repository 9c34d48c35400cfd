"""Aggregate statistics (``GET /api/v1/stats``), kept up to date as rows change.

Counters per status, category, priority and project, and sorted lists of the times
that the windows and ages are read from (created, entered done, created of the active
ones), for everything and per project. A call costs O(statuses + categories + projects)
and a few binary searches, never a scan of the issues.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from hydraissue.model import CATEGORIES, PRIORITIES, STATUSES, TERMINAL_STATUSES
from projections.rows import IndexRow

Scope = str | None  # None: every issue; a name: that project's
Facets = tuple[str, str, str | None, str | None]  # status, category, priority, project
UNSET = "unset"


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class StatsIndex:
    def __init__(self) -> None:
        self.counts: Counter[tuple[Scope, str, str | None]] = Counter()
        self.created: dict[Scope, list[str]] = {}
        self.done: dict[Scope, list[str]] = {}  # when the issues now done got there
        self.active_created: dict[Scope, list[str]] = {}

    def status_counts(self) -> dict[str, int]:
        """Live issues per status (what the admin list shows across its top)."""
        return {s: self.counts.get((None, "status", s), 0) for s in STATUSES}

    def project_names(self) -> list[str]:
        """Projects with live issues, sorted (the admin list's project filter)."""
        return sorted(name for name, created in self.created.items() if name and created)

    @staticmethod
    def _scopes(row: IndexRow) -> tuple[Scope, ...]:
        return (None, row.project) if row.project else (None,)

    def load(self, rows: Iterable[IndexRow]) -> None:
        """From every live row at once: rows grouped by project, counted per combination
        of facets, one sort per list (100,000 rows in about 0.1 s; counting row by row
        took 0.4 s of start-up)."""
        self.counts, self.created, self.done, self.active_created = Counter(), {}, {}, {}
        by_scope: dict[Scope, list[IndexRow]] = {None: []}
        for row in rows:
            if not row.deleted:
                by_scope[None].append(row)
                if row.project:
                    by_scope.setdefault(row.project, []).append(row)
        for scope, group in by_scope.items():
            combos = Counter([_facets(row) for row in group])
            for facets, count in combos.items():
                self._count(scope, facets, count)
            self.created[scope] = sorted([row.created_at for row in group])
            done = sorted([row.status_at for row in group if row.status == "done"])
            if done:
                self.done[scope] = done
            active = [row.created_at for row in group if row.status not in TERMINAL_STATUSES]
            if active:
                self.active_created[scope] = sorted(active)

    def _count(self, scope: Scope, facets: Facets, step: int) -> None:
        status, category, priority, project = facets
        counts = self.counts
        counts[(scope, "status", status)] += step
        counts[(scope, "category", category)] += step
        counts[(scope, "priority", priority)] += step
        if scope is None:
            counts[(None, "project", project)] += step

    def add(self, row: IndexRow) -> None:
        if row.deleted:
            return
        for scope in self._scopes(row):
            self._count(scope, _facets(row), 1)
            bisect.insort(self.created.setdefault(scope, []), row.created_at)
            if row.status == "done":
                bisect.insort(self.done.setdefault(scope, []), row.status_at)
            if row.status not in TERMINAL_STATUSES:
                bisect.insort(self.active_created.setdefault(scope, []), row.created_at)

    def remove(self, row: IndexRow) -> None:
        if row.deleted:
            return
        for scope in self._scopes(row):
            self._count(scope, _facets(row), -1)
            _drop(self.created.get(scope), row.created_at)
            if row.status == "done":
                _drop(self.done.get(scope), row.status_at)
            if row.status not in TERMINAL_STATUSES:
                _drop(self.active_created.get(scope), row.created_at)

    def stats(self, project: str | None = None, now: datetime | None = None) -> dict[str, Any]:
        now = now or datetime.now(UTC)
        scope: Scope = project
        counts = self.counts

        def count(facet: str, value: str | None) -> int:
            return counts.get((scope, facet, value), 0)

        by_status = {s: count("status", s) for s in STATUSES}
        by_category = {c: count("category", c) for c in CATEGORIES}
        by_priority = {p: count("priority", p) for p in PRIORITIES}
        by_priority[UNSET] = count("priority", None)
        created = self.created.get(scope, [])
        done = self.done.get(scope, [])
        body: dict[str, Any] = {
            "total": len(created),
            "active": sum(v for s, v in by_status.items() if s not in TERMINAL_STATUSES),
            "by_status": by_status,
            "by_category": by_category,
            "by_priority": by_priority,
        }
        if project is None:
            body["by_project"] = {
                str(name): value
                for (sc, facet, name), value in sorted(counts.items(), key=lambda i: str(i[0][2]))
                if sc is None and facet == "project" and name is not None and value > 0
            }
        else:
            body["project"] = project
        for days in (7, 30):
            since = _stamp(now - timedelta(days=days))
            body[f"created_last_{days}_days"] = len(created) - bisect.bisect_left(created, since)
            body[f"done_last_{days}_days"] = len(done) - bisect.bisect_left(done, since)
        body["open_age_days"] = _ages(self.active_created.get(scope, []), now)
        body["plans"] = {
            "proposed": by_status["proposed"],
            "accepted": by_status["accepted"],
            "rejected": by_status["rejected"],
        }
        return body


def _drop(values: list[str] | None, value: str) -> None:
    if not values:
        return
    index = bisect.bisect_left(values, value)
    if index < len(values) and values[index] == value:
        del values[index]


def _ages(created: list[str], now: datetime) -> dict[str, float | None]:
    """Median and 90th percentile age in days of issues created at these (sorted) times:
    the oldest are first, so the p90 age is near the start of the list."""
    if not created:
        return {"median": None, "p90": None, "count": 0}

    def age(stamp: str) -> float:
        try:
            moment = datetime.fromisoformat(stamp)
        except ValueError:
            return 0.0
        return round((now - moment).total_seconds() / 86400, 2)

    n = len(created)
    median = created[(n - 1) // 2] if n % 2 else None
    median_age = (
        age(median) if median is not None else (age(created[n // 2 - 1]) + age(created[n // 2])) / 2
    )
    p90 = created[max(0, int(n * 0.1 + 0.5) - 1)]  # 90% of the issues are younger than it
    return {"median": round(median_age, 2), "p90": age(p90), "count": n}


def _facets(row: IndexRow) -> Facets:
    return (row.status, row.category, row.priority, row.project)


def counted(row: IndexRow) -> tuple[object, ...]:
    """What the statistics read of a row: a change that leaves it alone leaves them."""
    return (*_facets(row), row.created_at, row.status_at)
