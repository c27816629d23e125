"""XGBoost boosters stored as XGBoost's own JSON or UBJSON (never pickle). Numeric features only."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

from modelport.optional import require
from modelport.runtimes.base import Prediction, prediction_from_scores, register_loader
from modelport.runtimes.trees import check_xgboost_json
from modelport.signature import Batch, Signature

if TYPE_CHECKING:
    import xgboost as xgb
else:
    xgb = require("xgboost", "xgboost", "an XGBoost model")

__all__ = ["XGBoostRuntime", "load_booster", "objective", "save"]


def objective(booster: xgb.Booster) -> str:
    return str(json.loads(booster.save_config())["learner"]["objective"]["name"])


def save(booster: xgb.Booster, fmt: str) -> bytes:
    return bytes(booster.save_raw(raw_format="ubj" if fmt == "xgboost-ubj" else "json"))


def load_booster(blob: bytes, fmt: str) -> xgb.Booster:
    """Load a booster whose trees were checked: JSON before XGBoost parses it; UBJSON (which we do
    not decode ourselves) right after, on XGBoost's JSON rendering, before it predicts anything.
    XGBoost trusts its node arrays: a cycle or an out-of-range child crashes it (SIGSEGV)."""
    if fmt == "xgboost-json":
        check_xgboost_json(blob)
    booster = xgb.Booster()
    booster.load_model(bytearray(blob))
    booster.set_param({"nthread": 1})
    if fmt != "xgboost-json":
        check_xgboost_json(bytes(booster.save_raw(raw_format="json")))
    return booster


class XGBoostRuntime:
    def __init__(self, booster: xgb.Booster, signature: Signature, fmt: str) -> None:
        self.format = fmt
        self._booster = booster
        self._signature = signature
        self._objective = objective(booster)

    def predict(self, batch: Batch) -> Prediction:
        matrix = np.column_stack([batch[n] for n in self._signature.names]).astype(np.float64)
        data = xgb.DMatrix(matrix, missing=np.nan, feature_names=self._booster.feature_names)
        if self._objective == "multi:softmax":  # labels only: rebuild probabilities from margins
            margin = self._booster.predict(data, output_margin=True)
            exp = np.exp(margin - margin.max(axis=1, keepdims=True))
            return prediction_from_scores(exp / exp.sum(axis=1, keepdims=True), self._signature)
        return prediction_from_scores(self._booster.predict(data), self._signature)

    def close(self) -> None:
        del self._booster


def _loader(fmt: str) -> Any:
    def load(blob: bytes, details: dict[str, Any], signature: Signature) -> XGBoostRuntime:
        return XGBoostRuntime(load_booster(blob, fmt), signature, fmt)

    return load


register_loader("xgboost-json")(_loader("xgboost-json"))
register_loader("xgboost-ubj")(_loader("xgboost-ubj"))
