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
from collections.abc import Callable
from functools import lru_cache
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


# YAML 1.1 (PyYAML) reads a float only with a dot in its mantissa: orjson's ``1e+20``
# would load as the string "1e+20". A number token with an exponent and no dot gets
# ``.0``; the pattern matches whole JSON strings first, so text inside them is kept.
_DOTLESS_EXPONENT = re.compile(rb"\d[eE][-+]\d")
_STRING_OR_DOTLESS_FLOAT = re.compile(rb'"(?:[^"\\]|\\.)*"|(?<![\d.])(-?\d+)([eE][-+]\d+)')


def needs_care(raw: bytes) -> bool:
    """Whether plain orjson output needs ``dump_flow``'s escapes or float fix."""
    if raw.isascii():
        if b"\x7f" in raw:
            return True
    elif YAML_HOSTILE_UTF8.search(raw):
        return True
    # A float in exponent form: cheap substring tests first, the regex only then.
    if b"e+" in raw or b"e-" in raw or b"E+" in raw or b"E-" in raw:
        return bool(_DOTLESS_EXPONENT.search(raw))
    return False


def _dotted(match: re.Match[bytes]) -> bytes:
    if match.group(1) is None:
        return match.group(0)
    return match.group(1) + b".0" + match.group(2)


def dump_flow(obj: Any) -> bytes:
    """One JSON object, safe to embed as a YAML flow mapping on a single line: YAML
    reads the same values JSON does (floats included)."""
    raw = orjson.dumps(obj)
    if _DOTLESS_EXPONENT.search(raw):
        raw = _STRING_OR_DOTLESS_FLOAT.sub(_dotted, raw)
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
        if not (line.startswith(b"- {") or line.startswith(b"- [")):
            return load_yaml_list(data)
        try:
            items.append(orjson.loads(line[2:]))
        except orjson.JSONDecodeError:
            return load_yaml_list(data)
    return items


def load_flow_items(
    data: bytes, convert: Callable[[Any], Any] | None = None, chunk: int = 4096
) -> list[Any]:
    """``load_items`` for a long block of our own lines, ``convert`` applied to each
    item: one orjson call per ``chunk`` lines (a 100,000-row index loads in a fraction
    of the time), each chunk's parsed objects freed before the next, so loading does not
    peak at several times what it keeps. The careful path for anything else."""
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    if lines and all(line[:2] == b"- " and line[2:3] in (b"{", b"[") for line in lines):
        out: list[Any] = []
        try:
            for start in range(0, len(lines), chunk):
                part = lines[start : start + chunk]
                items = orjson.loads(b"[" + b",".join([line[2:] for line in part]) + b"]")
                out.extend(map(convert, items) if convert is not None else items)
            return out
        except orjson.JSONDecodeError:
            pass
    items = load_items(data)
    return list(map(convert, items)) if convert is not None else items


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


def dump_mapping_yaml(obj: dict[str, Any]) -> bytes:
    """Block YAML for people (issue files): one line per key, its value as a flow
    collection or scalar (JSON, as above), and a list of mappings one item per line.

    A few orjson calls per file: PyYAML's representer is Python even with the C
    emitter and costs 30 times as much, which decides whether a replay of 100,000
    issues fits in its target. libyaml reads the output back exactly (property test).
    """
    if not obj:
        return b"{}\n"
    fast = _mapping_lines(obj, orjson.dumps)
    if not needs_care(fast):  # one scan of the whole text instead of one per value
        return fast
    return _mapping_lines(obj, dump_flow)


def _mapping_lines(obj: dict[str, Any], dump: Callable[[Any], bytes]) -> bytes:
    parts: list[bytes] = []
    for key, value in obj.items():
        head = _key_head(key) if isinstance(key, str) else _key(key).encode() + b":"
        if type(value) is list and value and all(type(v) is dict for v in value):
            parts.append(head + b"\n- " + b"\n- ".join([dump(item) for item in value]))
        else:
            parts.append(head + b" " + dump(value))
    return b"\n".join(parts) + b"\n"


@lru_cache(maxsize=4096)
def _key_head(key: str) -> bytes:
    return _key(key).encode() + b":"


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_YAML_WORDS = frozenset({"y", "n", "yes", "no", "true", "false", "on", "off", "null"})


def _key(key: Any) -> str:
    """A mapping key, bare when YAML cannot mistake it for anything but that string."""
    if isinstance(key, str) and _PLAIN_KEY.fullmatch(key) and key.lower() not in _YAML_WORDS:
        return key
    return dump_flow(key).decode()


def load_block_yaml(data: bytes) -> Any:
    return yaml.load(data, Loader=yaml.CSafeLoader)
