"""Drift: how far live inputs and predictions have moved from what a version was registered with.

At registration :func:`build_profile` summarises the sample: for each numeric feature ten quantile
bins (edges at the deciles, with the reference share in each and a bin for missing values) and 101
quantiles; for each categorical feature the share of each category (up to :data:`MAX_CATEGORIES`, the
rest as one "other" bin); and the same for the model's predictions on the sample (labels for a
classifier, values for a regressor). It is stored beside the version (``reference_profiles``).

Live windows of the prediction log are compared with it by :func:`compare`:

- **PSI** (population stability index) per feature: ``Σ (live − ref) · ln(live / ref)`` over the
  reference's bins, shares floored at 1e-4 so an empty bin counts as rare, not infinitely surprising.
  Rules of thumb: under 0.1 stable, 0.1–0.2 moderate, 0.2 and over a real shift — the default threshold.
- **KS** per numeric feature: the largest gap between the live empirical distribution function and
  the reference's (interpolated between its 101 quantiles).

Pure numpy: no I/O here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "MAX_CATEGORIES",
    "FeatureDrift",
    "build_profile",
    "compare",
    "ks_statistic",
    "psi",
]

MAX_CATEGORIES = 50
PROFILE_ROWS = 20_000
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


def ks_statistic(quantiles: list[float], values: np.ndarray) -> float:
    """Largest gap between the empirical CDF of ``values`` and the reference CDF given by its
    quantiles at 0, 1, …, 100 %."""
    data = np.sort(values[~np.isnan(values)])
    if not len(data) or not quantiles:
        return 0.0
    q = np.asarray(quantiles, dtype=np.float64)
    p = np.linspace(0.0, 1.0, len(q))
    reference = np.interp(data, q, p, left=0.0, right=1.0)
    n = len(data)
    above = np.arange(1, n + 1) / n  # the live CDF just at and after each value
    below = np.arange(0, n) / n  # … and just before it
    return float(max(np.max(np.abs(above - reference)), np.max(np.abs(reference - below))))


def _numeric_profile(values: np.ndarray) -> dict[str, Any]:
    present = values[~np.isnan(values)]
    if not len(present):
        return {"kind": "numeric", "edges": [], "shares": [0.0], "missing": 1.0, "quantiles": []}
    edges = np.unique(np.quantile(present, np.linspace(0, 1, _BINS + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, present, side="left"), minlength=len(edges) + 1)
    return {
        "kind": "numeric",
        "edges": [float(e) for e in edges],
        "shares": [float(c) / len(values) for c in counts],
        "missing": float(len(values) - len(present)) / len(values),
        "quantiles": [float(q) for q in np.quantile(present, np.linspace(0, 1, 101))],
    }


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
        ks = ks_statistic(profile["quantiles"], np.asarray(values, dtype=np.float64))
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
