"""Drift: how far live inputs and predictions have moved from what a version was registered with.

At registration :func:`build_profile` summarises the sample: for each numeric feature ten quantile
bins (edges at the deciles, with the reference share in each and a bin for missing values), 201
quantiles and, when it takes at most :data:`MAX_VALUES` distinct values, the count of each value; for
each categorical feature the share of each category (up to :data:`MAX_CATEGORIES`, the rest as one
"other" bin); and the same for the model's predictions on the sample (labels for a classifier, values
for a regressor). It is stored beside the version (``reference_profiles``).

Live windows of the prediction log are compared with it by :func:`compare`:

- **PSI** (population stability index) per feature: ``Σ (live − ref) · ln(live / ref)`` over the
  reference's bins, shares floored at 1e-4 so an empty bin counts as rare, not infinitely surprising.
  Rules of thumb: under 0.1 stable, 0.1–0.2 moderate, 0.2 and over a real shift — the default threshold.
- **KS** per numeric feature: the largest gap between the live empirical distribution function and
  the reference's, ``max |F_live(x) − F_ref(x)|`` over every point where either steps, ties counted as
  scipy's ``ks_2samp`` counts them. From value counts it is exact: discrete features (integers, flags,
  ratings) step at their values, and interpolating there read 0.2 where the exact statistic is 0.016.
  Without counts the reference is linear between its quantiles and steps where quantiles repeat (a
  value many rows share, such as a zero-inflated feature's 0), so the statistic is off by at most one
  quantile step plus one row's share: ``1/200 + 1/rows``, or ``1/100 + 1/rows`` for a profile made
  before value counts existed (101 quantiles, no counts: still read, see :func:`reference_cdf`).

Pure numpy: no I/O here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "MAX_CATEGORIES",
    "MAX_VALUES",
    "FeatureDrift",
    "build_profile",
    "compare",
    "ks_statistic",
    "psi",
    "reference_cdf",
]

MAX_CATEGORIES = 50
# A numeric feature with at most this many distinct values keeps each value's count: its KS is exact.
MAX_VALUES = 100
PROFILE_ROWS = 20_000
# Quantiles at 0, 0.5, 1, …, 100 %: the KS of a feature without value counts is within 1/200 (+ 1/rows).
_QUANTILES = 201
_BINS = 10
_FLOOR = 1e-4
_OTHER = "__other__"
_MISSING = "__missing__"


@dataclass(frozen=True, slots=True)
class FeatureDrift:
    feature: str
    psi: float | None
    ks: float | None
    rows: int
    drifting: bool
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "psi": self.psi,
            "ks": self.ks,
            "rows": self.rows,
            "drifting": self.drifting,
            "note": self.note,
        }


def psi(reference: np.ndarray, live: np.ndarray) -> float:
    """Population stability index of two share vectors over the same bins."""
    ref = np.maximum(np.asarray(reference, dtype=np.float64), _FLOOR)
    cur = np.maximum(np.asarray(live, dtype=np.float64), _FLOOR)
    ref, cur = ref / ref.sum(), cur / cur.sum()
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def reference_cdf(profile: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference distribution of a numeric feature's present values as ``(points, before, at)``:
    ascending points where it may step, its value just before each (``F(x−)``) and at each (``F(x)``);
    between two points it runs straight from ``at[i]`` to ``before[i + 1]``.

    From value counts (``values``, ``counts``) it is the sample's exact step function. Otherwise — a
    feature with too many distinct values, or a profile made before counts were stored — it comes from
    the quantiles: a value that repeats over several quantiles is a step (from the first to the last
    of their levels), and the distribution is linear in between."""
    if profile.get("values"):
        points = np.asarray(profile["values"], dtype=np.float64)
        counts = np.asarray(profile["counts"], dtype=np.float64)
        at = np.cumsum(counts) / counts.sum()
        return points, at - counts / counts.sum(), at
    quantiles = np.asarray(profile.get("quantiles") or [], dtype=np.float64)
    levels = np.linspace(0.0, 1.0, len(quantiles))
    points, first = np.unique(quantiles, return_index=True)  # quantiles ascend: equal ones are adjacent
    last = np.append(first[1:] - 1, len(quantiles) - 1)
    return points, levels[first], levels[last]


def _evaluate(
    points: np.ndarray, before: np.ndarray, at: np.ndarray, x: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``F(x−)`` and ``F(x)`` of the distribution :func:`reference_cdf` describes, at sorted ``x``."""
    i = np.searchsorted(points, x, side="right") - 1  # the last point at or below x
    low = np.clip(i, 0, len(points) - 1)
    high = np.clip(i + 1, 0, len(points) - 1)
    span = points[high] - points[low]
    share = np.divide(x - points[low], span, out=np.zeros_like(x), where=span > 0)
    value = at[low] + share * (before[high] - at[low])
    value = np.where(i < 0, 0.0, np.where(i >= len(points) - 1, at[-1], value))
    on_point = (i >= 0) & (points[low] == x)
    return np.where(on_point, before[low], value), value


def ks_statistic(profile: dict[str, Any], values: np.ndarray) -> float:
    """Two-sample KS statistic between ``values`` (NaN left out) and a numeric feature's reference:
    the largest gap between the two distribution functions, on either side of every point where one
    of them steps. Between two such points the live function is flat and the reference straight, so
    the gap is largest at an end: these points are all there is to check."""
    data = np.sort(values[~np.isnan(values)])
    points, before, at = reference_cdf(profile)
    if not len(data) or not len(points):
        return 0.0
    x = np.union1d(points, data)
    reference_before, reference_at = _evaluate(points, before, at, x)
    live_before = np.searchsorted(data, x, side="left") / len(data)
    live_at = np.searchsorted(data, x, side="right") / len(data)
    return float(max(np.max(np.abs(live_at - reference_at)), np.max(np.abs(live_before - reference_before))))


def _numeric_profile(values: np.ndarray) -> dict[str, Any]:
    present = values[~np.isnan(values)]
    if not len(present):
        return {"kind": "numeric", "edges": [], "shares": [0.0], "missing": 1.0, "quantiles": []}
    edges = np.unique(np.quantile(present, np.linspace(0, 1, _BINS + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, present, side="left"), minlength=len(edges) + 1)
    profile = {
        "kind": "numeric",
        "edges": [float(e) for e in edges],
        "shares": [float(c) / len(values) for c in counts],
        "missing": float(len(values) - len(present)) / len(values),
        "quantiles": [float(q) for q in np.quantile(present, np.linspace(0, 1, _QUANTILES))],
    }
    distinct, tallies = np.unique(present, return_counts=True)
    if len(distinct) <= MAX_VALUES:
        profile["values"] = [float(v) for v in distinct]
        profile["counts"] = [int(c) for c in tallies]
    return profile


def _categorical_profile(values: np.ndarray) -> dict[str, Any]:
    texts = [_MISSING if v is None or v != v else str(v) for v in values.tolist()]
    names, counts = np.unique(np.asarray(texts, dtype=object), return_counts=True)
    order = np.argsort(-counts, kind="stable")
    kept = {str(names[i]): float(counts[i]) / len(texts) for i in order[:MAX_CATEGORIES]}
    rest = 1.0 - sum(kept.values())
    return {"kind": "categorical", "shares": kept, "other": max(rest, 0.0)}


def _profile_of(values: np.ndarray, numeric: bool) -> dict[str, Any]:
    if numeric:
        return _numeric_profile(np.asarray(values, dtype=np.float64))
    return _categorical_profile(np.asarray(values, dtype=object))


def build_profile(
    columns: dict[str, np.ndarray],
    numeric: dict[str, bool],
    prediction: np.ndarray,
    prediction_numeric: bool,
    *,
    accuracy: float | None = None,
    log_loss: float | None = None,
) -> dict[str, Any]:
    """The reference profile of a sample: ``columns`` by feature name, ``numeric`` which of them are
    numbers, ``prediction`` the model's labels (or values) on the same rows."""
    rows = len(prediction)
    return {
        "rows": rows,
        "features": {name: _profile_of(values, numeric[name]) for name, values in columns.items()},
        "prediction": _profile_of(prediction, prediction_numeric),
        "accuracy": accuracy,
        "log_loss": log_loss,
    }


def _live_shares(profile: dict[str, Any], values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference and live shares over the reference's bins (plus missing / other)."""
    if profile["kind"] == "numeric":
        numbers = np.asarray(values, dtype=np.float64)
        missing = np.isnan(numbers)
        edges = np.asarray(profile["edges"], dtype=np.float64)
        counts = np.bincount(np.searchsorted(edges, numbers[~missing], side="left"), minlength=len(edges) + 1)
        live = np.append(counts, missing.sum()) / max(len(numbers), 1)
        reference = np.append(np.asarray(profile["shares"], dtype=np.float64), profile["missing"])
        return reference, live
    names = list(profile["shares"])
    index = {name: i for i, name in enumerate(names)}
    tallies = np.zeros(len(names) + 1)
    for value in values.tolist():
        text = _MISSING if value is None or value != value else str(value)
        tallies[index.get(text, len(names))] += 1
    reference = np.append(np.asarray([profile["shares"][n] for n in names]), profile["other"])
    return reference, tallies / max(len(values), 1)


def compare_one(
    name: str, profile: dict[str, Any], values: np.ndarray | None, threshold: float, min_rows: int
) -> FeatureDrift:
    if values is None:
        return FeatureDrift(name, None, None, 0, False, "not logged (redacted)")
    rows = len(values)
    if rows < min_rows:
        return FeatureDrift(name, None, None, rows, False, f"fewer than {min_rows} rows")
    if profile["kind"] == "numeric" and values.dtype.kind not in "fiu":
        return FeatureDrift(name, None, None, rows, False, "not comparable (pseudonymised)")
    reference, live = _live_shares(profile, values)
    index = psi(reference, live)
    ks = None
    if profile["kind"] == "numeric":
        ks = ks_statistic(profile, np.asarray(values, dtype=np.float64))
    return FeatureDrift(name, _round(index), None if ks is None else _round(ks), rows, index >= threshold)


def compare(
    profile: dict[str, Any],
    columns: dict[str, np.ndarray],
    prediction: np.ndarray | None,
    *,
    threshold: float = 0.2,
    min_rows: int = 100,
    pseudonymised: tuple[str, ...] = (),
) -> tuple[list[FeatureDrift], FeatureDrift]:
    """Drift of every profiled feature (``columns`` lacks the ones not logged) and of the predictions.
    Pseudonymised features are logged as keyed hashes, which cannot be compared with the reference."""
    features = [
        FeatureDrift(name, None, None, 0, False, "not comparable (pseudonymised)")
        if name in pseudonymised
        else compare_one(name, feature, columns.get(name), threshold, min_rows)
        for name, feature in profile["features"].items()
    ]
    return features, compare_one("prediction", profile["prediction"], prediction, threshold, min_rows)


def _round(value: float) -> float:
    return 0.0 if not math.isfinite(value) else round(value, 6)
