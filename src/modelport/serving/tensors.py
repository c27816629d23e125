"""Protocol-neutral tensors and the tabular mapping between tensors and a version's signature.

Inputs may come as one 2-D tensor ``[N, features]`` in signature order (any name), or as one tensor
per feature named after it (``[N]`` or ``[N, 1]``). Numbers of any numeric datatype become float64;
text features take ``BYTES``. Outputs are ``label`` ``[N]`` and ``probabilities`` ``[N, classes]``
for classifiers (class names in the model metadata), ``prediction`` ``[N]`` for regressors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelport.errors import InputMismatch, InvalidInput
from modelport.runtimes.base import Prediction
from modelport.signature import Batch, MatrixBatch, Signature, check_float32_range

__all__ = ["DATATYPES", "Tensor", "batch_from_tensors", "numbers_as", "tensors_from_prediction"]

# Open Inference Protocol datatypes and their numpy types (BYTES as Python objects).
DATATYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}


_JSON_NUMBERS = frozenset({bool, int, float, type(None)})


def numbers_as(values: np.ndarray, datatype: str, name: str) -> np.ndarray:
    """Numbers sent as text (JSON) or typed gRPC contents, as a flat array of the numeric ``datatype``.

    Refused (``InvalidInput`` naming the input, the first offending value and the datatype): integers
    out of the type's range; for the integer types and BOOL anything but integers (a float, even 1.0,
    may be a rounded value; null); for BOOL anything but 0/1 and true/false; a finite number that
    overflows FP16/FP32 to infinity; strings and nested objects. Left to itself numpy raises
    ``OverflowError`` for some of these (a 500) and silently wraps, truncates or saturates the others (a
    wrong prediction). NaN/Infinity stay legal for the float types: what a model may score is the
    signature's business. One vectorised pass on the usual inputs; an object array (null, integers
    beyond 64 bits, or int64 and uint64 values together, which numpy would otherwise turn into
    floats) is checked exactly, at Python speed."""
    values = values.reshape(-1)
    dtype = np.dtype(DATATYPES[datatype])
    if values.dtype.kind == "O":
        values = _from_objects(values, datatype, dtype, name)
    if values.dtype.kind not in "biuf":
        raise InvalidInput(f"input {name!r}: data must be {datatype} numbers")
    if dtype.kind == "f":
        if dtype.itemsize == 8:  # every int64/uint64/float64 value has a float64 (nearest) value
            return values.astype(dtype, copy=False)
        with np.errstate(over="ignore"):
            narrowed = values.astype(dtype)
        _refuse_first(values, np.isinf(narrowed) & np.isfinite(values), datatype, name)
        return narrowed
    if values.dtype.kind == "f":
        _refuse_first(values, np.ones(values.shape, dtype=bool), datatype, name)  # integers only
    if values.dtype.kind != "b":
        low, high = _bounds(dtype)
        _refuse_first(values, (values < low) | (values > high), datatype, name)  # exact for any ints
    return values.astype(dtype, copy=False)


def _bounds(dtype: np.dtype[Any]) -> tuple[int, int]:
    if dtype.kind == "b":
        return 0, 1
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def _refuse_first(values: np.ndarray, bad: np.ndarray, datatype: str, name: str) -> None:
    if bad.any():
        value = values[int(np.argmax(bad))]
        shown = "null" if value is None else repr(value.item() if isinstance(value, np.generic) else value)
        raise InvalidInput(f"input {name!r}: {shown} does not fit {datatype}")


def _from_objects(values: np.ndarray, datatype: str, dtype: np.dtype[Any], name: str) -> np.ndarray:
    kinds = set(map(type, values))  # C-speed type scan; nesting and strings end here
    if not kinds <= _JSON_NUMBERS:
        raise InvalidInput(f"input {name!r}: data must be {datatype} numbers")
    if dtype.kind == "f":
        missing = np.equal(values, np.array(None))
        if missing.any():
            values = values.copy()
            values[missing] = np.nan
        try:
            return values.astype(np.float64)
        except OverflowError:  # a Python int beyond float64 (over 1e308)
            raise InvalidInput(f"input {name!r}: an integer in the data does not fit {datatype}") from None
    if float in kinds or type(None) in kinds:
        _refuse_first(
            values, np.array([type(v) is not int and type(v) is not bool for v in values]), datatype, name
        )
    low, high = _bounds(dtype)
    _refuse_first(values, np.asarray((values < low) | (values > high), dtype=bool), datatype, name)
    return np.array(values.tolist(), dtype=dtype)  # Python ints in range: exact


@dataclass(slots=True)
class Tensor:
    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray  # already shaped; BYTES as an object array of bytes
    parameters: dict[str, Any] = field(default_factory=dict)


def _rows_of(tensor: Tensor) -> int:
    return tensor.shape[0] if tensor.shape else 1


def _numeric(tensor: Tensor, feature: str, values: np.ndarray) -> np.ndarray:
    if tensor.datatype == "BYTES":
        try:
            return np.array(
                [float(v.decode() if isinstance(v, bytes) else v) for v in values], dtype=np.float64
            )
        except (ValueError, UnicodeDecodeError):
            raise InputMismatch(
                f"feature {feature!r} must be numeric; input {tensor.name!r} is BYTES"
            ) from None
    return values.astype(np.float64, copy=False)


def _text(tensor: Tensor, feature: str, values: np.ndarray) -> np.ndarray:
    if tensor.datatype != "BYTES":
        raise InputMismatch(
            f"feature {feature!r} is text: send it as BYTES (input {tensor.name!r} is {tensor.datatype})"
        )
    try:
        try:  # every decoder gives bytes: map over the C method (about 50 ns an element)
            texts = list(map(bytes.decode, values))
        except TypeError:
            texts = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]
        return np.array(texts, dtype=object)
    except UnicodeDecodeError:
        raise InputMismatch(f"feature {feature!r}: input {tensor.name!r} is not valid UTF-8") from None


def batch_from_tensors(tensors: list[Tensor], signature: Signature) -> tuple[Batch, int, np.ndarray | None]:
    """The signature's columns from request tensors, the row count, and — when the request sent one
    numeric matrix for an all-numeric signature — that float64 matrix (the columns are views of it)."""
    if not tensors:
        raise InputMismatch("the request has no inputs")
    features = signature.features
    names = signature.names
    if len(tensors) == 1 and tensors[0].name not in names:
        tensor = tensors[0]
        if len(tensor.shape) != 2 or tensor.shape[1] != len(features):
            raise InputMismatch(
                f"input {tensor.name!r} has shape {tensor.shape}: send [rows, {len(features)}] with the "
                f"features in this order: {', '.join(names)} — or one input per feature"
            )
        matrix = tensor.data.reshape(tensor.shape)
        if tensor.datatype != "BYTES" and signature.all_numeric:
            # the common case: one numeric matrix, checked once and split into column views
            values = matrix.astype(np.float64, copy=False)
            check_float32_range(values, signature.names)
            columns = {f.name: values[:, i] for i, f in enumerate(features)}
            return MatrixBatch(columns, values), tensor.shape[0], values
        batch: Batch = {}
        for index, feature in enumerate(features):
            column = matrix[:, index]
            batch[feature.name] = (
                _numeric(tensor, feature.name, column)
                if feature.numeric
                else _text(tensor, feature.name, column)
            )
        return _checked(batch, signature), tensor.shape[0], None
    by_name = {t.name: t for t in tensors}
    if len(by_name) != len(tensors):
        raise InputMismatch("the request names an input twice")
    unknown = [n for n in by_name if n not in names]
    missing = [n for n in names if n not in by_name]
    if unknown or missing:
        parts = []
        if missing:
            parts.append(f"missing input(s) for feature(s) {', '.join(missing[:20])}")
        if unknown:
            parts.append(f"unknown input(s) {', '.join(unknown[:20])}")
        raise InputMismatch("; ".join(parts))
    rows = {_rows_of(t) for t in tensors}
    if len(rows) != 1:
        raise InputMismatch("every per-feature input must have the same number of rows")
    batch = {}
    for feature in features:
        tensor = by_name[feature.name]
        if len(tensor.shape) > 2 or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
            raise InputMismatch(f"input {tensor.name!r} has shape {tensor.shape}: send [rows] or [rows, 1]")
        column = tensor.data.reshape(-1)
        batch[feature.name] = (
            _numeric(tensor, feature.name, column) if feature.numeric else _text(tensor, feature.name, column)
        )
    return _checked(batch, signature), rows.pop(), None


def _checked(batch: Batch, signature: Signature) -> Batch:
    for feature in signature.features:
        if feature.numeric:
            check_float32_range(batch[feature.name], [feature.name])
    return batch


def tensors_from_prediction(prediction: Prediction, signature: Signature) -> list[Tensor]:
    if prediction.values is not None:
        values = prediction.values.astype(np.float64, copy=False)
        return [Tensor("prediction", "FP64", [len(values)], values)]
    assert prediction.labels is not None and prediction.probabilities is not None
    classes = signature.outputs.classes
    if all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        labels = Tensor("label", "INT64", [len(prediction.labels)], prediction.labels.astype(np.int64))
    else:
        encoded = np.array([str(v).encode() for v in prediction.labels], dtype=object)
        labels = Tensor("label", "BYTES", [len(encoded)], encoded)
    probabilities = prediction.probabilities.astype(np.float64, copy=False)
    return [labels, Tensor("probabilities", "FP64", list(probabilities.shape), probabilities)]
