"""Build a large, realistic data dir through the real storage code.

    python tools/seed_data.py DIR --issues 10000

Every event goes through the same code the service's write path uses: commands are
built as the API parser would build them, ``hydraissue.decide.decide`` turns them into
events, they are stamped with seq / global pos / UTC time / actor as the event store
stamps them, folded with ``hydraissue.evolve.fold`` (so every status transition is one
the lifecycle allows), and encoded with ``events.logs.encode`` into one log per issue
(written and fsynced in parallel threads: a year of history cannot go through a live
store's commit path in reasonable time). Opening ``events.filestore.FileEventStore``
then builds its position index from those logs, and ``projections.rebuild.replay``
builds the issue files and the index.

The history is one global timeline: issues are created over about a year, each gets
~10 events (comments, nim actions, triage, status moves along the lifecycle, now and
then a deletion), and global positions follow time across all issues.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import os
import random
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from events.filestore import FileEventStore
from events.fsio import fsync_dir
from events.logs import encode
from events.model import Actor, Event, NewEvent
from hydraissue.commands import (
    AddComment,
    Command,
    CreateIssue,
    DeleteIssue,
    RecordNimAction,
    UpdateIssue,
)
from hydraissue.datadir import DataDirLock
from hydraissue.decide import decide, gate
from hydraissue.evolve import fold
from hydraissue.model import CATEGORIES, PRIORITIES, Issue
from projections.rebuild import ReplayResult, replay

# -- vocabulary ------------------------------------------------------------------------

PROJECTS = (
    "hydra-core",
    "nebula",
    "nim-runner",
    "web-console",
    "release-tools",
    "docs",
    "intake",
    "scheduler",
    "storage",
    "auth-gateway",
)
AREAS = (
    "Login page",
    "Issue list",
    "Webhook delivery",
    "Release pipeline",
    "Search",
    "Event log",
    "Admin dashboard",
    "Report form",
    "Upload handler",
    "Nim scheduler",
    "API client",
    "CLI",
    "Replay",
    "Index loader",
    "Notification e-mails",
    "Markdown renderer",
    "Rate limiter",
    "Health check",
    "Config loader",
    "Metrics exporter",
)
SYMPTOMS = (
    "times out",
    "returns 500",
    "shows stale data",
    "loses the last comment",
    "is very slow",
    "crashes",
    "ignores the priority filter",
    "double-submits",
    "renders raw HTML",
    "leaks memory",
    "rejects valid input",
    "hangs forever",
    "sorts in the wrong order",
    "drops unicode characters",
    "reports the wrong count",
)
TRIGGERS = (
    "with more than 1000 issues",
    "after a restart",
    "on a slow network",
    "when the token expires",
    "with an empty project",
    "under concurrent writes",
    "for deleted issues",
    "on mobile Safari",
    "when the disk is nearly full",
    "with non-ASCII titles",
    "after upgrading to 0.9",
    "behind a reverse proxy",
    "during a release",
    "with a 5 MB attachment",
    "when paging past offset 500",
)
FEATURES = (
    "Add CSV export to",
    "Support dark mode in",
    "Allow bulk edits in",
    "Show keyboard shortcuts in",
    "Add a retry button to",
    "Cache responses of",
    "Add audit trail to",
    "Make configurable:",
)
SENTENCES = (
    "Steps to reproduce: open the page, apply a filter and wait a few seconds.",
    "This started after the last deploy and affects every user on the team.",
    "The server log shows a warning about a slow request right before it happens.",
    "Expected the list to update at once; instead it keeps the old values until reload.",
    "It happens roughly one time in five, more often when several agents write at once.",
    "We worked around it by restarting the service, which is not a real fix.",
    "Attaching the request id and timestamps from our monitoring for reference.",
    "Nebula flagged this during grooming because it blocks the release checklist.",
    "The same call works with curl, so the client library may be involved too.",
    "Ünïcödé titles like «Größe» or 日本語 seem to make it worse, not sure why.",
    "Priority is high for us because customers see it on the public report form.",
    "A regression test should cover the empty case and the very large case.",
    "Docs mention the behaviour but do not say what happens with deleted issues.",
    "Memory grows steadily over a day; after a restart it is back to normal.",
    "Happy to help test a fix on our staging instance before it ships.",
    "The fix probably belongs in the projection code rather than the handler.",
    "Note that the index file was rebuilt by replay shortly before this.",
    "Latency jumps from a few milliseconds to several seconds when this hits.",
)
COMMENTS = (
    "Confirmed on the latest build.",
    "Could not reproduce locally; can you share the data dir size?",
    "This looks like a duplicate of an older report, linking it here.",
    "Fixed in the next release, please verify.",
    "Still happening for us after the upgrade.",
    "Adding a test case that shows the failure.",
    "Lowering priority: there is a simple workaround.",
    "Raising priority: two more teams hit this today.",
    "The plan looks good to me, go ahead.",
    "Needs a decision from the owner before we start.",
    "Logs attached; the timestamps line up with the deploy.",
    "Verified the fix on staging, closing soon.",
)
PEOPLE = (
    "alice",
    "bob",
    "carol",
    "dmitri",
    "eve",
    "farah",
    "gustav",
    "hiro",
    "ines",
    "jamal",
    "kasia",
    "li.wei",
    "release-bot",
    "ci",
)
NIMS = ("nebula", "quasar", "pulsar", "comet", "nova", "aurora")
NIM_ACTIONS = ("groomed", "triaged", "planned", "reviewed", "implemented", "verified")
OSES = ("linux", "macos", "windows", "freebsd")
SEVERITIES = ("minor", "major", "blocker", "cosmetic")

# The lifecycle a status may follow, one step at a time (decide enforces the rules).
PATH_DONE = ("groomed", "planning", "proposed", "accepted", "implementing", "done")
PATH_REJECTED = ("groomed", "planning", "proposed", "rejected")
FINAL_WEIGHTS: tuple[tuple[str, int], ...] = (
    ("open", 28),
    ("groomed", 12),
    ("planning", 6),
    ("proposed", 6),
    ("accepted", 6),
    ("rejected", 4),
    ("implementing", 8),
    ("done", 20),
    ("closed", 10),
)
CATEGORY_WEIGHTS = (35, 25, 18, 7, 15)  # bug, feature, improvement, question, unclassified
DELETE_RATE = 0.005
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
SPAN = timedelta(days=360)


# -- generation ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """One future mutation of one issue, decided only when the timeline reaches it."""

    kind: str  # create | status | plan | priority | category | comment | nim | delete
    value: str = ""


def stamp(at: datetime) -> str:
    """Same shape as ``hydraissue.clock.utc_now``."""
    return at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def description(rng: random.Random, target: int = 300) -> str:
    parts: list[str] = []
    while sum(len(p) + 1 for p in parts) < target - 40:
        parts.append(rng.choice(SENTENCES))
    return " ".join(parts)


def title(rng: random.Random, category: str) -> str:
    if category in ("feature", "improvement"):
        return f"{rng.choice(FEATURES)} {rng.choice(AREAS).lower()}"
    if category == "question":
        return f"Why does {rng.choice(AREAS).lower()} {rng.choice(SYMPTOMS)}?"
    return f"{rng.choice(AREAS)} {rng.choice(SYMPTOMS)} {rng.choice(TRIGGERS)}"


def create_command(rng: random.Random) -> CreateIssue:
    category = rng.choices(CATEGORIES, weights=CATEGORY_WEIGHTS)[0]
    custom: dict[str, object] = {}
    if rng.random() < 0.4:
        custom["os"] = rng.choice(OSES)
    if rng.random() < 0.3:
        custom["severity"] = rng.choice(SEVERITIES)
    if rng.random() < 0.2:
        custom["affects_version"] = f"0.{rng.randint(1, 12)}.{rng.randint(0, 9)}"
    return CreateIssue(
        title=title(rng, category),
        description=description(rng, rng.randint(220, 380)),
        project=rng.choice(PROJECTS) if rng.random() < 0.9 else None,
        category=category,
        priority=rng.choice(PRIORITIES) if rng.random() < 0.4 else None,
        reporter=rng.choice(PEOPLE) if rng.random() < 0.85 else None,
        custom_fields=custom,
    )


def plan_steps(rng: random.Random, count: int) -> list[Step]:
    """The ``count`` mutations of one issue, creation first, in lifecycle order."""
    final = rng.choices([s for s, _ in FINAL_WEIGHTS], weights=[w for _, w in FINAL_WEIGHTS])[0]
    if final == "open":
        moves: tuple[str, ...] = ()
    elif final == "closed":
        moves = (*PATH_DONE[: rng.randint(0, 2)], "closed")
    elif final == "rejected":
        moves = PATH_REJECTED
    else:
        moves = PATH_DONE[: PATH_DONE.index(final) + 1]
    status_steps = [Step("plan" if m == "proposed" else "status", m) for m in moves]
    status_steps = status_steps[: max(0, count - 1)]
    extras: list[Step] = []
    for _ in range(count - 1 - len(status_steps)):
        roll = rng.random()
        if roll < 0.45:
            extras.append(Step("comment"))
        elif roll < 0.8:
            extras.append(Step("nim"))
        elif roll < 0.92:
            extras.append(Step("priority"))
        else:
            extras.append(Step("category"))
    # Merge: extras anywhere, status moves keep their order.
    merged = list(status_steps)
    for extra in extras:
        merged.insert(rng.randint(0, len(merged)), extra)
    steps = [Step("create"), *merged]
    if count > 1 and rng.random() < DELETE_RATE:
        steps[-1] = Step("delete")
    return steps


def event_counts(rng: random.Random, issues: int, per_issue: int) -> list[int]:
    """Varied counts (per_issue ± 5, at least 1) whose sum is exactly issues * per_issue."""
    spread = min(5, per_issue - 1)
    counts: list[int] = []
    for _ in range(issues // 2):
        d = rng.randint(-spread, spread)
        counts.extend((per_issue + d, per_issue - d))
    if len(counts) < issues:
        counts.append(per_issue)
    return counts


def command_for(step: Step, issue_id: int, state: Issue | None, rng: random.Random) -> Command:
    if step.kind == "create":
        return create_command(rng)
    assert state is not None
    if step.kind == "status":
        # A person's move (accept, reject, un-reject) is the admin's, as in /admin.
        human = gate(state.status, step.value) is not None
        return UpdateIssue(issue_id, {"status": step.value}, approving=human)
    if step.kind == "plan":  # PUT /plan with status proposed
        plan = f"1. Reproduce with a test.\n2. {rng.choice(SENTENCES)}\n3. Ship and verify."
        return UpdateIssue(issue_id, {"plan": plan, "status": step.value})
    if step.kind == "priority":
        choices = [p for p in PRIORITIES if p != state.priority]
        return UpdateIssue(issue_id, {"priority": rng.choice(choices)})
    if step.kind == "category":
        choices = [c for c in CATEGORIES if c != state.category]
        return UpdateIssue(issue_id, {"category": rng.choice(choices)})
    if step.kind == "nim":
        return RecordNimAction(issue_id, rng.choice(NIMS), rng.choice(NIM_ACTIONS))
    if step.kind == "delete":
        return DeleteIssue(issue_id)
    return AddComment(issue_id, rng.choice(PEOPLE), rng.choice(COMMENTS))


def actor_for(command: Command) -> Actor:
    """As the API handlers choose it (web/api.py)."""
    if isinstance(command, CreateIssue):
        return Actor("api", command.reporter)
    if isinstance(command, AddComment):
        return Actor("api", command.author)
    if isinstance(command, RecordNimAction):
        return Actor("api", command.name)
    if isinstance(command, UpdateIssue) and command.approving:
        return Actor("admin")
    return Actor("api")


def timeline(
    rng: random.Random, issues: int, per_issue: int, now: datetime
) -> Iterator[tuple[datetime, int, Step]]:
    """Every step of every issue, in global time order (ties broken by issue, then step)."""
    gap = SPAN / max(issues, 1)
    heap: list[tuple[datetime, int, int, Step]] = []
    for index, count in enumerate(event_counts(rng, issues, per_issue)):
        issue_id = index + 1
        at = now - SPAN + gap * index
        for order, step in enumerate(plan_steps(rng, count)):
            if order:
                at = min(at + timedelta(minutes=rng.expovariate(1 / 600)), now)
            heap.append((at, issue_id, order, step))
    heapq.heapify(heap)
    while heap:
        at, issue_id, _, step = heapq.heappop(heap)
        yield at, issue_id, step


def stamp_events(
    state: Issue | None,
    issue_id: int,
    decided: list[NewEvent],
    first_pos: int,
    at: str,
    actor: Actor,
) -> list[Event]:
    """Seq after the state's, positions from ``first_pos``: as the store stamps a commit."""
    seq = state.seq if state else 0
    return [
        Event(issue_id, seq + n, first_pos + n - 1, new.type, at, actor, new.data)
        for n, new in enumerate(decided, start=1)
    ]


def build_events(issues: int, per_issue: int, seed: int) -> dict[int, list[Event]]:
    """Run every command through decide/evolve and stamp events like the store does."""
    rng = random.Random(seed)
    now = EPOCH + SPAN
    states: dict[int, Issue | None] = {}
    events: dict[int, list[Event]] = {}
    next_pos = 1
    for at, issue_id, step in timeline(rng, issues, per_issue, now):
        state = states.get(issue_id)
        command = command_for(step, issue_id, state, rng)
        decided = decide(state, command)
        if not decided:  # pragma: no cover - every step changes something by construction
            continue
        stamped = stamp_events(state, issue_id, decided, next_pos, stamp(at), actor_for(command))
        next_pos += len(stamped)
        states[issue_id] = fold(stamped, state)
        events.setdefault(issue_id, []).extend(stamped)
    return events


def write_log(folder: Path, issue_events: list[Event]) -> None:
    path = folder / f"{issue_events[0].issue_id}.yaml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, b"".join(encode(e) for e in issue_events))
        os.fsync(fd)
    finally:
        os.close(fd)


def write_logs(data_dir: Path, events: dict[int, list[Event]], threads: int) -> None:
    """One log per issue, written and fsynced, ``threads`` at a time; then the folder."""
    folder = data_dir / "events"
    folder.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in pool.map(lambda e: write_log(folder, e), events.values(), chunksize=64):
            pass
    fsync_dir(folder)


async def index_and_replay(data_dir: Path) -> ReplayResult:
    """Open the store once (it indexes the positions of the new logs), then replay."""
    store = FileEventStore(data_dir)
    await store.open()
    await store.close()
    return await replay(data_dir)


@dataclass(frozen=True, slots=True)
class SeedResult:
    issues: int
    events: int
    replay: ReplayResult
    seconds_generate: float
    seconds_write: float
    seconds_replay: float


def seed(
    data_dir: Path, issues: int, per_issue: int = 10, seed: int = 1, threads: int = 16
) -> SeedResult:
    events_dir = data_dir / "events"
    if events_dir.exists() and any(events_dir.iterdir()):
        raise SystemExit(f"seed_data: {events_dir} already holds event logs; use an empty dir")
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = DataDirLock(data_dir)
    lock.acquire()
    try:
        started = time.monotonic()
        events = build_events(issues, per_issue, seed)
        generated = time.monotonic()
        write_logs(data_dir, events, threads)
        written = time.monotonic()
        result = asyncio.run(index_and_replay(data_dir))
        replayed = time.monotonic()
    finally:
        lock.release()
    return SeedResult(
        issues=len(events),
        events=sum(len(e) for e in events.values()),
        replay=result,
        seconds_generate=generated - started,
        seconds_write=written - generated,
        seconds_replay=replayed - written,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("data_dir", type=Path, help="data dir to create (must hold no events)")
    parser.add_argument("--issues", type=int, default=10_000, help="issues (default 10000)")
    parser.add_argument(
        "--events-per-issue", type=int, default=10, help="average events per issue (default 10)"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument(
        "--threads", type=int, default=16, help="parallel appends while writing (default 16)"
    )
    args = parser.parse_args(argv)
    if args.issues < 1 or args.events_per_issue < 1:
        parser.error("--issues and --events-per-issue must be at least 1")
    result = seed(args.data_dir, args.issues, args.events_per_issue, args.seed, args.threads)
    print(
        f"seeded {args.data_dir}: {result.issues} issues "
        f"({result.replay.deleted} deleted), {result.events} events; "
        f"generate {result.seconds_generate:.2f}s, append+fsync {result.seconds_write:.2f}s, "
        f"replay {result.seconds_replay:.2f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
