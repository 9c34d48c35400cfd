"""Turn untrusted JSON (or form) values into commands, naming the field at fault.

Shape and enum checks live here; rules that depend on current state (transitions,
ETags) live in ``decide``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hydraissue.commands import (
    CREATE_FIELDS,
    UPDATE_FIELDS,
    AddComment,
    CreateIssue,
    RecordNimAction,
    UpdateIssue,
)
from hydraissue.errors import Invalid
from hydraissue.model import CATEGORIES, DEFAULT_CATEGORY, PRIORITIES, STATUS_ALIASES, STATUSES

MAX_TITLE = 500
MAX_TEXT = 200_000
MAX_SHORT = 200


def issue_id(raw: str) -> int | None:
    """An id from a URL: ASCII digits only ('²'.isdigit() is true), at most 18 of them."""
    if raw.isascii() and raw.isdigit() and len(raw) <= 18:
        return int(raw)
    return None


def _object(body: Any, what: str = "body") -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Invalid(what, f"must be a JSON object, got {_kind(body)}")
    return body


def _kind(value: Any) -> str:
    return {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _reject_unknown(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise Invalid(
            unknown[0],
            f"unknown field; allowed fields are {', '.join(allowed)}",
            {"field": unknown[0], "allowed": list(allowed)},
        )


def text(value: Any, field: str, *, required: bool = False, limit: int = MAX_TEXT) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise Invalid(field, f"must be a string, got {_kind(value)}")
    if required and not value.strip():
        raise Invalid(field, "is required and must not be empty")
    if len(value) > limit:
        raise Invalid(field, f"is too long ({len(value)} characters, at most {limit})")
    return value


def optional_text(value: Any, field: str, limit: int = MAX_SHORT) -> str | None:
    """A short optional string; empty means unset."""
    if value is None:
        return None
    cleaned = text(value, field, limit=limit).strip()
    return cleaned or None


def title(value: Any) -> str:
    return text(value, "title", required=True, limit=MAX_TITLE).strip()


def category(value: Any) -> str:
    if value is None or value == "":
        return DEFAULT_CATEGORY
    return choice(value, "category", CATEGORIES)


def priority(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return choice(value, "priority", PRIORITIES)


def status(value: Any) -> str:
    if isinstance(value, str):
        value = STATUS_ALIASES.get(value, value)
    return choice(value, "status", STATUSES)


def choice(value: Any, field: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise Invalid(
            field,
            f"must be one of {', '.join(allowed)}; got {value!r}",
            {"field": field, "allowed": list(allowed), "got": value},
        )
    return value


MAX_KEY = 128  # YAML caps inline keys at 1024 characters, escapes included (6 per char)
MAX_DEPTH = 32  # far beyond any real metadata; keeps every encoder's recursion safe


def custom_fields(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Invalid("custom_fields", f"must be a JSON object, got {_kind(value)}")
    _check_nested(value, 1)
    return value


def _check_nested(value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise Invalid("custom_fields", f"is nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, dict):
        for key, item in value.items():
            if len(key) > MAX_KEY:
                raise Invalid(
                    "custom_fields", f"key {key[:20]!r}… is longer than {MAX_KEY} characters"
                )
            _check_nested(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_nested(item, depth + 1)


def create_issue(body: Any) -> CreateIssue:
    body = _object(body)
    _reject_unknown(body, CREATE_FIELDS)
    return CreateIssue(
        title=title(body.get("title")),
        description=text(body.get("description"), "description"),
        project=optional_text(body.get("project"), "project"),
        category=category(body.get("category")),
        priority=priority(body.get("priority")),
        reporter=optional_text(body.get("reporter"), "reporter"),
        custom_fields=custom_fields(body.get("custom_fields")),
    )


def plan(value: Any) -> str | None:
    return None if value is None else text(value, "plan")


def description(value: Any) -> str:
    return text(value, "description")


def project(value: Any) -> str | None:
    return optional_text(value, "project")


def reporter(value: Any) -> str | None:
    return optional_text(value, "reporter")


_UPDATERS: dict[str, Callable[[Any], Any]] = {
    "status": status,
    "priority": priority,
    "category": category,
    "plan": plan,
    "custom_fields": custom_fields,
    "title": title,
    "description": description,
    "project": project,
}


def update_issue(issue_id: int, body: Any, if_match: str | None = None) -> UpdateIssue:
    body = _object(body)
    _reject_unknown(body, UPDATE_FIELDS)
    if not body:
        raise Invalid("body", f"names no field to change; use any of {', '.join(UPDATE_FIELDS)}")
    changes = {name: _UPDATERS[name](value) for name, value in body.items()}
    return UpdateIssue(issue_id=issue_id, changes=changes, if_match=if_match)


def set_plan(issue_id: int, body: Any, if_match: str | None = None) -> UpdateIssue:
    body = _object(body)
    _reject_unknown(body, ("plan", "status"))
    if "plan" not in body:
        raise Invalid("plan", "is required")
    changes: dict[str, Any] = {"plan": _UPDATERS["plan"](body["plan"])}
    if body.get("status") is not None:
        changes["status"] = status(body["status"])
    return UpdateIssue(issue_id=issue_id, changes=changes, if_match=if_match)


def add_comment(issue_id: int, body: Any) -> AddComment:
    body = _object(body)
    _reject_unknown(body, ("author", "text", "body"))
    raw_text = body.get("text", body.get("body"))
    field = "text" if "text" in body or "body" not in body else "body"
    return AddComment(
        issue_id=issue_id,
        author=optional_text(body.get("author"), "author") or "anonymous",
        text=text(raw_text, field, required=True),
    )


def record_nim_action(issue_id: int, body: Any) -> RecordNimAction:
    body = _object(body)
    _reject_unknown(body, ("name", "action"))
    return RecordNimAction(
        issue_id=issue_id,
        name=text(body.get("name"), "name", required=True, limit=MAX_SHORT).strip(),
        action=text(body.get("action"), "action", required=True, limit=MAX_SHORT).strip(),
    )
