"""The issue lifecycle as a hypothesis state machine over the pure domain.

``decide`` + ``evolve`` are driven exactly like ``hydraissue/service.py`` drives them
(decide, then seq/pos/time/actor stamped as the event store stamps a commit, then
fold), with commands built by ``hydraissue.parse``
as the web handlers build them. A model kept beside the real state checks every rule
of the runbook's lifecycle section.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from events.model import Actor, Event
from hydraissue import parse
from hydraissue.commands import (
    AddAttachment,
    AddComment,
    Command,
    CreateIssue,
    DeleteIssue,
    RecordNimAction,
    UpdateIssue,
)
from hydraissue.decide import NewEvent, decide, transition_allowed
from hydraissue.errors import Conflict, Forbidden, NotFound, PreconditionFailed
from hydraissue.evolve import evolve, fold
from hydraissue.model import (
    CATEGORIES,
    PRIORITIES,
    STATUS_ALIASES,
    STATUSES,
    TERMINAL_STATUSES,
    Issue,
)
from tests.strategies import (
    custom_fields,
    non_blank,
    optional_texts,
    status_names,
    strict,
    texts,
)

ACTOR = Actor("api")


def stamp(
    state: Issue | None,
    issue_id: int,
    decided: list[NewEvent],
    first_pos: int,
    at: str,
    actor: Actor,
) -> list[Event]:
    """As the store stamps one append: seq after the state's, positions from first_pos."""
    seq = state.seq if state else 0
    return [
        Event(issue_id, seq + n, first_pos + n - 1, new.type, at, actor, new.data)
        for n, new in enumerate(decided, start=1)
    ]


TERMINAL = frozenset({"done", "closed"})  # the runbook's words, not the code's constant


def runbook_allows(current: str, requested: str) -> bool:
    """docs/runbook.md: terminal states never go back; they may move to each other."""
    if current in TERMINAL:
        return requested in TERMINAL
    return True


def agent_may_not(current: str, requested: str) -> bool:
    """docs/runbook.md, the human gate: accepted and rejected are an admin's moves, and
    so is rejected -> groomed; an agent starts implementing only from accepted."""
    if requested == current:
        return False
    if requested in ("accepted", "rejected"):
        return True
    if current == "rejected" and requested == "groomed":
        return True
    return requested == "implementing" and current != "accepted"


# -- strategies ----------------------------------------------------------------------

create_bodies = st.fixed_dictionaries(
    {"title": non_blank},
    optional={
        "description": texts,
        "project": optional_texts,
        "category": st.sampled_from([None, "", *CATEGORIES]),
        "priority": st.sampled_from([None, "", *PRIORITIES]),
        "reporter": optional_texts,
        "custom_fields": custom_fields,
    },
)
field_bodies = st.fixed_dictionaries(
    {},
    optional={
        "priority": st.sampled_from([None, "", *PRIORITIES]),
        "category": st.sampled_from([None, "", *CATEGORIES]),
        "plan": optional_texts,
        "custom_fields": custom_fields,
        "title": non_blank,
        "description": texts,
        "project": optional_texts,
    },
).filter(bool)


# -- the machine ---------------------------------------------------------------------


class Lifecycle(RuleBasedStateMachine):
    ids = Bundle("ids")

    def __init__(self) -> None:
        super().__init__()
        self.issues: dict[int, Issue] = {}
        self.logs: dict[int, list[Event]] = {}
        self.deleted: set[int] = set()
        self.ever_terminal: set[int] = set()
        self.next_id = 1
        self.next_pos = 1
        self.tick = 0

    # Stamping as the event store does for one commit.
    def execute(self, issue_id: int, command: Command) -> list[Event]:
        state = None if isinstance(command, CreateIssue) else self.issues.get(issue_id)
        decided = decide(state, command)
        if not decided:
            return []
        self.tick += 1
        at = f"2024-01-01T00:00:{self.tick // 1000:02d}.{self.tick % 1000:03d}Z"
        events = stamp(state, issue_id, decided, self.next_pos, at, ACTOR)
        self.next_pos += len(events)
        for event in events:
            before = state.seq if state else 0
            state = evolve(state, event)
            assert state.seq == before + 1 == event.seq
            assert state.updated_at == at
        assert state is not None
        self.issues[issue_id] = state
        self.logs.setdefault(issue_id, []).extend(events)
        if state.status in TERMINAL:
            self.ever_terminal.add(issue_id)
        return events

    def expect_not_found(self, issue_id: int, command: Command) -> None:
        with pytest.raises(NotFound) as raised:
            decide(self.issues.get(issue_id), command)
        assert raised.value.status == 404
        assert raised.value.detail == {"id": issue_id}

    def check_update(self, issue_id: int, command: UpdateIssue) -> None:
        if issue_id in self.deleted:
            self.expect_not_found(issue_id, command)
            return
        state = self.issues[issue_id]
        requested = command.changes.get("status")
        if requested is not None and not runbook_allows(state.status, requested):
            with pytest.raises(Conflict) as raised:
                decide(state, command)
            assert raised.value.status == 409
            assert raised.value.detail == {"current": state.status, "requested": requested}
            assert self.issues[issue_id] is state
            return
        if (
            requested is not None
            and not command.approving
            and agent_may_not(state.status, requested)
        ):
            with pytest.raises(Forbidden) as refused:
                decide(state, command)
            assert refused.value.status == 403
            assert refused.value.detail["gate"] == "admin"
            assert self.issues[issue_id] is state
            return
        differing = {k: v for k, v in command.changes.items() if getattr(state, k) != v}
        events = self.execute(issue_id, command)
        if not differing:
            assert events == [], "a no-op update decided events"
            assert self.issues[issue_id] is state
            return
        assert [e.type for e in events] == ["issue.updated"]
        assert events[0].data["changes"] == differing
        assert events[0].data["previous"] == {k: getattr(state, k) for k in differing}
        after = self.issues[issue_id]
        for name, value in command.changes.items():
            assert getattr(after, name) == value
        untouched = set(Issue.__slots__) - set(command.changes) - {"seq", "updated_at", "status_at"}
        for name in untouched:
            assert getattr(after, name) == getattr(state, name), name
        # status_at: when the issue entered its status (moves with the status only)
        if "status" in differing:
            assert after.status_at == after.updated_at
        else:
            assert after.status_at == state.status_at

    # -- rules -------------------------------------------------------------------------

    @rule(target=ids, body=create_bodies)
    def create(self, body: dict[str, Any]) -> int:
        command = parse.create_issue(body)
        issue_id = self.next_id
        self.next_id += 1
        events = self.execute(issue_id, command)
        assert [(e.type, e.seq) for e in events] == [("issue.created", 1)]
        issue = self.issues[issue_id]
        assert issue.status == "open"
        assert issue.plan is None
        assert issue.title == body["title"].strip()
        assert issue.category == (body.get("category") or "unclassified")
        assert issue.priority == (body.get("priority") or None)
        assert strict(issue.custom_fields) == strict(body.get("custom_fields") or {})
        assert issue.comments == () and issue.nim_actions == ()
        return issue_id

    @rule(issue_id=ids, status=status_names, approving=st.booleans())
    def update_status(self, issue_id: int, status: str, approving: bool) -> None:
        command = parse.update_issue(issue_id, {"status": status})
        assert command.changes == {"status": STATUS_ALIASES.get(status, status)}
        assert not command.approving  # parsing never grants the human's moves
        self.check_update(issue_id, dataclasses.replace(command, approving=approving))

    @rule(
        issue_id=ids,
        body=field_bodies,
        status=st.one_of(st.none(), status_names),
        approving=st.booleans(),
    )
    def update_fields(
        self, issue_id: int, body: dict[str, Any], status: str | None, approving: bool
    ) -> None:
        if status is not None:
            body = {**body, "status": status}
        command = parse.update_issue(issue_id, body)
        self.check_update(issue_id, dataclasses.replace(command, approving=approving))

    @rule(issue_id=ids, fields=st.sets(st.sampled_from(parse.UPDATE_FIELDS), min_size=1))
    def noop_update(self, issue_id: int, fields: set[str]) -> None:
        """Sending back the current values changes nothing and decides nothing."""
        if issue_id in self.deleted:
            return
        state = self.issues[issue_id]
        command = UpdateIssue(issue_id, {name: getattr(state, name) for name in fields})
        assert decide(state, command) == []

    @rule(issue_id=ids)
    def terminal_swap(self, issue_id: int) -> None:
        """done <-> closed is always allowed."""
        state = self.issues[issue_id]
        if issue_id in self.deleted or state.status not in TERMINAL:
            return
        other = "closed" if state.status == "done" else "done"
        events = self.execute(issue_id, parse.update_issue(issue_id, {"status": other}))
        assert len(events) == 1
        assert self.issues[issue_id].status == other

    @rule(
        issue_id=ids,
        plan=optional_texts,
        status=st.one_of(st.none(), status_names),
        approving=st.booleans(),
    )
    def set_plan(
        self, issue_id: int, plan: str | None, status: str | None, approving: bool
    ) -> None:
        body: dict[str, Any] = {"plan": plan}
        if status is not None:
            body["status"] = status
        command = parse.set_plan(issue_id, body)
        self.check_update(issue_id, dataclasses.replace(command, approving=approving))

    @rule(issue_id=ids, author=optional_texts, text=non_blank)
    def comment(self, issue_id: int, author: str | None, text: str) -> None:
        command = parse.add_comment(issue_id, {"author": author, "text": text})
        if issue_id in self.deleted:
            self.expect_not_found(issue_id, command)
            return
        before = self.issues[issue_id]
        events = self.execute(issue_id, command)
        assert [e.type for e in events] == ["comment.added"]
        after = self.issues[issue_id]
        assert after.comments[:-1] == before.comments
        added = after.comments[-1]
        assert added.id == len(after.comments)
        assert added.text == text
        assert added.author == ((author or "").strip() or "anonymous")
        assert after.status == before.status

    @rule(issue_id=ids, name=non_blank, action=non_blank)
    def nim_action(self, issue_id: int, name: str, action: str) -> None:
        command = parse.record_nim_action(issue_id, {"name": name, "action": action})
        if issue_id in self.deleted:
            self.expect_not_found(issue_id, command)
            return
        before = self.issues[issue_id]
        events = self.execute(issue_id, command)
        assert [e.type for e in events] == ["nim_action.recorded"]
        after = self.issues[issue_id]
        assert after.nim_actions[:-1] == before.nim_actions
        assert (after.nim_actions[-1].name, after.nim_actions[-1].action) == (
            name.strip(),
            action.strip(),
        )

    @rule(issue_id=ids)
    def stale_if_match(self, issue_id: int) -> None:
        if issue_id in self.deleted:
            return
        state = self.issues[issue_id]
        stale = f'"{issue_id}.{state.seq + 7}"'
        with pytest.raises(PreconditionFailed):
            decide(state, UpdateIssue(issue_id, {"title": "x"}, if_match=stale))
        with pytest.raises(PreconditionFailed):
            decide(state, DeleteIssue(issue_id, if_match=stale))
        # the current ETag (and *) pass
        assert decide(state, UpdateIssue(issue_id, {}, if_match=state.etag)) == []
        assert decide(state, UpdateIssue(issue_id, {}, if_match="*")) == []

    @rule(issue_id=ids)
    def delete(self, issue_id: int) -> None:
        command = DeleteIssue(issue_id)
        if issue_id in self.deleted:
            self.expect_not_found(issue_id, command)
            return
        events = self.execute(issue_id, command)
        assert [e.type for e in events] == ["issue.deleted"]
        assert self.issues[issue_id].deleted
        self.deleted.add(issue_id)

    @precondition(lambda self: bool(self.deleted))
    @rule(data=st.data())
    def deleted_rejects_everything(self, data: st.DataObject) -> None:
        issue_id = data.draw(st.sampled_from(sorted(self.deleted)))
        seq = self.issues[issue_id].seq
        for command in all_commands(issue_id):
            self.expect_not_found(issue_id, command)
        assert self.issues[issue_id].seq == seq

    @rule()
    def unknown_id_rejects_everything(self) -> None:
        for command in all_commands(self.next_id + 5):
            self.expect_not_found(self.next_id + 5, command)

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def statuses_follow_the_runbook(self) -> None:
        for issue_id, issue in self.issues.items():
            assert issue.status in STATUSES  # never an alias such as "resolved"
            if issue_id in self.ever_terminal:
                assert issue.status in TERMINAL, (issue_id, issue.status)

    @invariant()
    def seq_counts_events(self) -> None:
        for issue_id, events in self.logs.items():
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            assert self.issues[issue_id].seq == len(events)
            assert fold(events) == self.issues[issue_id]
            assert events[0].type == "issue.created"

    @invariant()
    def positions_are_global_and_increasing(self) -> None:
        positions = sorted(e.pos for events in self.logs.values() for e in events)
        assert positions == list(range(1, self.next_pos))


def all_commands(issue_id: int) -> list[Command]:
    return [
        UpdateIssue(issue_id, {"status": "groomed"}),
        UpdateIssue(issue_id, {"title": "t"}),
        parse.set_plan(issue_id, {"plan": "p"}),
        DeleteIssue(issue_id),
        AddComment(issue_id, "a", "text"),
        RecordNimAction(issue_id, "nebula", "groomed"),
        AddAttachment(issue_id, "n", "f.txt", 1, "text/plain"),
    ]


Lifecycle.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestLifecycle = Lifecycle.TestCase


# -- transition_allowed against the runbook -------------------------------------------


def test_terminal_constant_matches_runbook() -> None:
    assert frozenset(TERMINAL_STATUSES) == TERMINAL
    assert STATUS_ALIASES == {"resolved": "done"}


@given(st.sampled_from(STATUSES), st.sampled_from(STATUSES))
def test_transition_allowed_matches_runbook(current: str, requested: str) -> None:
    assert transition_allowed(current, requested) == runbook_allows(current, requested)


@pytest.mark.parametrize(("current", "requested"), list(itertools.product(STATUSES, STATUSES)))
def test_every_status_pair(current: str, requested: str) -> None:
    allowed = transition_allowed(current, requested)
    if current in ("done", "closed"):
        assert allowed is (requested in ("done", "closed"))
    else:
        assert allowed is True


@given(st.sampled_from(STATUSES), status_names, st.booleans())
def test_decide_enforces_transition_for_every_pair(
    current: str, name: str, approving: bool
) -> None:
    """decide (not only the helper) answers every pair, aliases included, for an admin
    and for an agent."""
    issue = _issue(status=current)
    command = dataclasses.replace(parse.update_issue(1, {"status": name}), approving=approving)
    requested = STATUS_ALIASES.get(name, name)
    if not runbook_allows(current, requested):
        with pytest.raises(Conflict) as raised:
            decide(issue, command)
        assert raised.value.detail == {"current": current, "requested": requested}
    elif not approving and agent_may_not(current, requested):
        with pytest.raises(Forbidden) as refused:
            decide(issue, command)
        assert refused.value.detail == {"current": current, "requested": requested, "gate": "admin"}
        assert "admin" in refused.value.message
    else:
        events = decide(issue, command)
        assert len(events) == (0 if requested == current else 1)


def test_done_stays_open_to_agents_from_every_active_status() -> None:
    """Release tooling resolves issues whatever their stage."""
    for current in STATUSES:
        if current not in TERMINAL:
            events = decide(_issue(status=current), parse.update_issue(1, {"status": "resolved"}))
            assert events[0].data["changes"] == {"status": "done"}


def _issue(**overrides: Any) -> Issue:
    values: dict[str, Any] = {
        "id": 1,
        "title": "t",
        "description": "",
        "project": None,
        "category": "unclassified",
        "priority": None,
        "status": "open",
        "reporter": None,
        "custom_fields": {},
        "plan": None,
        "created_at": "2024-01-01T00:00:00.000Z",
        "updated_at": "2024-01-01T00:00:00.000Z",
        "seq": 1,
    }
    values.update(overrides)
    return Issue(**values)


def test_conflicting_status_rejects_the_whole_update() -> None:
    issue = _issue(status="done")
    with pytest.raises(Conflict):
        decide(issue, parse.update_issue(1, {"title": "new", "status": "groomed"}))


AT = "2024-01-01T00:00:01.000Z"


@pytest.mark.parametrize(
    "event",
    [
        Event(1, 2, 9, "attachment.added", AT, ACTOR, {}),  # no filename, size, type
        Event(1, 2, 9, "attachment.added", AT, ACTOR, {"size": "big", "filename": 7}),
        Event(1, 2, 9, "comment.added", AT, ACTOR, {"text": None, "id": "x"}),
        Event(1, 2, 9, "issue.updated", AT, ACTOR, {"changes": "not a mapping"}),
        Event(1, 2, 9, "issue.frobbed", AT, ACTOR, {"x": 1}),  # a newer build's type
        Event(1, 2, 9, "comment.added", AT, ACTOR, {"text": "x"}, v=99),  # a newer version
    ],
)
def test_evolve_never_raises_on_an_event_from_a_log(event: Event) -> None:
    """Invariant 7: odd or newer events keep the sequence and get defaults, no crash."""
    after = evolve(_issue(), event)
    assert after.seq == 2 and after.updated_at == AT
    assert after.title == "t"


def test_evolve_gives_missing_attachment_fields_defaults() -> None:
    after = evolve(_issue(), Event(1, 2, 9, "attachment.added", AT, ACTOR, {"name": "n"}))
    assert after.attachments[0].filename == ""
    assert after.attachments[0].content_type == "application/octet-stream"


def test_evolve_skips_a_newer_version_entirely() -> None:
    newer = Event(1, 2, 9, "comment.added", AT, ACTOR, {"text": "from the future"}, v=99)
    assert evolve(_issue(), newer).comments == ()


@pytest.mark.parametrize(
    ("old", "new"),
    [({"n": 1}, {"n": True}), ({"n": 1}, {"n": 1.0}), ({"n": 0}, {"n": False})],
)
def test_custom_fields_change_of_json_type_is_not_a_noop(
    old: dict[str, Any], new: dict[str, Any]
) -> None:
    """PATCH custom_fields replaces the object: 1 -> true is a change JSON clients see."""
    issue = _issue(custom_fields=old)
    events = decide(issue, parse.update_issue(1, {"custom_fields": new}))
    assert len(events) == 1, f"{old} -> {new} was decided as a no-op"
