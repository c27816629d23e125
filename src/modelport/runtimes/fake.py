"""A deterministic fake runtime for tests of everything above the runtime layer.

Format ``fake``: the blob is JSON ``{"weights": [...]}``; the score of a row is the dot product of its
numeric features with the weights, squashed through a logistic for classifiers (two classes).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from modelport.runtimes.base import Prediction, prediction_from_scores, register_loader
from modelport.signature import Batch, Signature


class FakeRuntime:
    format = "fake"

    def __init__(self, weights: list[float], signature: Signature) -> None:
        self._weights = np.asarray(weights, dtype=np.float64)
        self._signature = signature

    def predict(self, batch: Batch) -> Prediction:
        matrix = np.column_stack([batch[name] for name in self._signature.names])
        score = np.nan_to_num(matrix) @ self._weights
        if self._signature.outputs.task == "regression":
            return prediction_from_scores(score, self._signature)
        return prediction_from_scores(1.0 / (1.0 + np.exp(-score)), self._signature)

    def close(self) -> None:
        pass


@register_loader("fake")
def load(blob: bytes, details: dict[str, Any], signature: Signature) -> FakeRuntime:
    return FakeRuntime(json.loads(blob)["weights"], signature)
