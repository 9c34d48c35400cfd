"""List queries: parsing the query string and the pure parts of filtering and sorting."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hydraissue.errors import Invalid
from hydraissue.model import CATEGORIES, PRIORITIES, STAGES, STATUS_ALIASES, STATUSES
from hydraissue.parse import reject_unknown
from projections.rows import IndexRow

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
SORTS = ("created", "-created", "updated", "-updated", "priority")
UNSET = "unset"  # ?priority=unset finds issues not yet triaged
_PRIORITY_RANK = {"critical": 0, "high": 1, "medium": 2, "low": 3, None: 4}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")
_BOOLEAN = _TRUE + _FALSE


@dataclass(frozen=True, slots=True)
class ListQuery:
    statuses: frozenset[str] | None = None
    categories: frozenset[str] | None = None
    priorities: frozenset[str | None] | None = None
    projects: frozenset[str] | None = None
    words: tuple[str, ...] = ()
    sort: str = "created"
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    nim_action: str | None = None  # issues with this nim action (by ``nim``, if given)
    without_nim_action: str | None = None  # issues without it (by ``nim``, if given)
    nim: str | None = None  # scopes the two above to one agent; alone: its issues

    @property
    def has_nim_filter(self) -> bool:
        return (
            self.nim_action is not None
            or self.without_nim_action is not None
            or self.nim is not None
        )

    def filter_key(self) -> tuple[object, ...]:
        """Everything that decides the result set and its order (not the page)."""
        return (
            self.statuses,
            self.categories,
            self.priorities,
            self.projects,
            self.words,
            self.sort,
            self.nim_action,
            self.without_nim_action,
            self.nim,
        )


def _values(raw: str, field: str, allowed: tuple[str, ...]) -> frozenset[str]:
    values = {v.strip() for v in raw.split(",") if v.strip()}
    bad = sorted(values - set(allowed))
    if bad or not values:
        raise Invalid(
            field,
            f"unknown value {bad[0] if bad else raw!r}; allowed: {', '.join(allowed)}",
            {"field": field, "allowed": list(allowed), "got": bad or [raw]},
        )
    return frozenset(values)


def _int(raw: str, field: str, low: int, high: int) -> int:
    if not (raw.isascii() and raw.isdigit()):  # int() would take "+5", "1_0" and "٣"
        raise Invalid(field, f"must be a whole number, got {raw!r}")
    value = int(raw[:12]) if len(raw) <= 12 else high + 1  # absurd lengths: out of range
    if not low <= value <= high:
        raise Invalid(field, f"must be between {low} and {high}, got {value}")
    return value


PARAMS = (
    "status",
    "stage",
    "category",
    "priority",
    "project",
    "active_only",
    "q",
    "sort",
    "limit",
    "offset",
    "nim_action",
    "without_nim_action",
    "nim",
)


def _name(params: Mapping[str, str], field: str) -> str | None:
    if field not in params:
        return None
    value = params[field].strip()
    if not value or len(value) > 200:
        raise Invalid(field, "must be a name of 1 to 200 characters")
    return value


def parse_list_query(params: Mapping[str, str]) -> ListQuery:
    reject_unknown(params, PARAMS, query=True)
    statuses: set[str] | None = None
    if "status" in params:
        raw = ",".join(
            STATUS_ALIASES.get(s.strip(), s.strip()) for s in params["status"].split(",")
        )
        statuses = set(_values(raw, "status", STATUSES))
    if "stage" in params:
        stages = _values(params["stage"], "stage", tuple(STAGES))
        staged = {s for stage in stages for s in STAGES[stage]}
        statuses = staged if statuses is None else statuses & staged
    active_only = params.get("active_only", "").lower()
    if active_only not in _BOOLEAN:
        raise Invalid("active_only", f"must be true or false, got {params['active_only']!r}")
    if active_only in _TRUE:
        active = set(STAGES["active"])
        statuses = active if statuses is None else statuses & active
    priorities: frozenset[str | None] | None = None
    if "priority" in params:
        chosen = _values(params["priority"], "priority", (*PRIORITIES, UNSET))
        priorities = frozenset(None if p == UNSET else p for p in chosen)
    sort = params.get("sort", "created")
    if sort not in SORTS:
        raise Invalid(
            "sort",
            f"unknown value {sort!r}; allowed: {', '.join(SORTS)}",
            {"field": "sort", "allowed": list(SORTS), "got": sort},
        )
    projects = None
    if params.get("project"):
        projects = frozenset(p.strip() for p in params["project"].split(",") if p.strip())
    return ListQuery(
        statuses=frozenset(statuses) if statuses is not None else None,
        categories=_values(params["category"], "category", CATEGORIES)
        if "category" in params
        else None,
        priorities=priorities,
        projects=projects,
        words=tuple(params.get("q", "").lower().split()),
        sort=sort,
        limit=_int(params.get("limit", str(DEFAULT_LIMIT)), "limit", 1, MAX_LIMIT),
        offset=_int(params.get("offset", "0"), "offset", 0, 10**9),
        nim_action=_name(params, "nim_action"),
        without_nim_action=_name(params, "without_nim_action"),
        nim=_name(params, "nim"),
    )


def _by_priority(row: IndexRow) -> tuple[int, int]:
    return (_PRIORITY_RANK.get(row.priority, 4), row.id)


def _by_updated(row: IndexRow) -> tuple[str, int]:
    return (row.updated_at, row.id)


def _by_created(row: IndexRow) -> int:
    return row.id


def sort_key(sort: str) -> Callable[[IndexRow], Any]:
    """Key function over index rows for a sort name (ties broken by id)."""
    if sort == "priority":
        return _by_priority
    if sort in ("updated", "-updated"):
        return _by_updated
    return _by_created


def row_matches(row: IndexRow, query: ListQuery) -> bool:
    return (
        (query.statuses is None or row.status in query.statuses)
        and (query.categories is None or row.category in query.categories)
        and (query.priorities is None or row.priority in query.priorities)
        and (query.projects is None or row.project in query.projects)
        and (not query.has_nim_filter or nims_match(row.nims, query))
    )


def nims_match(pairs: tuple[tuple[str, str], ...], query: ListQuery) -> bool:
    """The nim filters on one issue's distinct (agent, action) pairs."""
    agent = query.nim

    def has(action: str | None) -> bool:
        return any(
            (agent is None or name == agent) and (action is None or done == action)
            for name, done in pairs
        )

    if query.nim_action is not None and not has(query.nim_action):
        return False
    if query.without_nim_action is not None and has(query.without_nim_action):
        return False
    if agent is not None and query.nim_action is None and query.without_nim_action is None:
        return has(None)
    return True
