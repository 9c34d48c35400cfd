"""Webhook registrations: what is registered, which events a registration receives, and
the rules for its fields. Registrations change at run time (``/api/v1/webhooks``) and
live in ``webhooks.yaml``, replaced atomically (and fsynced) before the change is
answered; the file is readable by its owner only, since it holds the secrets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from events.clock import utc_now
from events.codec import dump_item, load_items
from events.fsio import replace_atomically
from hydraissue.errors import Invalid, NotFound
from hydraissue.model import Event
from hydraissue.parse import reject_unknown

# The event names a webhook can ask for ("*": all of them).
WEBHOOK_EVENTS = (
    "issue.created",
    "issue.updated",
    "issue.status_changed",
    "issue.plan_updated",
    "issue.commented",
    "issue.nim_action",
    "issue.attachment_added",
    "issue.deleted",
)
ALL = "*"
FORMAT = 1
_ID = re.compile(r"^wh_([1-9][0-9]{0,17})$")
MAX_DESCRIPTION = 500
MAX_SECRET = 500
MAX_PROJECTS = 100
CREATE_FIELDS = ("url", "events", "projects", "secret", "description")
UPDATE_FIELDS = ("url", "events", "projects", "secret", "description", "active")


def webhook_names(event: Event) -> tuple[str, ...]:
    """The webhook events one committed event stands for, the finest first.

    A webhook receives the first of these it asked for, so one committed event is at
    most one delivery per webhook (a status change: ``issue.status_changed`` to a hook
    that asked for it, else ``issue.updated``).
    """
    kind = event.type
    if kind == "issue.created":
        return ("issue.created",)
    if kind == "issue.imported":
        return ()  # history brought in by `hydraissue import`, not news: no webhook
    if kind == "issue.deleted":
        return ("issue.deleted",)
    if kind == "issue.updated":
        changes = event.data.get("changes")
        changed = changes if isinstance(changes, dict) else {}
        finer = []
        if "status" in changed:
            finer.append("issue.status_changed")
        if "plan" in changed:
            finer.append("issue.plan_updated")
        return (*finer, "issue.updated")
    finer_by_type = {
        "comment.added": "issue.commented",
        "nim_action.recorded": "issue.nim_action",
        "attachment.added": "issue.attachment_added",
    }
    if kind in finer_by_type:
        return (finer_by_type[kind], "issue.updated")
    return ()


@dataclass(frozen=True, slots=True)
class Webhook:
    id: str
    url: str
    events: tuple[str, ...]
    projects: tuple[str, ...] = ()
    secret: str | None = None
    description: str = ""
    active: bool = True
    disabled_reason: str | None = None
    created_at: str = ""
    updated_at: str = ""
    after: int = 0  # the store's head at registration: only later events are sent

    @property
    def number(self) -> int:
        return int(self.id.removeprefix("wh_"))

    def wants(self, names: Sequence[str], project: str | None) -> str | None:
        """The name this webhook receives for an event standing for ``names``, or None."""
        if self.projects and project not in self.projects:
            return None
        if ALL in self.events:
            return names[0] if names else None
        return next((name for name in names if name in self.events), None)

    def public_dict(self) -> dict[str, Any]:
        """As the API shows it: the secret never, only whether there is one."""
        return {
            "id": self.id,
            "url": self.url,
            "events": list(self.events),
            "projects": list(self.projects),
            "description": self.description,
            "active": self.active,
            "disabled_reason": self.disabled_reason,
            "has_secret": bool(self.secret),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    def stored_dict(self) -> dict[str, Any]:
        return {**self.public_dict(), "secret": self.secret, "after": self.after}


# -- input ---------------------------------------------------------------------------------


def _object(body: Any, allowed: Sequence[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Invalid("body", "must be a JSON object")
    reject_unknown(body, allowed)
    return body


def _events(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise Invalid("events", 'must be a non-empty list of event names, or ["*"]')
    bad = [v for v in value if v != ALL and v not in WEBHOOK_EVENTS]
    if bad:
        raise Invalid(
            "events",
            f"unknown event {bad[0]!r}; allowed: *, {', '.join(WEBHOOK_EVENTS)}",
            {"field": "events", "allowed": [ALL, *WEBHOOK_EVENTS], "got": bad},
        )
    return tuple(dict.fromkeys(value))


def _projects(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise Invalid("projects", "must be a list of project names (empty: every project)")
    if len(value) > MAX_PROJECTS:
        raise Invalid("projects", f"names at most {MAX_PROJECTS} projects")
    return tuple(dict.fromkeys(v.strip() for v in value))


def _secret(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_SECRET:
        raise Invalid("secret", f"must be a string of at most {MAX_SECRET} characters")
    return value


def _description(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION:
        raise Invalid("description", f"must be a string of at most {MAX_DESCRIPTION} characters")
    return value


def _url(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 2000:
        raise Invalid("url", "is required: an http:// or https:// URL of at most 2000 characters")
    return value.strip()


@dataclass(frozen=True, slots=True)
class WebhookInput:
    """A validated create or update body (only the fields it names, for an update)."""

    fields: dict[str, Any] = field(default_factory=dict)


def parse_create(body: Any) -> WebhookInput:
    body = _object(body, CREATE_FIELDS)
    if "url" not in body:
        raise Invalid("url", "is required")
    if "events" not in body:
        raise Invalid("events", 'is required: a list of event names, or ["*"]')
    return WebhookInput(
        {
            "url": _url(body["url"]),
            "events": _events(body["events"]),
            "projects": _projects(body.get("projects")),
            "secret": _secret(body.get("secret")),
            "description": _description(body.get("description")),
        }
    )


def parse_update(body: Any) -> WebhookInput:
    body = _object(body, UPDATE_FIELDS)
    if not body:
        raise Invalid("body", f"names no field to change; use any of {', '.join(UPDATE_FIELDS)}")
    checks = {
        "url": _url,
        "events": _events,
        "projects": _projects,
        "secret": _secret,
        "description": _description,
    }
    fields: dict[str, Any] = {}
    for name, value in body.items():
        if name == "active":
            if not isinstance(value, bool):
                raise Invalid("active", "must be true or false")
            fields["active"] = value
        else:
            fields[name] = checks[name](value)
    return WebhookInput(fields)


def webhook_id(raw: str) -> str:
    if not _ID.match(raw):
        raise NotFound(f"no webhook {raw!r}: ids look like wh_1", {"id": raw})
    return raw


# -- the registry ----------------------------------------------------------------------------


class WebhookRegistry:
    """Every registration, in memory and in ``webhooks.yaml``."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "webhooks.yaml"
        self._hooks: dict[str, Webhook] = {}
        self._next = 1

    def load(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        body_at = data.find(b"\nwebhooks:\n")
        header = data[:body_at] if body_at >= 0 else data
        match = re.search(rb"^next_id: *(\d+)$", header, re.MULTILINE)
        items = load_items(data[body_at + 11 :]) if body_at >= 0 else []
        for raw in items:
            hook = Webhook(
                id=str(raw["id"]),
                url=str(raw["url"]),
                events=tuple(raw.get("events") or ()),
                projects=tuple(raw.get("projects") or ()),
                secret=raw.get("secret"),
                description=str(raw.get("description") or ""),
                active=bool(raw.get("active", True)),
                disabled_reason=raw.get("disabled_reason"),
                created_at=str(raw.get("created_at") or ""),
                updated_at=str(raw.get("updated_at") or ""),
                after=int(raw.get("after") or 0),
            )
            self._hooks[hook.id] = hook
        highest = max((h.number for h in self._hooks.values()), default=0)
        self._next = max(int(match.group(1)) if match else 1, highest + 1)

    def _save(self) -> None:
        body = (
            b"# HydraIssue webhook registrations (change them through /api/v1/webhooks).\n"
            b"# Holds the webhooks' secrets: readable by the service's user only.\n"
            + f"format: {FORMAT}\nnext_id: {self._next}\nwebhooks:\n".encode()
            + b"".join(dump_item(h.stored_dict()) for h in self._hooks.values())
        )
        replace_atomically(self.path, body, mode=0o600)

    def all(self) -> list[Webhook]:
        return sorted(self._hooks.values(), key=lambda h: h.number)

    def get(self, hook_id: str) -> Webhook:
        hook = self._hooks.get(webhook_id(hook_id))
        if hook is None:
            raise NotFound(f"no webhook {hook_id}", {"id": hook_id})
        return hook

    def find(self, hook_id: str) -> Webhook | None:
        return self._hooks.get(hook_id)

    def create(self, values: Mapping[str, Any], after: int = 0) -> Webhook:
        """``after``: the position of the last event committed before this registration."""
        now = utc_now()
        hook = Webhook(id=f"wh_{self._next}", created_at=now, updated_at=now, after=after, **values)
        self._next += 1  # ids are never reused, even if this save fails
        self._hooks[hook.id] = hook
        try:
            self._save()
        except BaseException:
            del self._hooks[hook.id]
            raise
        return hook

    def update(self, hook_id: str, values: Mapping[str, Any]) -> Webhook:
        old = self.get(hook_id)
        changes = dict(values)
        if changes.get("active") is True:
            changes["disabled_reason"] = None
        hook = replace(old, updated_at=utc_now(), **changes)
        self._hooks[hook.id] = hook
        try:
            self._save()
        except BaseException:
            self._hooks[hook.id] = old
            raise
        return hook

    def delete(self, hook_id: str) -> Webhook:
        hook = self.get(hook_id)
        del self._hooks[hook.id]
        try:
            self._save()
        except BaseException:
            self._hooks[hook.id] = hook
            raise
        return hook
