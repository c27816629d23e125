"""Conversion of native models to ONNX: skl2onnx for scikit-learn, onnxmltools for XGBoost/LightGBM.

Inputs are declared as float32 (what onnxruntime's tree and linear kernels compute in): one
``[N, features]`` tensor named ``input`` when every feature is numeric, else one ``[N, 1]`` tensor per
feature, named after it. Classifiers get a plain probability tensor (no ZipMap).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from modelport.errors import ConversionFailed, MissingExtra, brief
from modelport.optional import require
from modelport.signature import Signature

__all__ = ["to_onnx"]

_ONNX_OPSET = 17
_ONNXMLTOOLS_OPSET = 15
_ML_OPSET = 3
_lock = threading.Lock()


@contextlib.contextmanager
def _numpy_int_attributes() -> Iterator[None]:
    """skl2onnx ≤ 1.20 passes numpy integers inside integer-list attributes of tree ensembles, which
    ``onnx.helper.make_attribute`` rejects under numpy 2. We cannot fix the converter from here, so
    for the duration of one conversion (under a lock) the attribute builder converts such items to
    Python ints. Nothing is patched outside this block."""
    import onnx.helper as helper
    import skl2onnx.common._container as container

    original = helper.make_attribute

    def make_attribute(key: str, value: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(value, list | tuple) and any(isinstance(v, np.integer) for v in value):
            value = [int(v) for v in value]
        return original(key, value, *args, **kwargs)

    with _lock:
        helper.make_attribute = make_attribute
        had = hasattr(container, "make_attribute")
        if had:
            container.make_attribute = make_attribute
        try:
            yield
        finally:
            helper.make_attribute = original
            if had:
                container.make_attribute = original


def _initial_types(signature: Signature, module: Any) -> list[tuple[str, Any]]:
    if signature.all_numeric:
        return [("input", module.FloatTensorType([None, len(signature.features)]))]
    types = []
    for f in signature.features:
        tensor = module.StringTensorType if f.dtype == "string" else module.FloatTensorType
        types.append((f.name, tensor([None, 1])))
    return types


def _sklearn(model: Any, signature: Signature) -> Any:
    require("skl2onnx", "sklearn", "converting a scikit-learn model to ONNX")
    from skl2onnx import convert_sklearn
    from skl2onnx.common import data_types
    from sklearn.base import is_classifier

    final = model.steps[-1][1] if hasattr(model, "steps") else model
    options = {id(final): {"zipmap": False}} if is_classifier(final) else None
    with _numpy_int_attributes():
        onx = convert_sklearn(
            model,
            initial_types=_initial_types(signature, data_types),
            options=options,
            target_opset={"": _ONNX_OPSET, "ai.onnx.ml": _ML_OPSET},
        )
    return onx


def _xgboost(model: Any, signature: Signature) -> Any:
    require("onnxmltools", "xgboost", "converting an XGBoost model to ONNX")
    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common import data_types

    onx = convert_xgboost(
        model, initial_types=_initial_types(signature, data_types), target_opset=_ONNXMLTOOLS_OPSET
    )
    return onx


def _lightgbm(model: Any, signature: Signature) -> Any:
    require("onnxmltools", "lightgbm", "converting a LightGBM model to ONNX")
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common import data_types

    onx = convert_lightgbm(
        model,
        initial_types=_initial_types(signature, data_types),
        target_opset=_ONNXMLTOOLS_OPSET,
        zipmap=False,
    )
    return onx


_CONVERTERS = {"sklearn": _sklearn, "xgboost": _xgboost, "lightgbm": _lightgbm}


def to_onnx(kind: str, model: Any, signature: Signature) -> bytes:
    """Convert an in-process ``model`` of library ``kind`` to ONNX bytes, or raise
    :class:`ConversionFailed` with the converter's reason."""
    converter = _CONVERTERS.get(kind)
    if converter is None:
        raise ConversionFailed(f"no ONNX converter for {kind} models")
    if kind != "sklearn" and not signature.all_numeric:
        raise ConversionFailed(f"{kind} models with text features are not converted to ONNX")
    try:
        onx = converter(model, signature)
    except MissingExtra:
        raise
    except Exception as exc:
        raise ConversionFailed(f"{type(exc).__name__}: {brief(exc)}") from exc
    # Converters name the graph with a random UUID; a fixed name makes the bytes (and so the digest)
    # depend on the model only, and the same model converted twice is stored once.
    onx.graph.name = "modelport"
    return bytes(onx.SerializeToString())
