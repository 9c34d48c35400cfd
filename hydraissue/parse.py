"""Turn untrusted JSON (or form) values into commands, naming the field at fault.

Shape and enum checks live here; rules that depend on current state (transitions,
ETags) live in ``decide``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
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
    """An id from a URL: ASCII digits only ('²'.isdigit() is true), at most 18 of them,
    in its one canonical form: ``01`` is not ``1`` (no aliases of one issue's address)."""
    if raw.isascii() and raw.isdigit() and len(raw) <= 18 and (raw == "0" or raw[0] != "0"):
        return int(raw)
    return None


INT_RANGE = (-(2**63), 2**64 - 1)  # what orjson reads as an int, and what the logs keep


def _rounded(value: Any) -> bool:
    """Whether a parsed value holds a whole float big enough to be a rounded integer
    (iterative: a body nested thousands deep must not exhaust the stack)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if item.is_integer() and not INT_RANGE[0] < item < INT_RANGE[1]:
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def exact_numbers(raw: bytes | str, value: Any, field: str = "body") -> None:
    """Refuse an integer the JSON parser could only keep as a rounded float.

    orjson keeps integers from -2^63 to 2^64-1 exactly and turns longer ones into
    floats; such a number is refused (400) rather than silently rounded. A float
    written as one (``1e20``, ``3.0``) is left alone. Costs nothing unless a big whole
    float is there.
    """
    if not _rounded(value):
        return

    def check(text: str) -> int:
        digits = text.lstrip("-")
        number = int(text) if len(digits) <= 40 else None
        if number is None or not INT_RANGE[0] <= number <= INT_RANGE[1]:
            shown = text if len(text) <= 30 else f"{text[:27]}..."
            raise Invalid(
                field,
                f"the integer {shown} is too large to keep exactly (integers must be between "
                f"-2^63 and 2^64-1); send it as a string",
                {"field": field, "number": shown},
            )
        return number

    try:
        json.loads(raw, parse_int=check)
    except RecursionError:
        raise Invalid(field, f"is nested more than {MAX_DEPTH} levels deep") from None


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


def reject_unknown(names: Iterable[str], allowed: Sequence[str], *, query: bool = False) -> None:
    """The first name not in ``allowed`` (a body's field, or with ``query`` a query
    parameter) is a 400 naming it and listing the accepted ones: never ignored. (The
    usual case, nothing unknown, builds no set: a list query is checked per request.)"""
    unknown = sorted({name for name in names if name not in allowed})
    if not unknown:
        return
    if query:
        accepted = ", ".join(allowed) if allowed else "none"
        message = f"unknown query parameter; accepted: {accepted} (names are case-sensitive)"
    else:
        message = f"unknown field; allowed fields are {', '.join(allowed)}"
    raise Invalid(unknown[0], message, {"field": unknown[0], "allowed": list(allowed)})


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
    """A status, or an alias of one (``resolved`` is ``done``); the error lists both."""
    if isinstance(value, str) and value in STATUS_ALIASES:
        return STATUS_ALIASES[value]
    accepted = (*STATUSES, *STATUS_ALIASES)
    if not isinstance(value, str) or value not in STATUSES:
        aliases = ", ".join(f"{a} (= {s})" for a, s in STATUS_ALIASES.items())
        raise Invalid(
            "status",
            f"must be one of {', '.join(STATUSES)}, or {aliases}; got {value!r}",
            {"field": "status", "allowed": list(accepted), "got": value},
        )
    return value


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
    reject_unknown(body, CREATE_FIELDS)
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
    reject_unknown(body, UPDATE_FIELDS)
    if not body:
        raise Invalid("body", f"names no field to change; use any of {', '.join(UPDATE_FIELDS)}")
    changes = {name: _UPDATERS[name](value) for name, value in body.items()}
    return UpdateIssue(issue_id=issue_id, changes=changes, if_match=if_match)


def set_plan(issue_id: int, body: Any, if_match: str | None = None) -> UpdateIssue:
    body = _object(body)
    reject_unknown(body, ("plan", "status"))
    if "plan" not in body:
        raise Invalid("plan", "is required")
    changes: dict[str, Any] = {"plan": _UPDATERS["plan"](body["plan"])}
    if body.get("status") is not None:
        changes["status"] = status(body["status"])
    return UpdateIssue(issue_id=issue_id, changes=changes, if_match=if_match)


def add_comment(issue_id: int, body: Any) -> AddComment:
    body = _object(body)
    reject_unknown(body, ("author", "text", "body"))
    raw_text = body.get("text", body.get("body"))
    field = "text" if "text" in body or "body" not in body else "body"
    return AddComment(
        issue_id=issue_id,
        author=optional_text(body.get("author"), "author") or "anonymous",
        text=text(raw_text, field, required=True),
    )


def record_nim_action(issue_id: int, body: Any) -> RecordNimAction:
    body = _object(body)
    reject_unknown(body, ("name", "action"))
    return RecordNimAction(
        issue_id=issue_id,
        name=text(body.get("name"), "name", required=True, limit=MAX_SHORT).strip(),
        action=text(body.get("action"), "action", required=True, limit=MAX_SHORT).strip(),
    )


# -- multipart parts: RFC 7578 / RFC 6266 Content-Disposition -----------------------

PART_PARAMS = ("name", "filename", "filename*")


class BadPart(ValueError):
    """A multipart part whose Content-Disposition names no field we can read."""


def _clean_header(text: str) -> str:
    """Header text as the HTTP parser decoded it (UTF-8, bad bytes as surrogates)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _html_unescape(value: str) -> str:
    """Browsers send ``"``, CR and LF in names as %22, %0D, %0A (the HTML standard)."""
    for encoded, plain in (("%22", '"'), ("%0D", "\r"), ("%0A", "\n")):
        value = value.replace(encoded, plain).replace(encoded.lower(), plain)
    return value


def _quoted(text: str, start: int) -> tuple[str, int]:
    """The quoted string opening at ``start``; returns (value, index after it).

    A quote that is followed by anything but ``;`` or the end is taken as part of the
    value (``filename="a"b.txt"`` from a client that did not escape it); ``\\"`` and
    ``\\\\`` are escapes, any other backslash is kept (Windows paths).
    """
    out: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in '"\\':
            out.append(text[i + 1])
            i += 2
            continue
        if ch == '"':
            rest = text[i + 1 :].lstrip()
            if not rest or rest.startswith(";"):
                return "".join(out), i + 1
        out.append(ch)
        i += 1
    raise BadPart("a quoted value in its Content-Disposition header is not closed")


def _ext_value(raw: str) -> str:
    """RFC 8187 ``charset'lang'percent-encoded`` (``filename*``)."""
    charset, sep, rest = raw.partition("'")
    _, sep2, encoded = rest.partition("'")
    if not sep or not sep2 or charset.strip().lower() not in ("utf-8", "iso-8859-1"):
        raise BadPart(f"filename* must be UTF-8''<percent-encoded name>, got {raw[:60]!r}")
    try:
        data = bytearray()
        i = 0
        while i < len(encoded):
            if encoded[i] == "%":
                data.append(int(encoded[i + 1 : i + 3], 16))
                i += 3
            else:
                data += encoded[i].encode("utf-8")
                i += 1
        return data.decode("utf-8" if charset.strip().lower() == "utf-8" else "latin-1")
    except (ValueError, UnicodeDecodeError):
        raise BadPart(f"filename* is not valid percent-encoded UTF-8: {raw[:60]!r}") from None


def form_part(header: str | None) -> tuple[str, str | None]:
    """(field name, file name or None) of a multipart/form-data part.

    Reads what browsers and tools really send: ``;``, quotes and non-ASCII inside a
    quoted file name, ``%22``-escaped quotes, an unquoted name with ``;`` in it, and
    ``filename*`` (which wins over ``filename``). Raises ``BadPart`` saying what is
    wrong when the part cannot be named; nothing is guessed.
    """
    if header is None or not header.strip():
        raise BadPart("has no Content-Disposition header")
    text = _clean_header(header)
    kind, _, rest = text.partition(";")
    if kind.strip().lower() != "form-data":
        raise BadPart(f"has Content-Disposition {kind.strip()[:40]!r}; expected form-data")
    params: dict[str, str] = {}
    last: str | None = None  # the previous parameter, when its value was a bare token
    i = 0
    while i < len(rest):
        if rest[i] in "; \t":
            i += 1
            continue
        end = rest.find(";", i)
        end = len(rest) if end < 0 else end
        eq = rest.find("=", i, end)
        key = rest[i:eq].strip().lower() if eq >= 0 else ""
        if key not in PART_PARAMS:
            # not a parameter of ours: part of a bare value with ";" in it, or ignored
            if last is not None:
                params[last] += ";" + rest[i:end]
            i = end
            continue
        j = eq + 1
        while j < len(rest) and rest[j] in " \t":
            j += 1
        if j < len(rest) and rest[j] == '"':
            value, i = _quoted(rest, j)
            value = _html_unescape(value)
            last = None
        else:
            value, i = rest[j:end].strip(), end
            last = key if key != "filename*" else None
        params.setdefault(key, value)
        if params[key] is not value:
            last = None  # a repeated parameter: the first one counts
    name = params.get("name")
    if name is None:
        raise BadPart("has no name in its Content-Disposition header")
    if "filename*" in params:
        return name, _ext_value(params["filename*"].strip())
    return name, params.get("filename")
