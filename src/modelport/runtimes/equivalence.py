"""Proof that a converted (ONNX) twin answers like the native model.

Both runtimes score the same rows — the golden cases plus rows drawn from the signature — and the
results are compared: class probabilities within an absolute tolerance and labels exactly, or
regression values within a tolerance relative to ``max(1, |native|)``. A label may differ only where
the native model's two highest probabilities are themselves within the tolerance (a tie that float32
arithmetic may break either way); such rows are counted and reported as ``ties``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from modelport.runtimes.base import Prediction

__all__ = ["EquivalenceReport", "compare"]


@dataclass(frozen=True, slots=True)
class EquivalenceReport:
    rows: int
    tolerance: float
    max_abs_diff: float
    rows_over_tolerance: int
    label_mismatches: int
    ties: int
    equivalent: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        verdict = "equivalent" if self.equivalent else "NOT equivalent"
        return (
            f"{verdict} on {self.rows} rows: max |difference| {self.max_abs_diff:.2e} "
            f"(tolerance {self.tolerance:.0e}), {self.rows_over_tolerance} row(s) over tolerance, "
            f"{self.label_mismatches} label mismatch(es), {self.ties} tie(s)"
        )


def compare(native: Prediction, twin: Prediction, tolerance: float) -> EquivalenceReport:
    rows = len(native)
    if native.values is not None:
        assert twin.values is not None
        scale = np.maximum(1.0, np.abs(native.values))
        diff = np.abs(twin.values.astype(np.float64) - native.values) / scale
        bad = ~(diff <= tolerance)  # NaN counts as bad
        worst = float(np.nanmax(diff)) if rows else 0.0
        return EquivalenceReport(rows, tolerance, worst, int(bad.sum()), 0, 0, not bad.any())
    assert native.probabilities is not None and twin.probabilities is not None
    assert native.labels is not None and twin.labels is not None
    if native.probabilities.shape != twin.probabilities.shape:
        return EquivalenceReport(rows, tolerance, float("inf"), rows, rows, 0, False)
    diff = np.abs(twin.probabilities - native.probabilities)
    row_worst = diff.max(axis=1) if rows else np.zeros(0)
    over = ~(row_worst <= tolerance)
    top_two = np.sort(native.probabilities, axis=1)[:, -2:] if rows else np.zeros((0, 2))
    tie = (top_two[:, 1] - top_two[:, 0]) <= tolerance if top_two.shape[1] == 2 else np.zeros(rows, bool)
    mismatch = np.array(
        [str(a) != str(b) for a, b in zip(native.labels, twin.labels, strict=True)], dtype=bool
    )
    bad_labels = mismatch & ~tie
    worst = float(np.nanmax(row_worst)) if rows else 0.0
    return EquivalenceReport(
        rows=rows,
        tolerance=tolerance,
        max_abs_diff=worst,
        rows_over_tolerance=int(over.sum()),
        label_mismatches=int(bad_labels.sum()),
        ties=int((mismatch & tie).sum()),
        equivalent=not over.any() and not bad_labels.any(),
    )
