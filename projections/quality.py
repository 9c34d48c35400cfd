"""The quality report: how the agent pipeline did in a window of time, computed from
the event history (not from current state alone: a plan rejected and then accepted
counts both decisions).

``build`` takes the full histories of the issues touched in the window (events before
the window too, for the time an issue spent in a stage), the refused moves the service
logged, and returns a plain dict; ``markdown`` and ``csv`` render it for people and
spreadsheets.
"""

from __future__ import annotations

import csv as csv_module
import io
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from events.model import Event
from hydraissue.evolve import fold
from hydraissue.model import Issue, display_key
from projections.nims import nim_of
from projections.rows import IndexRow

STAGES = ("open", "groomed", "planning", "proposed", "accepted", "implementing", "done")
AGENT_STAGES = frozenset({"groomed", "planning", "proposed", "implementing"})
STUCK_IN = ("planning", "proposed", "implementing")
COUNTED = ("groomed", "proposed", "accepted", "rejected", "implementing", "done", "closed")


def parse_time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def hours(delta: timedelta) -> float:
    return round(delta.total_seconds() / 3600, 2)


def _summary(values: Sequence[float]) -> dict[str, float | int | None]:
    if not values:
        return {"count": 0, "median_hours": None, "p90_hours": None}
    ordered = sorted(values)
    n = len(ordered)
    median = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
    p90 = ordered[min(n - 1, max(0, int(n * 0.9 + 0.5) - 1))]
    return {"count": n, "median_hours": round(median, 2), "p90_hours": round(p90, 2)}


@dataclass(slots=True)
class Move:
    """One status change in an issue's history."""

    at: str
    before: str | None
    after: str
    agent: str | None  # the agent that made it, when it said so
    actor: str  # "api", "admin", "public", "system"


def moves(events: Sequence[Event]) -> list[Move]:
    out: list[Move] = []
    status: str | None = None
    for event in events:
        if event.type == "issue.created":
            out.append(Move(event.at, None, "open", nim_of(event), event.actor.kind))
            status = "open"
        elif event.type == "issue.imported":
            # The history before the import is not in the log: no move, just the status.
            imported = event.data.get("status")
            status = imported if isinstance(imported, str) else "open"
        elif event.type == "issue.updated":
            changes = event.data.get("changes")
            if isinstance(changes, dict) and isinstance(changes.get("status"), str):
                new = changes["status"]
                if new != status:
                    out.append(Move(event.at, status, new, nim_of(event), event.actor.kind))
                    status = new
    return out


def _proposer(events: Sequence[Event], before: str) -> str:
    """Who proposed the plan decided at ``before``: the agent of the move to proposed,
    else the last agent with a nim action on the issue before that move."""
    last_nim: str | None = None
    proposer: str | None = None
    for event in events:
        if event.at > before:
            break
        if event.type == "nim_action.recorded":
            last_nim = nim_of(event)
        elif event.type == "issue.updated":
            changes = event.data.get("changes")
            if isinstance(changes, dict) and changes.get("status") == "proposed":
                proposer = nim_of(event) or last_nim
    return proposer or "unknown"


@dataclass(slots=True)
class Report:
    since: str
    until: str
    project: str | None
    counts: dict[str, int] = field(default_factory=dict)
    acceptance: dict[str, Any] = field(default_factory=dict)
    times: dict[str, Any] = field(default_factory=dict)
    stuck: list[dict[str, Any]] = field(default_factory=list)
    done_without_plan: list[dict[str, Any]] = field(default_factory=list)
    done_without_nim_action: list[dict[str, Any]] = field(default_factory=list)
    moved_by_hand: list[dict[str, Any]] = field(default_factory=list)
    duplicate_nim_actions: list[dict[str, Any]] = field(default_factory=list)
    refused_moves: list[dict[str, Any]] = field(default_factory=list)
    issues: list[dict[str, Any]] = field(default_factory=list)  # one row per touched issue

    def to_dict(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "until": self.until,
            "project": self.project,
            "counts": self.counts,
            "plan_acceptance": self.acceptance,
            "stage_times": self.times,
            "stuck": self.stuck,
            "done_without_plan": self.done_without_plan,
            "done_without_nim_action": self.done_without_nim_action,
            "moved_by_hand_past_agent_stage": self.moved_by_hand,
            "duplicate_nim_actions": self.duplicate_nim_actions,
            "refused_moves": self.refused_moves,
        }


def _ref(issue: Issue | IndexRow) -> dict[str, Any]:
    return {"id": issue.id, "key": display_key(issue.id), "title": issue.title}


def build(
    since: str,
    until: str,
    histories: Mapping[int, Sequence[Event]],
    current: Iterable[IndexRow],
    refused: Iterable[Mapping[str, Any]],
    *,
    stuck_days: int,
    now: str,
    project: str | None = None,
) -> Report:
    """The report for [since, until] (RFC 3339 strings, UTC).

    ``histories``: every event of each issue touched in the window; ``current``: the
    index rows now in a ``STUCK_IN`` status (stuck issues may have no event in it).
    """
    report = Report(since, until, project)

    def inside(at: str) -> bool:
        return since <= at <= until

    counts: Counter[str] = Counter()
    decisions: Counter[str] = Counter()
    by_agent: dict[str, Counter[str]] = {}
    to_groomed: list[float] = []
    to_decision: list[float] = []
    to_done: list[float] = []
    for _, events in sorted(histories.items()):
        if not events:
            continue
        state = fold(events)
        if state is None or (project is not None and state.project != project):
            continue
        history = moves(events)
        created_at = state.created_at  # the event's time, or the original's (an import)
        if inside(created_at) and events[0].type == "issue.created":
            counts["created"] += 1
        first: dict[str, str] = {}
        last_entered: dict[str, str] = {}
        for move in history:
            first.setdefault(move.after, move.at)
            if not inside(move.at):
                last_entered[move.after] = move.at
                continue
            counts[move.after] += 1 if move.after in COUNTED else 0
            if move.after == "groomed" and first["groomed"] == move.at:
                to_groomed.append(hours(parse_time(move.at) - parse_time(created_at)))
            if move.after in ("accepted", "rejected"):
                decisions[move.after] += 1
                agent = _proposer(events, move.at)
                by_agent.setdefault(agent, Counter())[move.after] += 1
                proposed_at = last_entered.get("proposed")
                if proposed_at is not None:
                    to_decision.append(hours(parse_time(move.at) - parse_time(proposed_at)))
            if move.after == "done":
                accepted_at = last_entered.get("accepted")
                if accepted_at is not None:
                    to_done.append(hours(parse_time(move.at) - parse_time(accepted_at)))
                done_state = fold([e for e in events if e.at <= move.at])
                if done_state is not None and not (done_state.plan or "").strip():
                    report.done_without_plan.append(_ref(state))
                if done_state is not None and not done_state.nim_actions:
                    report.done_without_nim_action.append(_ref(state))
            skipped = _skipped(move)
            if skipped and move.agent is None:
                report.moved_by_hand.append(
                    {
                        **_ref(state),
                        "from": move.before,
                        "to": move.after,
                        "skipped": skipped,
                        "actor": move.actor,
                        "at": move.at,
                    }
                )
            last_entered[move.after] = move.at
        pairs = Counter((a.name, a.action) for a in state.nim_actions)
        recent = {(a.name, a.action) for a in state.nim_actions if inside(a.at)}
        for (agent, action), times in sorted(pairs.items()):
            if times > 1 and (agent, action) in recent:
                report.duplicate_nim_actions.append(
                    {**_ref(state), "nim": agent, "action": action, "times": times}
                )
        report.issues.append(
            {
                **_ref(state),
                "project": state.project,
                "status": state.status,
                "created_at": created_at,
                **{f"{stage}_at": first.get(stage) for stage in COUNTED},
                "nim_actions": len(state.nim_actions),
            }
        )
    report.counts = {"created": counts["created"], **{s: counts[s] for s in COUNTED}}
    total = decisions["accepted"] + decisions["rejected"]
    report.acceptance = {
        "accepted": decisions["accepted"],
        "rejected": decisions["rejected"],
        "rate": round(decisions["accepted"] / total, 3) if total else None,
        "by_agent": {
            agent: {
                "accepted": c["accepted"],
                "rejected": c["rejected"],
                "rate": round(c["accepted"] / (c["accepted"] + c["rejected"]), 3),
            }
            for agent, c in sorted(by_agent.items())
        },
    }
    report.times = {
        "open_to_groomed": _summary(to_groomed),
        "proposed_to_decision": _summary(to_decision),
        "accepted_to_done": _summary(to_done),
    }
    limit = (parse_time(now) - timedelta(days=stuck_days)).isoformat().replace("+00:00", "Z")
    for issue in sorted(current, key=lambda i: i.id):
        if issue.deleted or (project is not None and issue.project != project):
            continue
        if issue.status in STUCK_IN and issue.status_at and issue.status_at < limit:
            days = round((parse_time(now) - parse_time(issue.status_at)).total_seconds() / 86400, 1)
            report.stuck.append(
                {**_ref(issue), "status": issue.status, "since": issue.status_at, "days": days}
            )
    report.refused_moves = [dict(r) for r in refused if inside(str(r.get("at", "")))]
    return report


def _skipped(move: Move) -> list[str]:
    """Agent stages a forward move jumped over (open -> accepted skips three)."""
    if move.before not in STAGES or move.after not in STAGES:
        return []
    start, end = STAGES.index(move.before), STAGES.index(move.after)
    return [s for s in STAGES[start + 1 : end] if s in AGENT_STAGES]


# -- renderings -------------------------------------------------------------------------


def _hours(value: Any) -> str:
    return "–" if value is None else f"{value:g} h"


def markdown(report: Report) -> str:
    """A report a person can paste into a chat."""
    scope = f" (project {report.project})" if report.project else ""
    lines = [f"# HydraIssue quality report{scope}", "", f"{report.since} – {report.until}", ""]
    lines += ["| | count |", "|---|---:|"]
    lines += [f"| {name} | {value} |" for name, value in report.counts.items()]
    rate = report.acceptance["rate"]
    lines += ["", "## Plans", ""]
    lines.append(
        f"Accepted {report.acceptance['accepted']}, rejected {report.acceptance['rejected']}"
        + (f": acceptance rate {rate:.0%}." if rate is not None else ".")
    )
    for agent, c in report.acceptance["by_agent"].items():
        lines.append(
            f"- {agent}: {c['accepted']} accepted, {c['rejected']} rejected ({c['rate']:.0%})"
        )
    lines += ["", "## Time in stages", "", "| | issues | median | p90 |", "|---|---:|---:|---:|"]
    for name, s in report.times.items():
        label = name.replace("_", " ")
        lines.append(
            f"| {label} | {s['count']} | {_hours(s['median_hours'])} | {_hours(s['p90_hours'])} |"
        )

    def section(title: str, items: Sequence[Mapping[str, Any]], detail: Any) -> None:
        lines.extend(["", f"## {title} ({len(items)})", ""])
        if not items:
            lines.append("None.")
        lines.extend(f"- {i['key']}: {i['title']}{detail(i)}" for i in items)

    section("Stuck", report.stuck, lambda i: f" — {i['status']} for {i['days']:g} days")
    section("Done without a plan", report.done_without_plan, lambda i: "")
    section("Done without any nim action", report.done_without_nim_action, lambda i: "")
    section(
        "Moved by hand past an agent's stage",
        report.moved_by_hand,
        lambda i: f" — {i['from']} → {i['to']} (skipped {', '.join(i['skipped'])})",
    )
    section(
        "Duplicate nim actions",
        report.duplicate_nim_actions,
        lambda i: f" — {i['nim']} {i['action']} ×{i['times']}",
    )
    lines.extend(["", f"## Refused moves (409) ({len(report.refused_moves)})", ""])
    if not report.refused_moves:
        lines.append("None.")
    for r in report.refused_moves:
        lines.append(
            f"- {display_key(int(r['issue_id']))}: {r['current']} → {r['requested']} at {r['at']}"
        )
    return "\n".join(lines) + "\n"


CSV_COLUMNS = (
    "key",
    "title",
    "project",
    "status",
    "created_at",
    *(f"{stage}_at" for stage in COUNTED),
    "nim_actions",
)


def csv(report: Report) -> str:
    """One row per issue touched in the window, with when it reached each stage."""
    out = io.StringIO()
    writer = csv_module.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in report.issues:
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in CSV_COLUMNS])
    return out.getvalue()
