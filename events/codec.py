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


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def dump_flow(obj: Any) -> bytes:
    """One JSON object, safe to embed as a YAML flow mapping on a single line."""
    raw = orjson.dumps(obj)
    if raw.isascii():
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


def dump_block_yaml(obj: Any) -> bytes:
    """Human-facing YAML (issue files, config) through libyaml's emitter."""
    text: str = yaml.dump(
        obj, Dumper=yaml.CSafeDumper, sort_keys=False, allow_unicode=True, width=100
    )
    return text.encode()


def load_block_yaml(data: bytes) -> Any:
    return yaml.load(data, Loader=yaml.CSafeLoader)
