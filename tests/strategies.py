"""Hypothesis strategies the property tests share: hostile text and JSON-ish values.

One set of characters and strings for every suite, so a case found hard for one
(a YAML line break, a quote, a ZWJ emoji) is thrown at all of them. The ``yaml_*``
strategies add floats in exponent form on purpose.
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import strategies as st

from hydraissue.model import STATUSES

# -- text ----------------------------------------------------------------------------

# Characters that break line-based or YAML/JSON-ish formats, or that codecs, terminals
# and ``str.strip``/``splitlines`` treat specially: YAML and Unicode line breaks, C0/C1
# controls, BOM and non-characters, surrogate-range edges, non-BMP code points, a ZWJ,
# and YAML's indicator characters.
HOSTILE = [
    "\u2028",
    "\u2029",
    "\x85",
    "\x7f",
    "\x80",
    "\x9f",
    "\x00",
    "\x1b",
    "\ufeff",
    "\ufffe",
    "\uffff",
    "\ufffd",
    "\u00a0",
    "\ud7ff",
    "\ue000",
    "😀",
    "\U0010fffd",
    "\u200d",
    '"',
    "'",
    "\\",
    "\n",
    "\r",
    "\t",
    ":",
    "#",
    "-",
    "{",
    "}",
    "[",
    "]",
    ",",
    "&",
    "*",
    "!",
    "|",
    ">",
    "%",
    "@",
    "`",
    " ",
]
# Whole values YAML 1.1 would read as something other than a string if unquoted.
TRICKY = ["yes", "No", "on", "null", "~", "", "1e3", "0x1F", "0o17", "1_000", "2024-01-01"]
TRICKY += ["12:30:00", "<<", "=", "-", "---", "...", ".inf", ".NaN", "true", "  lead"]
# A ZWJ sequence: one glyph, several code points (cut or counted wrongly by naive code).
TRICKY += ["👩\u200d💻"]

chars = st.one_of(st.sampled_from(HOSTILE), st.characters(codec="utf-8"))
texts = st.one_of(st.text(chars, max_size=40), st.sampled_from(TRICKY))
optional_texts = st.one_of(st.none(), texts)
non_blank = texts.filter(lambda s: s.strip() != "")
# Titles as a client may send them: mostly valid, sometimes ones parse must refuse.
titles = st.one_of(non_blank, st.sampled_from(["", " \u2028 "]))
status_names = st.sampled_from([*STATUSES, "resolved"])  # "resolved" is an alias

# -- JSON values ---------------------------------------------------------------------

json_ints = st.integers(-(2**63), 2**64 - 1)  # all orjson writes: i64 and u64
json_floats = st.floats(allow_nan=False, allow_infinity=False)


def _json_tree(scalars: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
        max_leaves=12,
    )


json_scalars = st.one_of(st.none(), st.booleans(), json_ints, json_floats, texts)
json_values = _json_tree(json_scalars)
custom_fields = st.dictionaries(texts, json_values, max_size=4)

# -- JSON values a YAML 1.1 reader reads back alike ----------------------------------

# Every JSON value: the codec writes floats the way YAML 1.1 reads them too (``1e+20``
# becomes ``1.0e+20``), so the YAML checks use the unrestricted strategies. Hand-picked
# floats make sure the exponent forms are always among the draws.
yaml_floats = st.one_of(
    json_floats, st.sampled_from([1e20, 1e-7, 5e-324, -2.5e-10, 1e16, 1.5e300, -0.0])
)
yaml_scalars = st.one_of(st.none(), st.booleans(), json_ints, yaml_floats, texts)
yaml_values = _json_tree(yaml_scalars)
yaml_objects = st.dictionaries(texts, yaml_values, max_size=5)


# -- comparing -----------------------------------------------------------------------


def strict(value: Any) -> bytes:
    """Comparable JSON bytes: tells True from 1 and 1 from 1.0, which == does not."""
    return orjson.dumps(value)
