"""Charts for the admin pages, drawn on the server as inline SVG.

No script, no library, no request to anyone: each function returns the ``<svg>`` as
Markup, every label escaped. The page's CSP allows no ``style`` attribute, so looks
come from classes in ``/static/admin.css`` (``fill`` attributes are the fallback).
Each chart is ``role="img"`` with a ``<title>`` and a ``<desc>`` that states every
number; the pages also show the numbers in a table next to it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH = 640  # of the column charts; bar charts are narrower (phones scale them less)
BARS_WIDTH = 480
BAR = 18  # height of one horizontal bar
ROW = 28  # its row
LABEL_W = 150  # the column of labels left of the bars
CHAR_W = 7.2  # about the width of a character at the charts' 13 px
LABEL_CHARS = 19
PALETTE = ("#818cf8", "#22c55e", "#fbbf24", "#f87171")
TEXT = "#ededed"
MUTED = "#a1a1aa"
GRID = "#2a2a30"


def _id(raw: str) -> str:
    cleaned = re.sub(r"[^a-z0-9-]", "-", raw.lower()).strip("-")
    return cleaned or "chart"


def number(value: float) -> str:
    """12, 0.5, 3.25: whole numbers without a point, others as short as they go."""
    if value == int(value):
        return str(int(value))
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _short(label: str, limit: int = LABEL_CHARS) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"


def _nice_max(value: float) -> float:
    """The top of an axis: 1, 2 or 5 times a power of ten, at least ``value``."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return float(step * power)
    return float(10 * power)  # pragma: no cover - the loop always returns


def _open(chart_id: str, height: int, title: str, desc: str, kind: str, width: int = WIDTH) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart {kind}" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-labelledby="{chart_id}-title {chart_id}-desc">'
        f'<title id="{chart_id}-title">{escape(title)}</title>'
        f'<desc id="{chart_id}-desc">{escape(desc)}</desc>'
    )


def _empty(chart_id: str, title: str, text: str) -> Markup:
    height = ROW * 2
    return Markup(
        _open(chart_id, height, title, text, "bars", BARS_WIDTH)
        + f'<text x="{BARS_WIDTH // 2}" y="{ROW}" text-anchor="middle" class="muted" '
        f'fill="{MUTED}">{escape(text)}</text></svg>'
    )


def bars(
    chart_id: str,
    title: str,
    items: Sequence[tuple[str, float]],
    *,
    unit: str = "",
    top: float | None = None,
    values: Sequence[str] | None = None,
    empty: str = "No data yet.",
) -> Markup:
    """A horizontal bar per (label, value); ``values``: the text shown for each (else
    the number and ``unit``); ``top``: the value of a full bar (else the largest)."""
    chart_id = _id(chart_id)
    if not items:
        return _empty(chart_id, title, empty)
    shown = list(values) if values is not None else [f"{number(v)}{unit}" for _, v in items]
    desc = "; ".join(f"{label}: {text}" for (label, _), text in zip(items, shown, strict=True))
    height = ROW * len(items) + 8
    scale = top if top is not None and top > 0 else max(max(v for _, v in items), 1e-9)
    value_w = 12 + CHAR_W * max(len(text) for text in shown)
    room = max(60.0, BARS_WIDTH - LABEL_W - value_w)
    parts = [_open(chart_id, height, title, desc, "bars", BARS_WIDTH)]
    for i, ((label, value), text) in enumerate(zip(items, shown, strict=True)):
        y = 4 + i * ROW
        length = max(0.0, min(1.0, value / scale)) * room
        mid = y + BAR / 2 + 5
        parts.append(
            f'<g class="bar"><title>{escape(label)}: {escape(text)}</title>'
            f'<text x="{LABEL_W - 8}" y="{mid:.0f}" text-anchor="end" class="label" '
            f'fill="{TEXT}">{escape(_short(label))}</text>'
            f'<rect x="{LABEL_W}" y="{y + (ROW - BAR) // 2}" width="{length:.1f}" height="{BAR}" '
            f'rx="3" class="s0" fill="{PALETTE[0]}"/>'
            f'<text x="{LABEL_W + length + 6:.1f}" y="{mid:.0f}" class="value" '
            f'fill="{MUTED}">{escape(text)}</text></g>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def columns(
    chart_id: str,
    title: str,
    categories: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
    *,
    ticks: Sequence[str] | None = None,
) -> Markup:
    """Grouped vertical bars: one group per category (a week, say), one bar per series,
    a legend above. ``ticks``: the text under each group (else the category)."""
    chart_id = _id(chart_id)
    if not categories or not series:
        return _empty(chart_id, title, "No data yet.")
    labels = list(ticks) if ticks is not None else list(categories)
    per_group = [
        f"{category}: " + ", ".join(f"{name} {number(values[i])}" for name, values in series)
        for i, category in enumerate(categories)
    ]
    desc = "; ".join(per_group)
    height, legend_h, axis_w, bottom = 260, 28, 40, 34
    plot_top, plot_bottom = legend_h + 8, height - bottom
    plot_h = plot_bottom - plot_top
    top = _nice_max(max((max(v, default=0) for _, v in series), default=0))
    group_w = (WIDTH - axis_w - 8) / len(categories)
    bar_w = max(2.0, min(22.0, (group_w - 6) / len(series)))
    parts = [_open(chart_id, height, title, desc, "columns")]
    x = axis_w
    for i, (name, _) in enumerate(series):  # the legend
        colour = PALETTE[i % len(PALETTE)]
        parts.append(
            f'<rect x="{x}" y="8" width="12" height="12" rx="2" class="s{i}" fill="{colour}"/>'
            f'<text x="{x + 18}" y="19" class="label" fill="{TEXT}">{escape(name)}</text>'
        )
        x += 30 + 9 * len(name)
    for fraction in (0.0, 0.5, 1.0):  # the grid, and the axis values
        y = plot_bottom - fraction * plot_h
        parts.append(
            f'<line x1="{axis_w}" x2="{WIDTH}" y1="{y:.1f}" y2="{y:.1f}" class="grid" '
            f'stroke="{GRID}"/>'
            f'<text x="{axis_w - 6}" y="{y + 4:.1f}" text-anchor="end" class="value" '
            f'fill="{MUTED}">{escape(number(round(top * fraction, 2)))}</text>'
        )
    for i in range(len(categories)):
        left = axis_w + i * group_w + (group_w - bar_w * len(series)) / 2
        group = [f"<g><title>{escape(per_group[i])}</title>"]
        for s, (_, values) in enumerate(series):
            value = values[i]
            h = plot_h * value / top
            group.append(
                f'<rect x="{left + s * bar_w:.1f}" y="{plot_bottom - h:.1f}" '
                f'width="{bar_w - 1:.1f}" height="{h:.1f}" class="s{s}" '
                f'fill="{PALETTE[s % len(PALETTE)]}"/>'
            )
        centre = axis_w + (i + 0.5) * group_w
        group.append(
            f'<text x="{centre:.1f}" y="{height - 14}" text-anchor="middle" class="tick" '
            f'fill="{MUTED}">{escape(labels[i])}</text></g>'
        )
        parts.extend(group)
    parts.append("</svg>")
    return Markup("".join(parts))
