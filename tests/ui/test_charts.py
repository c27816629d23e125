"""The console's server-side SVG charts (ui/charts.py): escaped text, gaps for missing points, a legend
that wraps rather than runs off the chart, and nothing a strict CSP would block."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

from modelport.ui.charts import Series, line_chart

SVG = "{http://www.w3.org/2000/svg}"


def test_labels_and_names_are_escaped_and_the_markup_parses() -> None:
    hostile = '<script>alert(1)</script>"'
    chart = str(line_chart(hostile, [hostile, "b"], [Series(hostile, (1.0, 2.0))], threshold=1.5))
    assert "<script>" not in chart and "&lt;script&gt;" in chart
    root = ET.fromstring(chart)  # well-formed: every text escaped, every element closed
    title = root.find(f"{SVG}title")
    assert title is not None and title.text == hostile
    assert "style=" not in chart and "<script" not in chart  # classes only: the console's CSP holds


def test_a_missing_point_breaks_the_line_and_non_finite_values_are_skipped() -> None:
    chart = str(line_chart("t", ["a", "b", "c", "d", "e"], [Series("s", (1.0, 2.0, None, 3.0, math.nan))]))
    assert chart.count("<polyline") == 1  # a, b joined; d alone is a point, not a line
    assert chart.count("<circle") == 3


def test_the_legend_wraps_and_the_chart_grows_to_hold_it() -> None:
    few = str(line_chart("t", ["a", "b"], [Series("one", (1.0, 2.0))]))
    many = str(line_chart("t", ["a", "b"], [Series(f"feature_number_{i}", (1.0, 2.0)) for i in range(13)]))
    height = [int(re.search(r'viewBox="0 0 720 (\d+)"', c).group(1)) for c in (few, many)]  # type: ignore[union-attr]
    assert height[1] > height[0]
    xs = [float(x) for x in re.findall(r'<g class="legend[^"]*"><rect x="([\d.]+)"', many)]
    assert len(xs) == 13 and max(xs) < 720


def test_no_data_says_so() -> None:
    assert "no data yet" in str(line_chart("t", [], []))
    assert "no data yet" in str(line_chart("t", ["a"], [Series("s", (None,))]))
