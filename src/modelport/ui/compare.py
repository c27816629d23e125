"""The console's compare page, ``/ui/compare?model=NAME&v=1&v=2…``: 2 to 10 versions of one model side
by side (docs/console.md, "Comparing versions").

What it shows was recorded when each version was registered or validated — nothing is recomputed:
the metrics and parameters in the version's lineage, its signature (each input's type, the value range
or categories seen in training, its missing rate), its outputs, and its newest validation report (the
verdict and, when the report measured it, the in-process latency and the load test's p95).

Differences are read against the *first* version chosen (the oldest, as versions are shown in
ascending order): a feature is ``added`` when the first version lacks it and another has it,
``removed`` when the first has it and another lacks it, ``changed`` when every version has it but the
values differ. The folding is pure (:func:`value_rows`, :func:`signature_rows`), so it is tested without
a server. The model's name is checked against the key's patterns before anything is read: outside
them a model answers 404, as on every other page.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modelport.errors import InvalidInput, ModelNotFound
from modelport.registry.names import ModelRef, check_model_name, check_version_number

if TYPE_CHECKING:
    from modelport.registry.records import VersionRecord
    from modelport.registry.service import Registry
    from modelport.ui.routes import Console, Page, UIRequest

__all__ = ["MAX_VERSIONS", "MIN_VERSIONS", "PAGE_SIZE", "Row", "page", "signature_rows", "value_rows"]

MIN_VERSIONS = 2
MAX_VERSIONS = 10  # ten columns still fit a 1280-pixel screen
PAGE_SIZE = 50  # versions per page on the Model page (its compare form picks among them)
_TEXT = 200  # a recorded value longer than this is cut: a page of ten columns stays readable


@dataclass(frozen=True, slots=True)
class Row:
    """One line of a comparison: a name, one text per version ("" where a version lacks it), which
    cells differ from the first version's, and the change in words ("" when all agree)."""

    name: str
    cells: tuple[str, ...]
    differs: tuple[bool, ...]
    change: str


def _row(name: str, values: Sequence[str | None]) -> Row:
    base = values[0]
    if all(v == base for v in values):
        change = ""
    elif base is None:
        change = "added"
    elif any(v is None for v in values):
        change = "removed"
    else:
        change = "changed"
    return Row(
        name,
        tuple("" if v is None else v for v in values),
        tuple(v != base for v in values),
        change,
    )


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= _TEXT else text[: _TEXT - 1] + "…"


def value_rows(mappings: Sequence[Mapping[str, Any]]) -> list[Row]:
    """Metrics or parameters of each version, one row per name (names in first-seen order)."""
    names = list(dict.fromkeys(name for mapping in mappings for name in mapping))
    return [_row(name, [_shown(m[name]) if name in m else None for m in mappings]) for name in names]


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


def _feature(feature: Mapping[str, Any]) -> str:
    """An input as one phrase: ``float64, 0.5 to 9, 2.0 % missing`` or ``string: a, b``."""
    text = str(feature.get("dtype", "?"))
    low, high = feature.get("minimum"), feature.get("maximum")
    if low is not None or high is not None:
        shown = ["…" if bound is None else _number(bound) for bound in (low, high)]
        text += f", {shown[0]} to {shown[1]}"
    categories = feature.get("categories")
    if categories:
        text += ": " + ", ".join(str(c) for c in categories)
    missing = feature.get("missing_rate") or 0
    if missing:
        text += f", {missing * 100:.1f} % missing"
    return _shown(text)


def signature_rows(signatures: Sequence[Mapping[str, Any]]) -> list[Row]:
    """Each input across the versions (type, training range or categories, missing rate), then the
    outputs: what a client must send and may read, and where the versions disagree."""
    per_version = [
        {str(f.get("name")): _feature(f) for f in s.get("inputs", []) if isinstance(f, Mapping)}
        for s in signatures
    ]
    names = list(dict.fromkeys(name for features in per_version for name in features))
    rows = [_row(name, [features.get(name) for features in per_version]) for name in names]
    outputs = []
    for signature in signatures:
        out = signature.get("outputs") or {}
        classes = out.get("classes") or []
        outputs.append(str(out.get("task", "")) + (": " + ", ".join(map(str, classes)) if classes else ""))
    rows.append(_row("(output)", outputs))
    return rows


@dataclass(frozen=True, slots=True)
class Column:
    """One version's heading facts and its newest validation report, as the page shows them."""

    version: VersionRecord
    verdict: str  # "passed", "failed" or "not validated"
    latency: str  # e.g. "p95 180 µs in-process · p95 12 ms under load", or ""


def _column(version: VersionRecord, reports: list[dict[str, Any]]) -> Column:
    if not reports:
        return Column(version, "not validated", "")
    newest = reports[0]  # newest first
    body = newest.get("report") if isinstance(newest.get("report"), dict) else {}
    parts = []
    latency = body.get("latency") if isinstance(body, dict) else None
    if isinstance(latency, dict) and isinstance(latency.get("p95_us"), int | float):
        parts.append(f"p95 {latency['p95_us']:.0f} µs in-process")
    load = body.get("load") if isinstance(body, dict) else None
    if isinstance(load, dict) and isinstance(load.get("p95_ms"), int | float):
        parts.append(f"p95 {load['p95_ms']:g} ms under load")
    return Column(version, "passed" if newest.get("passed") else "failed", " · ".join(parts))


def _numbers(values: list[str]) -> list[int]:
    numbers: list[int] = []
    for text in values:
        text = text.strip()
        if not text.isdigit() or len(text) > 9:
            raise InvalidInput("versions are numbers: v=1&v=2")
        numbers.append(check_version_number(int(text)))
    chosen = sorted(set(numbers))
    if not MIN_VERSIONS <= len(chosen) <= MAX_VERSIONS:
        raise InvalidInput(f"choose {MIN_VERSIONS} to {MAX_VERSIONS} different versions to compare")
    return chosen


def _read(registry: Registry, name: str, numbers: list[int]) -> list[Column]:
    # At most ten versions: a handful of queries each, on a thread (the caller's to_thread).
    columns = []
    for number in numbers:
        version = registry.get(ModelRef(name, version=number))  # VersionNotFound: 404
        columns.append(_column(version, registry.store.validation.reports(name, number)))
    return columns


async def page(console: Console, request: UIRequest) -> Page:
    name = request.arg("model").strip()
    if not name:
        raise InvalidInput("choose a model: /ui/compare?model=NAME&v=1&v=2")
    check_model_name(name)
    if not request.principal.sees(name):  # outside the key's patterns: as if it did not exist
        raise ModelNotFound(f"no model named {name!r}")
    numbers = _numbers(request.query.get("v", []))
    columns = await asyncio.to_thread(_read, console.app.worker.registry, name, numbers)
    versions = [c.version for c in columns]
    return console.render(
        request,
        "compare.html",
        model=name,
        columns=columns,
        metrics=value_rows([v.lineage.get("metrics") or {} for v in versions]),
        params=value_rows([v.lineage.get("params") or {} for v in versions]),
        signature=signature_rows([v.signature for v in versions]),
    )
