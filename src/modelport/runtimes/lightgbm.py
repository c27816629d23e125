"""LightGBM boosters stored in LightGBM's text model format (never pickle). Numeric features only."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from modelport.optional import require
from modelport.runtimes.base import Prediction, prediction_from_scores, register_loader
from modelport.runtimes.trees import check_lightgbm_text
from modelport.signature import Batch, Signature

if TYPE_CHECKING:
    import lightgbm as lgb
else:
    lgb = require("lightgbm", "lightgbm", "a LightGBM model")

__all__ = ["LightGBMRuntime", "load_booster", "objective"]


def load_booster(blob: bytes) -> lgb.Booster:
    """Parse a text model whose trees were checked first: LightGBM trusts its child indices."""
    text = blob.decode("utf-8")
    check_lightgbm_text(text)
    return lgb.Booster(model_str=text)


def objective(booster: lgb.Booster) -> str:
    return str(booster.dump_model(num_iteration=0).get("objective", "")).split(" ")[0]


class LightGBMRuntime:
    format = "lightgbm-text"

    def __init__(self, booster: lgb.Booster, signature: Signature) -> None:
        self._booster = booster
        self._signature = signature

    def predict(self, batch: Batch) -> Prediction:
        matrix = np.column_stack([batch[n] for n in self._signature.names]).astype(np.float64)
        return prediction_from_scores(
            np.asarray(self._booster.predict(matrix, num_threads=1)), self._signature
        )

    def close(self) -> None:
        del self._booster


@register_loader("lightgbm-text")
def load(blob: bytes, details: dict[str, Any], signature: Signature) -> LightGBMRuntime:
    return LightGBMRuntime(load_booster(blob), signature)
