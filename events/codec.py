"""YAML that loads at JSON speed.

Event logs and the index are YAML block sequences whose items are JSON flow
mappings, one per line (``- {"seq": 1, ...}``). Any YAML parser reads them, a person
can read them, and we read them with orjson: PyYAML's C loader needs ~0.1 ms per
event, which would make a 100,000-event replay take most of a minute.

Characters that YAML treats as line breaks or rejects as non-printable (but JSON
passes through raw) are written as ``\\uXXXX`` escapes, which both grammars share,
so both parsers see the same text.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
import yaml

# Outside PyYAML's printable set, or a line break to YAML but not to JSON.
_YAML_HOSTILE = re.compile("[\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]")
# The same characters in UTF-8, to test a whole encoded block at once.
YAML_HOSTILE_UTF8 = re.compile(
    b"\x7f|\xc2[\x80-\x9f]|\xe2\x80[\xa8\xa9]|\xef\xbb\xbf|\xef\xbf[\xbe\xbf]"
)


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def dump_flow(obj: Any) -> bytes:
    """One JSON object, safe to embed as a YAML flow mapping on a single line."""
    raw = orjson.dumps(obj)
    if raw.isascii() and b"\x7f" not in raw:  # DEL is ASCII, and not printable to YAML
        return raw
    text = raw.decode()
    if _YAML_HOSTILE.search(text):
        text = _YAML_HOSTILE.sub(_escape, text)
    return text.encode()


def dump_item(obj: Any) -> bytes:
    return b"- " + dump_flow(obj) + b"\n"


class NotFlowLines(ValueError):
    """The text is not in our one-item-per-line shape (e.g. edited by hand)."""


def load_items(data: bytes) -> list[Any]:
    """Parse a block sequence of flow items; falls back to the C YAML loader."""
    items: list[Any] = []
    for line in data.splitlines():
        if not line or line.startswith(b"#"):
            continue
        if not line.startswith(b"- {"):
            return load_yaml_list(data)
        try:
            items.append(orjson.loads(line[2:]))
        except orjson.JSONDecodeError:
            return load_yaml_list(data)
    return items


def load_yaml_list(data: bytes) -> list[Any]:
    try:
        loaded = yaml.load(data, Loader=yaml.CSafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise NotFlowLines(f"not valid YAML{where}") from None
    if loaded is None:
        return []
    if not isinstance(loaded, list):
        raise NotFlowLines("expected a YAML list of mappings")
    return loaded


def dump_block_yaml(obj: dict[str, Any]) -> bytes:
    """Block YAML for people (issue files), with every scalar written as JSON.

    PyYAML's representer is pure Python even with the C emitter, and rendering issue
    files with it took a fifth of the CPU of a create. JSON scalars are valid YAML
    (double-quoted strings, true/false/null, numbers), so the layout stays block YAML
    and libyaml's loader reads it back exactly; a property test holds this.
    """
    if not obj:
        return b"{}\n"
    lines: list[str] = []
    _block(obj, 0, lines)
    return ("\n".join(lines) + "\n").encode()


def _scalar(value: Any) -> str:
    if isinstance(value, float) and not isinstance(value, bool):
        text = repr(value)
        if "e" in text and "." not in text.split("e")[0]:
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent if exponent[0] in '+-' else '+' + exponent}"
        return text  # YAML 1.1 floats need a dot: 1e+20 would read back as a string
    return dump_flow(value).decode()


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_YAML_WORDS = frozenset({"y", "n", "yes", "no", "true", "false", "on", "off", "null"})


def _key(key: Any) -> str:
    """A mapping key, bare when YAML cannot mistake it for anything but that string."""
    if isinstance(key, str) and _PLAIN_KEY.fullmatch(key) and key.lower() not in _YAML_WORDS:
        return key
    return _scalar(key)


def _block(value: dict[str, Any] | list[Any], indent: int, lines: list[str]) -> None:
    pad = " " * indent
    items = value.items() if isinstance(value, dict) else ((None, v) for v in value)
    for key, item in items:
        head = f"{pad}{_key(key)}:" if key is not None else f"{pad}-"
        if isinstance(item, dict | list) and item:
            if key is None and isinstance(item, dict):
                nested: list[str] = []
                _block(item, indent + 2, nested)
                lines.append(f"{pad}- {nested[0].lstrip()}")
                lines.extend(nested[1:])
            else:
                lines.append(head)
                _block(item, indent + 2, lines)
        else:
            empty = "{}" if isinstance(item, dict) else "[]"
            lines.append(f"{head} {empty if isinstance(item, dict | list) else _scalar(item)}")


def load_block_yaml(data: bytes) -> Any:
    return yaml.load(data, Loader=yaml.CSafeLoader)
