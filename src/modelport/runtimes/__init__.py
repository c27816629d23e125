"""Runtimes: one small interface (load → predict → close) for every stored format.

The built-in formats register themselves in :data:`modelport.runtimes.base.LOADERS` exactly as a new
format would: ``onnx`` (onnxruntime, the default for serving), ``skops`` (scikit-learn, safe loading),
``xgboost-json`` / ``xgboost-ubj`` and ``lightgbm-text``. ``fake`` is a deterministic runtime for tests.
"""

from modelport.runtimes.base import LOADERS, Prediction, Runtime, load_runtime

__all__ = ["LOADERS", "Prediction", "Runtime", "load_runtime"]
