"""Drift charts for ``modelport drift --png/--html``: matplotlib (Agg, no display), imported only here.

One figure per version: PSI of every feature (and of the predictions) per window as lines, the
threshold as a dashed line, and the latest window's PSI as bars coloured by whether they drift. The HTML
page embeds the PNG and the tables, so it is one self-contained file to attach to a ticket.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

from modelport.optional import require

__all__ = ["drift_html", "drift_png"]


def drift_png(report: dict[str, Any]) -> bytes:
    """The report's chart as PNG bytes."""
    matplotlib = require("matplotlib", "charts", "a drift chart (--png/--html)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    versions = [v for v in report["versions"] if v["windows"]]
    if not versions:
        versions = [{"version": "—", "windows": []}]
    figure, axes = plt.subplots(
        len(versions), 2, figsize=(13, 4.2 * len(versions)), squeeze=False, width_ratios=(3, 2)
    )
    threshold = report["threshold"]
    for (trend, latest), entry in zip(axes, versions, strict=True):
        windows = entry["windows"]
        ticks = [_tick(w["end"], report["window_seconds"]) for w in windows]
        names = [f["feature"] for f in windows[0]["features"]] + ["prediction"] if windows else []
        palette = plt.get_cmap("tab20")
        trend.set_prop_cycle(color=[palette(i) for i in range(20)])
        for position, name in enumerate(names):
            values = [
                (w["prediction"] if name == "prediction" else w["features"][position])["psi"] for w in windows
            ]
            points = [float("nan") if v is None else v for v in values]
            style = "k--" if name == "prediction" else "-"
            trend.plot(range(len(windows)), points, style, marker="o", markersize=3, label=name)
        trend.axhline(threshold, color="red", linestyle=":", label=f"threshold {threshold:g}")
        trend.set_xticks(range(len(windows)), ticks, rotation=30, ha="right", fontsize=8)
        trend.set_ylabel("PSI")
        trend.set_title(f"{report['model']} v{entry['version']}: PSI per window")
        trend.legend(fontsize=7, ncol=2, loc="upper left")
        if windows:
            last = windows[-1]
            rows = [*last["features"], last["prediction"]]
            values = [0.0 if r["psi"] is None else r["psi"] for r in rows]
            colours = ["#c0392b" if r["drifting"] else "#2e86c1" for r in rows]
            latest.barh([r["feature"] for r in rows], values, color=colours)
            latest.axvline(threshold, color="red", linestyle=":")
            latest.invert_yaxis()
            latest.set_xlabel("PSI")
            latest.set_title(f"latest window ({last['rows']} rows); red: drifting", fontsize=10)
            latest.tick_params(axis="y", labelsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def drift_html(report: dict[str, Any]) -> str:
    """A self-contained page: the chart, then per version the latest window's table and live accuracy."""
    image = base64.b64encode(drift_png(report)).decode()
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Drift of {esc(report['model'])}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}th{background:#f4f4f4}"
        ".drift{background:#fadbd8}td:first-child{text-align:left}</style></head><body>",
        f"<h1>Drift of {esc(report['model'])}</h1>",
        f"<p>Windows of {report['window_seconds']:g} s until {esc(report['until'])}; a feature drifts at "
        f"PSI ≥ {report['threshold']:g} (windows need {report['min_rows']} rows).</p>",
        f"<img alt='drift chart' src='data:image/png;base64,{image}' style='max-width:100%'>",
    ]
    for entry in report["versions"]:
        parts.append(f"<h2>Version {entry['version']}</h2>")
        if not entry["profile"]:
            parts.append("<p>No reference profile: register again or run <code>modelport profile</code>.</p>")
            continue
        if not entry["windows"]:
            continue
        last = entry["windows"][-1]
        parts.append("<table><tr><th>feature</th><th>PSI</th><th>KS</th><th>rows</th><th>note</th></tr>")
        for row in [*last["features"], last["prediction"]]:
            css = " class='drift'" if row["drifting"] else ""
            parts.append(
                f"<tr{css}><td>{esc(row['feature'])}</td><td>{_number(row['psi'])}</td>"
                f"<td>{_number(row['ks'])}</td><td>{row['rows']}</td><td>{esc(row['note'])}</td></tr>"
            )
        parts.append("</table>")
        parts.append("<h3>Per window</h3><table><tr><th>window end (UTC)</th><th>rows</th>")
        parts.append("<th>drifting</th><th>labelled</th><th>accuracy</th></tr>")
        for window in entry["windows"]:
            scored = window.get("accuracy") or {}
            parts.append(
                f"<tr><td>{esc(window['end'][:19])}</td><td>{window['rows']}</td>"
                f"<td>{esc(', '.join(window['drifting']) or '—')}</td><td>{scored.get('rows', 0)}</td>"
                f"<td>{_number(scored.get('accuracy'))}</td></tr>"
            )
        parts.append("</table>")
    accuracy = report.get("accuracy", {}).get("versions", [])
    if accuracy:
        parts.append("<h2>Live accuracy</h2><table><tr><th>version</th><th>labelled rows</th>")
        parts.append("<th>accuracy</th><th>reference</th><th>log-loss</th></tr>")
        for row in accuracy:
            parts.append(
                f"<tr><td>{row['version']}</td><td>{row['rows']}</td><td>{_number(row.get('accuracy'))}</td>"
                f"<td>{_number(row.get('reference_accuracy'))}</td><td>{_number(row.get('log_loss'))}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _tick(end: str, width: float) -> str:
    """A window's end as a short label: seconds for short windows, dates for long ones."""
    if width < 60:
        return end[11:19]
    if width < 86_400:
        return end[5:16].replace("T", " ")
    return end[:10]


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"
