"""Figures of the admin stats page that the stats index does not give as they are:
issues created and issues done per week.

Pure functions over the stats index's sorted lists of times (``StatsIndex.created``
and ``StatsIndex.done``, per scope): a week's count is two binary searches, so twelve
weeks cost a few dozen comparisons whatever the number of issues, and no event is read.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

WEEKS = 12


def stamp(moment: datetime) -> str:
    """Our UTC stamp (``2026-03-02T00:00:00.000Z``): it sorts as the stored times do."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class Week:
    start: str  # the Monday the week begins on, YYYY-MM-DD (UTC)
    created: int  # issues created that week (deleted ones are not counted)
    done: int  # issues now done that reached done that week


def week_starts(now: datetime, weeks: int = WEEKS) -> list[datetime]:
    """The Mondays (00:00 UTC) of the last ``weeks`` weeks, the current one last."""
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    monday = today - timedelta(days=today.weekday())
    return [monday - timedelta(weeks=weeks - 1 - i) for i in range(weeks)]


def _per_bucket(values: Sequence[str], bounds: Sequence[str]) -> list[int]:
    """How many of the sorted ``values`` fall in each [bounds[i], bounds[i + 1])."""
    at = [bisect.bisect_left(values, b) for b in bounds]
    return [at[i + 1] - at[i] for i in range(len(bounds) - 1)]


def weekly(
    created: Sequence[str], done: Sequence[str], now: datetime, weeks: int = WEEKS
) -> list[Week]:
    """Created and done per week over the last ``weeks`` weeks (the current one, so
    far, last). ``created`` and ``done`` are sorted stamps, as the stats index keeps them."""
    starts = week_starts(now, weeks)
    bounds = [stamp(s) for s in starts] + [stamp(starts[-1] + timedelta(weeks=1))]
    made = _per_bucket(created, bounds)
    finished = _per_bucket(done, bounds)
    return [
        Week(s.strftime("%Y-%m-%d"), c, d) for s, c, d in zip(starts, made, finished, strict=True)
    ]
