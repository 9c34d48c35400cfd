"""The public report form's contract: field names, extras, and friendly validation.

Scripts and the headset app post to /report, so the field names here are an API.
Any field the form does not know is kept in ``custom_fields`` under its own name.
An anonymous report has limits of its own (``ReportLimits``), tighter than the API's,
so one report's cost is bounded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from hydraissue import parse
from hydraissue.commands import CreateIssue
from hydraissue.errors import Invalid

FORM_FIELDS = ("title", "description", "project", "category", "reporter", "custom_fields")
FILE_FIELD = "attachments"
HONEYPOT = "website"  # hidden from people; bots fill it
TOKEN_FIELD = "form_token"  # the rendered form's one-time token
REMOVE_FIELD = "remove_kept"  # files kept from an earlier try that the reporter removes
_NOT_DATA = (HONEYPOT, FILE_FIELD, TOKEN_FIELD, REMOVE_FIELD)
MAX_FIELD_NAME = 100
ELLIPSIS = "…"


@dataclass(frozen=True, slots=True)
class ReportLimits:
    """What one anonymous report may hold (the API's own limits are wider)."""

    description: int = 20_000  # characters
    custom_fields_bytes: int = 8 * 1024  # the custom fields as JSON, extras included
    custom_fields: int = 30  # keys at the top level, extras included
    extra_fields: int = 20  # fields the form does not know


DEFAULT_LIMITS = ReportLimits()
MAX_EXTRA_FIELDS = DEFAULT_LIMITS.extra_fields


class FormInvalid(Invalid):
    """Several fields can be wrong at once; the form shows each message beside its field."""

    def __init__(self, errors: dict[str, str]) -> None:
        first = next(iter(errors))
        super().__init__(first, errors[first], {"fields": errors})
        self.errors = errors


def extra_fields(fields: Mapping[str, str]) -> list[str]:
    """Names the form does not know: they go to custom_fields under their own name."""
    return [
        name
        for name in fields
        if name not in FORM_FIELDS and name not in _NOT_DATA and not name.startswith(REMOVE_FIELD)
    ]


def is_spam(fields: Mapping[str, str]) -> bool:
    return bool(fields.get(HONEYPOT, "").strip())


def shorten_title(fields: Mapping[str, str]) -> dict[str, str]:
    """A machine's report with a title over the limit: the title cut with an ellipsis,
    the full title kept at the top of the description. Other fields as they were."""
    title = fields.get("title", "").strip()
    if len(title) <= parse.MAX_TITLE:
        return dict(fields)
    cut = title[: parse.MAX_TITLE - 1].rstrip() + ELLIPSIS
    description = fields.get("description", "")
    full = f"{title}\n\n{description}" if description.strip() else title
    return {**fields, "title": cut, "description": full}


def parse_report(fields: Mapping[str, str], limits: ReportLimits = DEFAULT_LIMITS) -> CreateIssue:
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    checks: dict[str, Callable[[Any], Any]] = {
        "title": parse.title,
        "description": lambda v: parse.text(v, "description", limit=limits.description),
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
    if len(extras) > limits.extra_fields:
        errors["custom_fields"] = (
            f"The report has {len(extras)} extra fields; at most {limits.extra_fields}."
        )
    for name in extras[: limits.extra_fields]:
        if len(name) > MAX_FIELD_NAME:
            errors["custom_fields"] = f"A field name is longer than {MAX_FIELD_NAME} characters."
            continue
        custom.setdefault(name, fields[name])
    if "custom_fields" not in errors:
        if len(custom) > limits.custom_fields:
            errors["custom_fields"] = (
                f"There are {len(custom)} custom fields; at most {limits.custom_fields}."
            )
        elif len(orjson.dumps(custom)) > limits.custom_fields_bytes:
            errors["custom_fields"] = (
                f"The custom fields are too long: at most {limits.custom_fields_bytes} "
                "bytes together."
            )
    if errors:
        raise FormInvalid(errors)
    return CreateIssue(custom_fields=custom, **values)


# Curly double quotes a phone's keyboard puts in; single ones stay (they are apostrophes).
_SMART_QUOTES = str.maketrans(
    {"“": '"', "”": '"', "„": '"', "‟": '"', "″": '"', "«": '"', "»": '"'}
)


def forgiving_json(raw: str) -> str:
    """JSON as a person types it on a phone, made strict: curly double quotes made
    straight, and a trailing comma before ``}`` or ``]`` dropped (outside strings)."""
    text = raw.translate(_SMART_QUOTES)
    out: list[str] = []
    in_string = escaped = False
    for index, ch in enumerate(text):
        if in_string:
            escaped = not escaped and ch == "\\"
            if ch == '"' and not escaped:
                in_string = False
            out.append(ch)
            continue
        if ch == '"':
            in_string = True
        elif ch == ",":
            rest = text[index + 1 :].lstrip()
            if rest[:1] in ("}", "]"):
                continue
        out.append(ch)
    return "".join(out)


_PLAIN = {
    "unexpected character, expected a string key": "a field name must be in double quotes",
    "unexpected end of data": "it ends too early",
    "trailing comma is not allowed": "there is a comma too many",
}


def _plain(message: str) -> str:
    message = message.rstrip(".")
    return next((plain for raw, plain in _PLAIN.items() if raw in message), message)


def _where(text: str, pos: int) -> str:
    """'at line 2, character 5 (the “x”)' for an error position in what was typed."""
    before = text[:pos]
    line = before.count("\n") + 1
    column = pos - (before.rfind("\n") + 1) + 1
    at = f"line {line}, character {column}" if "\n" in text else f"character {column}"
    if pos >= len(text):
        return f"at the end ({at}): something is missing, such as a closing }} or a quote"
    return f"at {at} (the “{text[pos]}”)"


def _custom_fields(raw: str, errors: dict[str, str]) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        value = orjson.loads(raw)
        strict = raw
    except orjson.JSONDecodeError:
        strict = forgiving_json(raw)
        try:
            value = orjson.loads(strict)
        except orjson.JSONDecodeError as exc:
            errors["custom_fields"] = (
                f'Custom fields must be JSON, like {{"device": "Quest 3"}}: {_plain(exc.msg)} '
                f"{_where(strict, exc.pos)}."
            )
            return {}
    if not isinstance(value, dict):
        errors["custom_fields"] = 'Custom fields must be a JSON object, like {"device": "Quest 3"}.'
        return {}
    try:
        parse.exact_numbers(strict, value, "custom_fields")
        return parse.custom_fields(value)
    except Invalid as exc:
        errors["custom_fields"] = _friendly("custom_fields", exc)
        return {}


def _friendly(name: str, exc: Invalid) -> str:
    if name == "title" and "required" in exc.message:
        return "Please give the issue a short title."
    text = exc.message.removeprefix(f"{name}: ")
    return text[:1].upper() + text[1:] + "."  # not capitalize(): it lowercases the rest
