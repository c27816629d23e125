"""Line charts for the console as inline SVG, drawn on the server: no chart library, no script.

The console's Content-Security-Policy allows no inline style and no script, so a chart is markup only:
lines, points and labels whose colours come from classes in ``console.css`` (``series-0`` … ``series-9``).
Each chart carries a ``<title>`` and a ``<desc>`` and is followed, in the templates, by the table of its
numbers — the chart is for the eye, the table for screen readers and for copying.

Values are plain floats (``None`` for a missing point: the line breaks there). Every label is escaped
here, because the markup is returned as already-safe text to Jinja2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

__all__ = ["Series", "line_chart"]

_WIDTH, _HEIGHT = 720, 260
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 36, 16, 44
_LEGEND_ROW = 16  # pixels per row of the legend below the plot
_COLOURS = 10  # series-0 … series-9 in console.css; more series reuse them
_MAX_TICKS = 12


@dataclass(frozen=True, slots=True)
class Series:
    """One line: its name (the legend) and one value per x position."""

    name: str
    values: tuple[float | None, ...]


def _number(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000 or magnitude < 0.01:
        return f"{value:.2g}"
    return f"{value:.3g}"


def _scale(low: float, high: float) -> tuple[float, float]:
    """A y range that contains [low, high] with a little room; a flat line gets a range around it."""
    if math.isclose(low, high):
        pad = abs(low) * 0.1 or 1.0
        return low - pad, high + pad
    pad = (high - low) * 0.08
    return (0.0 if low >= 0 and low - pad < 0 else low - pad), high + pad


def _legend(series: list[Series]) -> list[tuple[int, int, str]]:
    """``(x, row, name)`` of each series' legend entry, wrapped to the chart's width (20 at most)."""
    entries: list[tuple[int, int, str]] = []
    offset, row = _LEFT, 0
    for line in series[: _COLOURS * 2]:
        name = line.name[:28]
        width = 24 + 7 * len(name)
        if offset + width > _WIDTH and offset > _LEFT:
            offset, row = _LEFT, row + 1
        entries.append((offset, row, name))
        offset += width
    return entries


def line_chart(
    title: str,
    labels: list[str],
    series: list[Series],
    *,
    threshold: float | None = None,
    threshold_label: str = "threshold",
    y_label: str = "",
) -> Markup:
    """An SVG line chart of ``series`` over the x positions named by ``labels``; an optional dashed
    horizontal ``threshold``. Returns markup for a template (``{{ chart }}``)."""
    points = [v for s in series for v in s.values if v is not None and math.isfinite(v)]
    described = escape(f"{title}: {len(series)} series over {len(labels)} points")
    legend = _legend(series)
    height = _HEIGHT + _LEGEND_ROW * max(0, (legend[-1][1] if legend else 0))
    head = (
        f'<svg class="chart" viewBox="0 0 {_WIDTH} {height}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title><desc>{described}</desc>"
    )
    if not points or not labels:
        empty = f'<text class="empty" x="{_WIDTH // 2}" y="{_HEIGHT // 2}">no data yet</text></svg>'
        return Markup(head + empty)  # noqa: S704 -- every text in it was escaped above
    if threshold is not None and math.isfinite(threshold):
        points.append(threshold)
    low, high = _scale(min(points), max(points))
    inner_w, inner_h = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM
    count = len(labels)

    def x(index: int) -> float:
        return _LEFT + (inner_w * index / (count - 1) if count > 1 else inner_w / 2)

    def y(value: float) -> float:
        return _TOP + inner_h * (1 - (value - low) / (high - low))

    parts = [head, f'<g class="axis"><line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{_TOP + inner_h}"/>']
    parts.append(f'<line x1="{_LEFT}" y1="{_TOP + inner_h}" x2="{_LEFT + inner_w}" y2="{_TOP + inner_h}"/>')
    for step in range(5):  # five y ticks
        level = low + (high - low) * step / 4
        parts.append(f'<text class="y" x="{_LEFT - 6}" y="{y(level) + 4:.1f}">{_number(level)}</text>')
    every = max(1, math.ceil(count / _MAX_TICKS))
    for index in range(0, count, every):
        tick = escape(labels[index][:24])
        parts.append(f'<text class="x" x="{x(index):.1f}" y="{_TOP + inner_h + 16}">{tick}</text>')
    if y_label:
        parts.append(f'<text class="unit" x="4" y="{_TOP - 4 + 12}">{escape(y_label[:40])}</text>')
    parts.append("</g>")
    if threshold is not None and math.isfinite(threshold):
        at = y(threshold)
        parts.append(
            f'<g class="threshold"><line x1="{_LEFT}" y1="{at:.1f}" x2="{_LEFT + inner_w}" y2="{at:.1f}"/>'
            f'<text x="{_LEFT + inner_w - 4}" y="{at - 4:.1f}">{escape(threshold_label)}</text></g>'
        )
    for position, line in enumerate(series):
        css = f"series-{position % _COLOURS}"
        runs: list[list[str]] = [[]]
        dots: list[str] = []
        for index, value in enumerate(line.values[:count]):
            if value is None or not math.isfinite(value):
                runs.append([])
                continue
            runs[-1].append(f"{x(index):.1f},{y(value):.1f}")
            dots.append(
                f'<circle cx="{x(index):.1f}" cy="{y(value):.1f}" r="3">'
                f"<title>{escape(line.name)} at {escape(labels[index])}: {_number(value)}</title></circle>"
            )
        lines = "".join(f'<polyline points="{" ".join(run)}"/>' for run in runs if len(run) > 1)
        parts.append(f'<g class="line {css}">{lines}{"".join(dots)}</g>')
    for (offset, row, name), position in zip(legend, range(len(legend)), strict=True):
        css = f"series-{position % _COLOURS}"
        at = _HEIGHT - 10 + row * _LEGEND_ROW
        parts.append(
            f'<g class="legend {css}"><rect x="{offset}" y="{at - 9}" width="10" height="10"/>'
            f'<text x="{offset + 14}" y="{at}">{escape(name)}</text></g>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 -- every label and name was escaped as it was added
