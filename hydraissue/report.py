"""The public report form's contract: field names, extras, and friendly validation.

Scripts and the headset app post to /report, so the field names here are an API.
Any field the form does not know is kept in ``custom_fields`` under its own name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from hydraissue import parse
from hydraissue.commands import CreateIssue
from hydraissue.errors import Invalid

FORM_FIELDS = ("title", "description", "project", "category", "reporter", "custom_fields")
FILE_FIELD = "attachments"
HONEYPOT = "website"  # hidden from people; bots fill it
_NOT_DATA = (HONEYPOT, FILE_FIELD)
MAX_EXTRA_FIELDS = 50
MAX_FIELD_NAME = 100


class FormInvalid(Invalid):
    """Several fields can be wrong at once; the form shows each message beside its field."""

    def __init__(self, errors: dict[str, str]) -> None:
        first = next(iter(errors))
        super().__init__(first, errors[first], {"fields": errors})
        self.errors = errors


def extra_fields(fields: Mapping[str, str]) -> list[str]:
    """Names the form does not know: they go to custom_fields under their own name."""
    return [name for name in fields if name not in FORM_FIELDS and name not in _NOT_DATA]


def is_spam(fields: Mapping[str, str]) -> bool:
    return bool(fields.get(HONEYPOT, "").strip())


def parse_report(fields: Mapping[str, str]) -> CreateIssue:
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    checks: dict[str, Callable[[Any], Any]] = {
        "title": parse.title,
        "description": parse.description,
        "project": parse.project,
        "category": parse.category,
        "reporter": parse.reporter,
    }
    for name, check in checks.items():
        try:
            values[name] = check(fields.get(name))
        except Invalid as exc:
            errors[name] = _friendly(name, exc)
    custom = _custom_fields(fields.get("custom_fields", ""), errors)
    extras = extra_fields(fields)
    if len(extras) > MAX_EXTRA_FIELDS:
        errors["custom_fields"] = f"Too many extra fields (at most {MAX_EXTRA_FIELDS})."
    for name in extras[:MAX_EXTRA_FIELDS]:
        if len(name) > MAX_FIELD_NAME:
            errors["custom_fields"] = f"A field name is longer than {MAX_FIELD_NAME} characters."
            continue
        custom.setdefault(name, fields[name])
    if errors:
        raise FormInvalid(errors)
    return CreateIssue(custom_fields=custom, **values)


def _custom_fields(raw: str, errors: dict[str, str]) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        errors["custom_fields"] = f"Custom fields must be JSON: {exc.msg} at position {exc.pos}."
        return {}
    if not isinstance(value, dict):
        errors["custom_fields"] = 'Custom fields must be a JSON object, like {"device": "Quest 3"}.'
        return {}
    try:
        return parse.custom_fields(value)
    except Invalid as exc:
        errors["custom_fields"] = _friendly("custom_fields", exc)
        return {}


def _friendly(name: str, exc: Invalid) -> str:
    if name == "title" and "required" in exc.message:
        return "Please give the issue a short title."
    text = exc.message.removeprefix(f"{name}: ")
    return text[:1].upper() + text[1:] + "."  # not capitalize(): it lowercases the rest
