"""The runtime interface and the format → loader table."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from modelport.errors import RuntimeFailure, UnknownFormat, UnsafeFormat, brief
from modelport.signature import Batch, Signature

__all__ = ["LOADERS", "Loader", "Prediction", "Runtime", "load_runtime", "prediction_from_scores"]


@dataclass(frozen=True, slots=True)
class Prediction:
    """What every runtime returns for a batch of ``n`` rows.

    Classifiers fill ``labels`` (n,) and ``probabilities`` (n, classes) in the signature's class
    order; regressors fill ``values`` (n,).
    """

    labels: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    values: np.ndarray | None = None

    def __len__(self) -> int:
        for part in (self.labels, self.values, self.probabilities):
            if part is not None:
                return int(part.shape[0])
        return 0


class Runtime(Protocol):
    """A loaded model. ``predict`` must be safe to call from several threads."""

    format: str

    def predict(self, batch: Batch) -> Prediction: ...

    def close(self) -> None: ...


Loader = Callable[[bytes, dict[str, Any], Signature], Runtime]
"""``loader(blob, artifact details, signature) -> Runtime``."""

LOADERS: dict[str, Loader] = {}


def register_loader(fmt: str) -> Callable[[Loader], Loader]:
    def decorate(loader: Loader) -> Loader:
        LOADERS[fmt] = loader
        return loader

    return decorate


# Built-in formats and the module that registers each; imported on first use, so a server that only
# serves ONNX never imports scikit-learn, XGBoost or LightGBM (start-up time, memory).
BUILTIN_MODULES = {
    "onnx": "modelport.runtimes.onnx",
    "skops": "modelport.runtimes.skops",
    "xgboost-json": "modelport.runtimes.xgboost",
    "xgboost-ubj": "modelport.runtimes.xgboost",
    "lightgbm-text": "modelport.runtimes.lightgbm",
    "fake": "modelport.runtimes.fake",
}


def load_runtime(fmt: str, blob: bytes, details: dict[str, Any], signature: Signature) -> Runtime:
    """Build the runtime for a stored artifact of format ``fmt``."""
    if fmt not in LOADERS and fmt in BUILTIN_MODULES:
        importlib.import_module(BUILTIN_MODULES[fmt])
    loader = LOADERS.get(fmt)
    if loader is None:
        known = sorted(set(LOADERS) | set(BUILTIN_MODULES))
        raise UnknownFormat(f"no runtime for format {fmt!r}; known: {', '.join(known)}")
    try:
        return loader(blob, details, signature)
    except (UnknownFormat, UnsafeFormat, RuntimeFailure):
        raise
    except Exception as exc:
        raise RuntimeFailure(f"the {fmt} runtime could not load the artifact: {brief(exc)}") from exc


def prediction_from_scores(scores: np.ndarray, signature: Signature) -> Prediction:
    """Turn raw scores (probabilities, or regression values) into a :class:`Prediction`."""
    if signature.outputs.task == "regression":
        return Prediction(values=np.asarray(scores, dtype=np.float64).reshape(-1))
    probabilities = np.asarray(scores, dtype=np.float64)
    if probabilities.ndim == 1:  # binary models report P(class 1) only
        probabilities = np.column_stack([1.0 - probabilities, probabilities])
    classes = np.asarray(signature.outputs.classes, dtype=object)
    return Prediction(labels=classes[probabilities.argmax(axis=1)], probabilities=probabilities)
