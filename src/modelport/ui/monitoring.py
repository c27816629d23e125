"""The console's monitoring page, ``/ui/models/{name}/monitoring``: how each version's live traffic has
moved from its reference over the last windows (PSI per feature and of the predictions, as a chart
followed by its table; PSI and KS of the latest window), live accuracy beside the reference accuracy,
and how long labels take to come back (docs/monitoring.md, docs/console.md).

A thin adapter over the API's report: the numbers are :meth:`Monitor.report`, what
``GET /api/v1/models/{name}/drift`` answers, run off the event loop (in the monitor's child process when
there is one: pandas never loads into a serving worker). The page says plainly when there is nothing
to show and why: monitoring is off on this server, the model logs no predictions (and how to turn that
on), or nothing was logged in the windows yet. A model outside the key's patterns is a 404, as on the
API; ``?windows=`` outside 1–48 is a 400.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING, Any

from markupsafe import Markup

from modelport.errors import InvalidInput, ModelNotFound
from modelport.ui.charts import Series, line_chart

if TYPE_CHECKING:
    from modelport.ui.routes import Console, Page, UIRequest

__all__ = ["DEFAULT_WINDOWS", "MAX_WINDOWS", "duration", "page"]

DEFAULT_WINDOWS = 12
MAX_WINDOWS = 48
# The ModelportAccuracyDrop alert's rule (deploy/prometheus/alerts.yml): 5 points under the reference
# with at least 200 labelled rows. The page marks the same versions.
_DROP, _DROP_ROWS = 0.05, 200


def _model(request: UIRequest) -> str:
    """The model of the URL; outside the key's patterns it does not exist (404)."""
    name = request.params["name"]
    if not request.principal.sees(name):
        raise ModelNotFound(f"no model named {name!r}")
    return name


def _windows(request: UIRequest) -> int:
    text = request.arg("windows").strip()
    if not text:
        return DEFAULT_WINDOWS
    if not text.isdigit() or not 1 <= int(text) <= MAX_WINDOWS:
        raise InvalidInput(f"windows must be a number from 1 to {MAX_WINDOWS}")
    return int(text)


def duration(seconds: float) -> str:
    """A length of time for people: ``0.42 s``, ``12 min``, ``3.5 h``, ``2 d``."""
    sign, value = ("−", -seconds) if seconds < 0 else ("", seconds)
    for unit, size in (("d", 86_400.0), ("h", 3_600.0), ("min", 60.0)):
        if value >= size:
            return f"{sign}{value / size:.3g} {unit}"
    return f"{sign}{value:.3g} s"


def _tick(end: str, width: float) -> str:
    """A window's label on the chart: its end, as precise as the window is short."""
    at = datetime.fromisoformat(end)
    if width < 60:
        return at.strftime("%H:%M:%S")
    if width < 86_400:
        return at.strftime("%m-%d %H:%M")
    return at.strftime("%Y-%m-%d")


def _version(model: str, entry: dict[str, Any], threshold: float, width: float) -> dict[str, Any]:
    """One version's drift for the template: the chart of PSI per window, the same numbers as rows
    (a feature, or the predictions, per row), and the latest window."""
    windows = entry["windows"]
    ticks = [_tick(w["end"], width) for w in windows]
    names = [f["feature"] for f in windows[0]["features"]] if windows else []
    rows = []
    for position, feature in enumerate(names):
        cells = [w["features"][position] for w in windows]
        rows.append({"name": feature, "prediction": False, "cells": cells})
    if windows:
        rows.append({"name": "prediction", "prediction": True, "cells": [w["prediction"] for w in windows]})
    chart: Markup | None = None
    if windows:
        chart = line_chart(
            f"PSI per feature and of the predictions, {model} v{entry['version']}",
            ticks,
            [
                Series(
                    ("predictions" if row["prediction"] else row["name"]),
                    tuple(c["psi"] for c in row["cells"]),
                )
                for row in rows
            ],
            threshold=threshold,
            threshold_label=f"threshold {threshold:g}",
            y_label="PSI",
        )
    return {
        "version": entry["version"],
        "profile": entry["profile"],
        "chart": chart,
        "ticks": ticks,
        "ends": [w["end"] for w in windows],
        "rows": rows,
        "latest": windows[-1] if windows else None,
        "traffic": sum(w["rows"] for w in windows),
    }


def _accuracy(result: dict[str, Any]) -> dict[str, Any]:
    live, reference = result.get("accuracy"), result.get("reference_accuracy")
    lag = result.get("label_lag")
    return {
        **result,
        "dropped": live is not None
        and reference is not None
        and result["rows"] >= _DROP_ROWS
        and reference - live > _DROP,
        "lag_median": None if lag is None else duration(lag["median_seconds"]),
        "lag_p90": None if lag is None else duration(lag["p90_seconds"]),
        "latest_label": None if lag is None else datetime.fromisoformat(lag["latest_label_at"]),
    }


async def page(console: Console, request: UIRequest) -> Page:
    name = _model(request)
    windows = _windows(request)
    worker = console.app.worker
    await asyncio.to_thread(worker.registry.model, name)  # an unknown model is a 404, monitoring or not
    values: dict[str, Any] = {
        "model": name,
        "windows": windows,
        "max_windows": MAX_WINDOWS,
        "server_logs": worker.plane.predictions is not None,
    }
    monitor = worker.monitor
    if monitor is None:
        return console.render(request, "monitoring.html", monitoring=False, **values)
    report = await asyncio.to_thread(monitor.report, name, windows=windows)
    width, threshold = float(report["window_seconds"]), float(report["threshold"])
    accuracy = report["accuracy"]
    return console.render(
        request,
        "monitoring.html",
        monitoring=True,
        logging=report["logging"],
        threshold=threshold,
        min_rows=report["min_rows"],
        window=duration(width),
        until=datetime.fromisoformat(report["until"]),
        versions=[_version(name, entry, threshold, width) for entry in report["versions"]],
        accuracy=[_accuracy(result) for result in accuracy["versions"]],
        labels_received=accuracy["labels_received"],
        accuracy_window=duration(float(accuracy["window_seconds"])),
        **values,
    )
