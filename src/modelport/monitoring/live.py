"""Live accuracy: how right the served predictions were, once ground truth arrives.

Labels come later than predictions — days, for a credit decision — through ``POST /api/v1/feedback``
or ``modelport feedback``, keyed by the request id the server returned (``X-Request-ID``) and the row
within the request. :func:`scores` compares them with what was logged for those rows (the prediction log
keeps the label and probabilities the version returned). The same function scores the registration
sample when it had the target, which gives the reference accuracy an alert compares with.

Pure numpy: no I/O here.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["class_index", "scores"]

_EPSILON = 1e-15


def class_index(classes: list[Any]) -> dict[str, int]:
    """Label text → position in the model's class order (``"1"`` and ``"1.0"`` both name class 1)."""
    index: dict[str, int] = {}
    for position, cls in enumerate(classes):
        index[str(cls)] = position
        if isinstance(cls, int | float) and not isinstance(cls, bool) and float(cls).is_integer():
            index.setdefault(str(int(cls)), position)
            index.setdefault(str(float(cls)), position)
    return index


def scores(
    truth: list[str],
    predicted: list[str] | None,
    probabilities: np.ndarray | None,
    classes: list[Any],
    values: np.ndarray | None = None,
) -> dict[str, Any]:
    """Scores of predictions against ground truth, row for row.

    A classifier's ``predicted`` labels and ``probabilities`` (rows × classes, in ``classes`` order)
    give accuracy, log-loss (over labels that name a known class) and recall/precision per class; a
    regressor's ``values`` give MAE and RMSE."""
    rows = len(truth)
    if not rows:
        return {"rows": 0}
    if values is not None:
        actual = np.asarray([float(t) for t in truth])
        error = np.asarray(values, dtype=np.float64) - actual
        return {
            "rows": rows,
            "mae": float(np.mean(np.abs(error))),
            "rmse": float(math.sqrt(float(np.mean(error**2)))),
        }
    assert predicted is not None
    index = class_index(classes)
    true_pos = np.asarray([index.get(t, -1) for t in truth])
    pred_pos = np.asarray([index.get(p, -2) for p in predicted])
    right = true_pos == pred_pos
    result: dict[str, Any] = {"rows": rows, "accuracy": float(np.mean(right))}
    known = true_pos >= 0
    if probabilities is not None and known.any():
        chosen = np.asarray(probabilities, dtype=np.float64)[np.flatnonzero(known), true_pos[known]]
        result["log_loss"] = float(-np.mean(np.log(np.clip(chosen, _EPSILON, 1.0))))
    per_class = {}
    for position, cls in enumerate(classes):
        actual = true_pos == position
        claimed = pred_pos == position
        hits = int(np.sum(actual & claimed))
        per_class[str(cls)] = {
            "support": int(actual.sum()),
            "recall": hits / int(actual.sum()) if actual.any() else None,
            "precision": hits / int(claimed.sum()) if claimed.any() else None,
        }
    result["classes"] = per_class
    result["unknown_labels"] = int(np.sum(~known))
    return result
