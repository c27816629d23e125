"""scikit-learn estimators stored with skops (no pickle: only trusted types are rebuilt).

The types skops would not trust by default are listed when the version is registered and recorded in
the artifact's details; a load trusts exactly those and nothing else, and the blob's digest is checked
before, so a changed list or a changed file cannot smuggle in new code. Trusted types can still carry
hostile data: every decision tree is checked (``trees.py``) before the estimator is used.
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from modelport.errors import UnsafeFormat
from modelport.optional import require
from modelport.runtimes.base import Prediction, register_loader
from modelport.runtimes.trees import check_estimator_trees
from modelport.signature import Batch, Signature

if TYPE_CHECKING:
    import skops.io as sio
else:
    sio = require("skops.io", "sklearn", "a scikit-learn model (stored with skops)")

__all__ = ["SAFE_MODULE_PREFIXES", "SkopsRuntime", "dump", "load_estimator", "untrusted_types"]

# What a skops file may ask us to rebuild beyond skops' own defaults: *classes* from these libraries
# (estimators, transformers, array and scalar types) and numpy ufuncs (pure element-wise maths).
# Never a function: a FunctionTransformer pointing at ``builtins.exec`` or at numpy helpers chained
# into one would run code of the file's choosing at predict time.
SAFE_MODULE_PREFIXES = ("sklearn.", "numpy.", "scipy.")


def untrusted_types(blob: bytes) -> list[str]:
    return sorted(sio.get_untrusted_types(data=blob))


def _is_safe(qualified: str) -> bool:
    if not qualified.startswith(SAFE_MODULE_PREFIXES):
        return False
    module_name, _, attribute = qualified.rpartition(".")
    try:
        target = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError):
        return False
    return isinstance(target, type | np.ufunc)


def check_trustworthy(blob: bytes) -> list[str]:
    """Types to trust for this blob, after refusing anything but library classes and numpy ufuncs."""
    types = untrusted_types(blob)
    unsafe = [t for t in types if not _is_safe(t)]
    if unsafe:
        raise UnsafeFormat(
            "the skops file asks to rebuild objects that are not scikit-learn/numpy/scipy classes "
            "or numpy ufuncs: " + ", ".join(unsafe[:10])
        )
    return types


def dump(estimator: Any) -> bytes:
    return bytes(sio.dumps(estimator))


class SkopsRuntime:
    format = "skops"

    def __init__(self, estimator: Any, signature: Signature) -> None:
        self._estimator = estimator
        self._signature = signature
        # Estimators fitted on a DataFrame want one back (column names); others want a matrix.
        self._wants_frame = hasattr(estimator, "feature_names_in_")

    @property
    def estimator(self) -> Any:
        return self._estimator

    def _inputs(self, batch: Batch) -> Any:
        if self._wants_frame or not self._signature.all_numeric:
            return self._signature.frame(batch)
        return np.column_stack([batch[n] for n in self._signature.names])

    def predict(self, batch: Batch) -> Prediction:
        inputs = self._inputs(batch)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            if self._signature.outputs.task == "regression":
                values = np.asarray(self._estimator.predict(inputs), dtype=np.float64)
                return Prediction(values=values.reshape(-1))
            probabilities = np.asarray(self._estimator.predict_proba(inputs), dtype=np.float64)
            labels = np.asarray(self._estimator.predict(inputs))
        return Prediction(labels=labels.astype(object), probabilities=probabilities)

    def close(self) -> None:
        self._estimator = None


def load_estimator(blob: bytes, trusted: list[str]) -> Any:
    """Rebuild the estimator and check its trees (a trusted ``Tree`` may hold crafted node arrays)
    before anything can ask it to predict."""
    estimator = sio.loads(blob, trusted=trusted)
    check_estimator_trees(estimator)
    return estimator


@register_loader("skops")
def load(blob: bytes, details: dict[str, Any], signature: Signature) -> SkopsRuntime:
    # The trust list is recomputed from the (digest-verified) bytes, not taken from the database.
    return SkopsRuntime(load_estimator(blob, check_trustworthy(blob)), signature)
