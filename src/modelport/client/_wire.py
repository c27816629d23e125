"""What the client puts on the wire and reads back: V2 binary tensors, references, error bodies.

Pure functions over bytes, headers and tables — no I/O — shared by :class:`~modelport.client.Client`
and :class:`~modelport.client.AsyncClient`.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import numpy as np
import orjson
import pandas as pd

from modelport import errors
from modelport.errors import InvalidInput, ModelportError

__all__ = [
    "HEADER_LENGTH",
    "decode_outputs",
    "encode_inputs",
    "error_from",
    "model_path",
    "split_ref",
    "to_frame",
]

HEADER_LENGTH = "Inference-Header-Content-Length"
_LENGTH = struct.Struct("<I")
# V2 datatypes the server answers with, as little-endian numpy types (BYTES is length-prefixed).
_NUMPY = {
    "BOOL": "<b1",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}


# -- references ----------------------------------------------------------------------------------


def split_ref(ref: str) -> tuple[str, str | None]:
    """``NAME`` or ``NAME@SELECTOR`` (an alias, a version number or a label) → (name, selector). The
    server judges the parts (an unknown or malformed one answers 404); only the shape is checked here."""
    if not isinstance(ref, str) or not ref:
        raise InvalidInput("a model reference is NAME, NAME@ALIAS, NAME@VERSION or NAME@LABEL")
    name, sep, selector = ref.partition("@")
    if not name or (sep and not selector):
        raise InvalidInput(f"reference {ref[:100]!r} must be NAME or NAME@ALIAS|VERSION|LABEL")
    return name, selector or None


def model_path(name: str, selector: str | int | None = None) -> str:
    """``/v2/models/NAME[/versions/SELECTOR]``: the server reads an alias or a label in the version
    segment as it reads a number (serving/dataplane.py ``edge_ref``)."""
    path = f"/v2/models/{quote(name, safe='')}"
    if selector is not None:
        path += f"/versions/{quote(str(selector), safe='')}"
    return path


# -- requests ------------------------------------------------------------------------------------


def to_frame(rows: pd.DataFrame | Mapping[Any, Any] | np.ndarray, features: list[str]) -> pd.DataFrame:
    """The rows to score as a table: a DataFrame as it is; a dict of columns (or of one row's values);
    a numpy array whose columns are the features in the model's order."""
    if isinstance(rows, pd.DataFrame):
        return rows
    if isinstance(rows, np.ndarray):
        array = rows.reshape(1, -1) if rows.ndim == 1 else rows
        if array.ndim != 2 or array.shape[1] != len(features):
            raise InvalidInput(
                f"an array to score must have {len(features)} columns (the features "
                f"{', '.join(features)}), not shape {list(rows.shape)}"
            )
        return pd.DataFrame(array, columns=features)
    if isinstance(rows, Mapping):
        values = list(rows.values())
        if values and all(np.ndim(v) == 0 for v in values):
            return pd.DataFrame([dict(rows)])  # one row
        return pd.DataFrame(dict(rows))
    raise InvalidInput(f"rows to score are a DataFrame, a dict or a numpy array, not {type(rows).__name__}")


def _bytes_tensor(column: pd.Series[Any], name: str) -> bytes:
    if column.isna().any():
        raise InvalidInput(f"column {name!r} has missing values, which a text (BYTES) input cannot carry")
    parts = []
    for value in column.astype(str):
        encoded = value.encode("utf-8")
        parts.append(_LENGTH.pack(len(encoded)) + encoded)
    return b"".join(parts)


def _numbers(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    try:
        return np.ascontiguousarray(frame[columns].to_numpy(dtype="<f8"))
    except (TypeError, ValueError):
        raise InvalidInput(f"columns {', '.join(columns)} must be numeric for this model") from None


def encode_inputs(
    frame: pd.DataFrame, metadata: Mapping[str, Any], request_id: str | None = None
) -> tuple[bytes, int]:
    """An inference request in the binary tensor extension: the JSON header (each input with a
    ``binary_data_size``), then the tensors' little-endian bytes; and the header's length, for the
    ``Inference-Header-Content-Length`` header. The inputs are the ones the model's metadata lists,
    in its order (one 2-D ``input`` for all-numeric models, else one tensor per feature); columns of
    ``frame`` the model does not use are not sent."""
    features: list[str] = list(metadata.get("parameters", {}).get("features", []))
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise InvalidInput(
            f"missing column(s) {', '.join(missing[:20])}; the model reads {', '.join(features)}"
        )
    rows = len(frame)
    inputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for spec in metadata["inputs"]:
        name, datatype = spec["name"], spec["datatype"]
        if len(spec["shape"]) == 2:  # the one 2-D tensor of all features, in signature order
            blob = _numbers(frame, features).tobytes()
            shape = [rows, len(features)]
        elif datatype == "BYTES":
            blob, shape = _bytes_tensor(frame[name], name), [rows]
        else:
            blob, shape = _numbers(frame, [name]).reshape(-1).tobytes(), [rows]
        inputs.append(
            {
                "name": name,
                "datatype": datatype,
                "shape": shape,
                "parameters": {"binary_data_size": len(blob)},
            }
        )
        blobs.append(blob)
    document: dict[str, Any] = {"inputs": inputs, "parameters": {"binary_data_output": True}}
    if request_id is not None:
        document["id"] = request_id
    header = orjson.dumps(document)
    return header + b"".join(blobs), len(header)


# -- responses -----------------------------------------------------------------------------------


def _tensor(entry: Mapping[str, Any], binary: memoryview, offset: int) -> tuple[np.ndarray, int]:
    datatype, shape = entry["datatype"], [int(d) for d in entry["shape"]]
    size = (entry.get("parameters") or {}).get("binary_data_size")
    if size is None:  # sent as JSON data
        data = entry.get("data", [])
        if datatype == "BYTES":
            return np.array(data, dtype=object).reshape(shape), offset
        return np.asarray(data, dtype=_NUMPY.get(datatype, "<f8")).reshape(shape), offset
    chunk = bytes(binary[offset : offset + size])
    if len(chunk) != size:
        raise ModelportError(f"output {entry['name']!r}: the answer's binary data is cut short")
    if datatype == "BYTES":
        items: list[str] = []
        position = 0
        while position < len(chunk):
            (length,) = _LENGTH.unpack_from(chunk, position)
            items.append(chunk[position + 4 : position + 4 + length].decode("utf-8", "replace"))
            position += 4 + length
        return np.array(items, dtype=object).reshape(shape), offset + size
    return np.frombuffer(chunk, dtype=_NUMPY[datatype]).reshape(shape), offset + size


def decode_outputs(body: bytes, header_length: str | None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """An inference answer → (its JSON header, ``{output name: array}``)."""
    length = int(header_length) if header_length is not None else len(body)
    document = orjson.loads(body[:length])
    binary = memoryview(body)[length:]
    outputs: dict[str, np.ndarray] = {}
    offset = 0
    for entry in document.get("outputs", []):
        outputs[entry["name"]], offset = _tensor(entry, binary, offset)
    return document, outputs


def prediction_frame(outputs: Mapping[str, np.ndarray], classes: list[Any]) -> pd.DataFrame:
    """The answer as the registry's own ``predict`` gives it: ``label`` and ``p_<class>`` columns for a
    classifier, ``prediction`` for a regressor (any other output: a column, or ``NAME_i`` columns)."""
    columns: dict[str, Any] = {}
    for name, array in outputs.items():
        if name == "probabilities" and array.ndim == 2 and array.shape[1] == len(classes):
            for index, cls in enumerate(classes):
                columns[f"p_{cls}"] = np.asarray(array[:, index], dtype=np.float64)
        elif array.ndim == 2:
            for index in range(array.shape[1]):
                columns[f"{name}_{index}"] = array[:, index]
        else:
            columns[name] = array.tolist() if array.dtype == object else array
    return pd.DataFrame(columns)


# -- errors --------------------------------------------------------------------------------------

# Statuses whose class the status alone names (errors.OUTCOMES, read backwards). 404 and 503 are
# refined by the message below; anything else is a plain ModelportError.
_BY_STATUS: dict[int, type[ModelportError]] = {
    400: InvalidInput,
    401: errors.Unauthenticated,
    403: errors.Forbidden,
    404: errors.NotFound,
    409: errors.Conflict,
    410: errors.VersionArchived,
    413: InvalidInput,  # the body is over the server's limit: the caller sent something unusable
    415: errors.UnsupportedMediaType,
    500: errors.RuntimeFailure,
    501: errors.MissingExtra,
    503: errors.StoreNotReady,
    504: errors.ScoringTimeout,
}
# The server's 404 messages name what is missing (serving/dataplane.py, registry/store.py).
_NOT_FOUND = (
    ("no model named", errors.ModelNotFound),
    ("has no version", errors.VersionNotFound),
    ("has no alias", errors.AliasNotFound),
)


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from ``now`` (a Unix time): delta-seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def error_from(
    status: int, body: bytes, retry_after: float | None, named_class: str | None = None
) -> ModelportError:
    """The :mod:`modelport.errors` class the server raised, rebuilt from its answer: by its
    ``X-Modelport-Error`` header (``named_class``) or the body's ``type`` when they name one, else by
    status (and, for 404, by what the message says is missing). The message is the server's own text."""
    message, kind = f"the server answered HTTP {status}", None
    candidate = getattr(errors, named_class, None) if named_class else None
    if isinstance(candidate, type) and issubclass(candidate, ModelportError):
        kind = candidate
    try:
        document = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        document = None
        message = body[:300].decode("utf-8", "replace").strip() or message
    if isinstance(document, dict):
        said = document.get("error", document.get("message"))
        if isinstance(said, str) and said:
            message = said
        named = document.get("type")
        candidate = getattr(errors, named, None) if isinstance(named, str) else None
        if kind is None and isinstance(candidate, type) and issubclass(candidate, ModelportError):
            kind = candidate
    if kind is None and status == 429:
        kind = errors.RateLimited
    if kind is errors.RateLimited:
        error: ModelportError = errors.RateLimited(message, retry_after if retry_after is not None else 1.0)
    else:
        if kind is None:
            kind = _BY_STATUS.get(status, ModelportError)
            if status == 404:
                kind = next((k for text, k in _NOT_FOUND if text in message), kind)
        error = kind(message)
    error.add_note(f"HTTP {status}")
    return error
