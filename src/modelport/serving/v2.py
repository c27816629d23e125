"""Open Inference Protocol (KServe V2) REST codec, with the binary tensor data extension.

Bodies are parsed from raw bytes whatever the Content-Type. With an ``Inference-Header-Content-Length``
header the first that many bytes are the JSON header and the rest holds the tensors whose parameters
give ``binary_data_size`` (``BYTES`` elements as 4-byte little-endian length + bytes). JSON ``NaN`` and
``Infinity`` tokens are accepted. Every declared shape (rank, each dimension, element count, ``BYTES``
element count) is checked against the limits *before* anything is allocated or looped over; data must
match the shape exactly, and every value must fit its datatype.
"""

from __future__ import annotations

import gc
import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from modelport.errors import InvalidInput
from modelport.serving.dataplane import InferenceResult
from modelport.serving.tensors import DATATYPES, Tensor, numbers_as

__all__ = [
    "MAX_RANK",
    "Limits",
    "V2Request",
    "check_bytes_elements",
    "check_shape",
    "decode_request",
    "encode_response",
    "parse_json",
    "tensor_bytes",
    "tensor_from_bytes",
]

HEADER_LENGTH = "inference-header-content-length"
MAX_RANK = 8  # a table needs 2; numpy stops at 64 dimensions, with an error that would be a 500
_LENGTH = struct.Struct("<I")
_FLOATS = ("FP16", "FP32", "FP64")
_GC_PAUSE_CONTAINERS = 10_000  # below this the collector costs nothing measurable


@dataclass(frozen=True, slots=True)
class Limits:
    max_body_bytes: int = 64 << 20
    max_elements: int = 16_000_000
    max_json_depth: int = 64
    # Each BYTES element is a Python object built in a Python loop (about 0.15 µs binary, 0.25 µs JSON,
    # then as much again to decode it as text), where numbers are one numpy call: 1,000,000 elements
    # keep a request's decoding near 0.2-0.4 s of the worker's time, against 3-6 s for the 4 million
    # empty elements 16 MB can hold.
    max_bytes_elements: int = 1_000_000


@dataclass(slots=True)
class V2Request:
    id: str | None
    inputs: list[Tensor]
    outputs: list[str] | None
    binary_outputs: set[str]
    binary_default: bool
    parameters: dict[str, Any]


_STEP = np.zeros(256, dtype=np.int8)  # how each byte moves the bracket depth
_STEP[[0x5B, 0x7B]] = 1
_STEP[[0x5D, 0x7D]] = -1
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _depth_ok(data: bytes, limit: int) -> bool:
    """Bracket-depth scan (brackets inside strings count too) before any parser recursion. Vectorised
    over the brackets alone, a megabyte at a time: 0.03 s for 8 MB of small rows, where the byte-by-byte
    Python loop it replaces took 0.45 s (about 3.5 s for the 64 MB a body may have)."""
    brackets = np.frombuffer(data.translate(None, _NOT_BRACKETS), dtype=np.uint8)
    depth = 0
    for start in range(0, len(brackets), 1 << 20):
        levels = np.cumsum(_STEP[brackets[start : start + (1 << 20)]], dtype=np.int32) + depth
        if levels.max() > limit:
            return False
        depth = int(levels[-1])
    return True


def parse_json(data: bytes, limits: Limits) -> Any:
    # Counting brackets is C-fast; the exact depth scan runs only when there could be deep nesting.
    brackets = data.count(b"[") + data.count(b"{")
    if brackets > limits.max_json_depth and not _depth_ok(data, limits.max_json_depth):
        raise InvalidInput(f"JSON nests deeper than {limits.max_json_depth} levels")
    # Building millions of lists and dicts sets off the cyclic collector again and again over all of
    # them: 32 MB of small rows parsed in 3.9-5.8 s with it, 1.1 s without. The parsed document holds
    # no cycles, and the collector runs again as soon as it is enabled.
    paused = gc.isenabled() and brackets > _GC_PAUSE_CONTAINERS
    if paused:
        gc.disable()
    try:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
        try:  # the standard parser accepts NaN / Infinity / -Infinity tokens
            return json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise InvalidInput(f"body is not valid JSON: {str(exc)[:120]}") from None
    finally:
        if paused:
            gc.enable()


def check_shape(raw: Any, name: str, limits: Limits) -> list[int]:
    if not isinstance(raw, list):
        raise InvalidInput(f"input {name!r}: shape must be a list of integers")
    if len(raw) > MAX_RANK:
        raise InvalidInput(f"input {name!r}: shape has {len(raw):,} dimensions, over the limit of {MAX_RANK}")
    # One plain loop (every request's path): integers only (``type is int`` also refuses bools), none
    # negative, and zero dimensions counted as one — [0, 2**62, 2**62] holds nothing, but numpy cannot
    # build it (a 500) and nested JSON data for it could be as long as its other dimensions.
    declared = 1
    for dimension in raw:
        if type(dimension) is not int:
            raise InvalidInput(f"input {name!r}: shape must be a list of integers")
        if dimension < 0:
            raise InvalidInput(f"input {name!r}: shape {raw} has a negative dimension")
        if dimension > 1:
            declared *= dimension
    if declared > limits.max_elements:
        raise InvalidInput(
            f"input {name!r}: shape {raw} declares {declared:,} elements, "
            f"over the limit of {limits.max_elements:,}"
        )
    return raw


def check_bytes_elements(total: int, limits: Limits) -> None:
    """``total``: the BYTES elements a request has declared so far (each becomes a Python object)."""
    if total > limits.max_bytes_elements:
        raise InvalidInput(f"the request holds more than {limits.max_bytes_elements:,} BYTES elements")


def _flatten(data: list[Any], name: str, budget: int) -> list[Any]:
    """The leaves of nested lists, refused as soon as more than ``budget`` lists and leaves have been
    seen, so data far longer than its declared shape costs no more than the shape allows. Recursion
    is bounded by the JSON depth limit."""
    out: list[Any] = []
    seen = 0

    def walk(items: list[Any]) -> None:
        nonlocal seen
        seen += len(items)
        if seen > budget:
            raise InvalidInput(f"input {name!r}: more values given than its shape holds")
        if list not in set(map(type, items)):  # the usual innermost list: scanned at C speed
            out.extend(items)
            return
        for item in items:
            if isinstance(item, list):
                walk(item)
            else:
                out.append(item)

    walk(data)
    return out


def _budget(shape: list[int]) -> int:
    """Lists and values a well-formed nested layout of ``shape`` visits: one list per index prefix and
    then the leaves — at most (rank + 1) times the declared elements (zero dimensions counted as one,
    as check_shape does)."""
    return (len(shape) + 1) * math.prod(max(d, 1) for d in shape)


def _from_json(data: Any, datatype: str, shape: list[int], name: str) -> np.ndarray:
    count = math.prod(shape)
    if not isinstance(data, list):
        data = [data]
    if datatype == "BYTES":
        flat = _flatten(data, name, _budget(shape))
        if not set(map(type, flat)) <= {str}:
            raise InvalidInput(f"input {name!r}: BYTES data must be strings")
        array = np.array(list(map(str.encode, flat)), dtype=object)
    else:
        if len(data) > max(count, shape[0] if shape else 1):
            raise InvalidInput(f"input {name!r}: more values given than its shape holds")
        try:
            values = np.asarray(data)
            if values.dtype.kind == "f" and datatype not in _FLOATS:
                # numpy makes floats of int64 and uint64 values together: read them again, exactly
                values = np.array(data, dtype=object)
        except ValueError:  # ragged nesting: flattened, as before, and then checked value by value
            values = np.array(_flatten(data, name, _budget(shape)), dtype=object)
        if values.size != count:
            raise InvalidInput(f"input {name!r}: {values.size} value(s) given for a shape holding {count}")
        array = numbers_as(values, datatype, name)
    if array.size != count:
        raise InvalidInput(f"input {name!r}: {array.size} value(s) given for a shape holding {count}")
    return array


def tensor_from_bytes(chunk: bytes, datatype: str, count: int, name: str) -> np.ndarray:
    if datatype == "BYTES":
        return _bytes_elements(chunk, count, name)
    dtype = np.dtype(DATATYPES[datatype]).newbyteorder("<")
    if len(chunk) != count * dtype.itemsize:
        raise InvalidInput(
            f"input {name!r}: {len(chunk)} bytes given for {count} {datatype} element(s) "
            f"({count * dtype.itemsize} bytes)"
        )
    if datatype == "BOOL" and chunk.count(0) + chunk.count(1) != len(chunk):
        # numpy would keep the byte: a "True" that is 2 when a model reads it as a number
        raise InvalidInput(f"input {name!r}: BOOL bytes must be 0 or 1")
    return np.frombuffer(chunk, dtype=dtype)


def _bytes_elements(chunk: bytes, count: int, name: str) -> np.ndarray:
    """``count`` BYTES elements (4-byte little-endian length, then the bytes) filling ``chunk`` exactly.

    The loop runs ``count`` times at most, and ``count`` is bounded by the BYTES element limit, so the
    data cannot make it run longer than the declaration allows (16 MB of empty elements are 4 million).
    """
    if len(chunk) < 4 * count:
        raise InvalidInput(f"input {name!r}: {len(chunk)} bytes cannot hold {count} BYTES element(s)")
    unpack = _LENGTH.unpack_from
    items: list[bytes] = [b""] * count
    offset = 0
    try:
        for index in range(count):  # no per-element bounds check: the end offset says it all
            start = offset + 4
            offset = start + unpack(chunk, offset)[0]
            items[index] = chunk[start:offset]
    except struct.error:  # a length prefix past the end: the data ended inside an element or prefix
        offset = len(chunk) + 1
    if offset > len(chunk):
        raise InvalidInput(f"input {name!r}: BYTES element runs past its data")
    if offset < len(chunk):
        raise InvalidInput(
            f"input {name!r}: {len(chunk) - offset} byte(s) left after its {count} BYTES element(s)"
        )
    return np.array(items, dtype=object)


def decode_request(body: bytes, header_length: str | None, limits: Limits) -> V2Request:
    if header_length is not None:
        try:
            json_length = int(header_length)
        except ValueError:
            raise InvalidInput("Inference-Header-Content-Length must be an integer") from None
        if not 0 < json_length <= len(body):
            raise InvalidInput("Inference-Header-Content-Length is outside the body")
        header, binary = body[:json_length], memoryview(body)[json_length:]
    else:
        header, binary = body, memoryview(b"")
    document = parse_json(header, limits)
    if not isinstance(document, dict):
        raise InvalidInput("the request must be a JSON object")
    raw_inputs = document.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput('the request needs a non-empty "inputs" list')
    inputs: list[Tensor] = []
    offset = 0
    total = texts = 0
    for raw in raw_inputs:
        if not isinstance(raw, dict):
            raise InvalidInput("each input must be an object with name, shape, datatype and data")
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidInput("each input needs a name")
        datatype = raw.get("datatype")
        if datatype not in DATATYPES:
            raise InvalidInput(f"input {name!r}: unknown datatype {str(datatype)[:20]!r}")
        shape = check_shape(raw.get("shape"), name, limits)
        count = math.prod(shape)
        total += count
        if total > limits.max_elements:
            raise InvalidInput(f"the request holds more than {limits.max_elements:,} elements")
        if datatype == "BYTES":
            texts += count
            check_bytes_elements(texts, limits)
        parameters = raw.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise InvalidInput(f"input {name!r}: parameters must be an object")
        size = parameters.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
                raise InvalidInput(f"input {name!r}: binary_data_size does not fit the binary data")
            array = tensor_from_bytes(bytes(binary[offset : offset + size]), datatype, count, name)
            offset += size
        elif "data" in raw:
            array = _from_json(raw["data"], datatype, shape, name)
        else:
            raise InvalidInput(f"input {name!r} has no data")
        inputs.append(Tensor(name, datatype, shape, array.reshape(shape) if datatype != "BYTES" else array))
    if offset != len(binary):
        raise InvalidInput("the binary data is longer than the inputs declare")
    parameters = document.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInput("parameters must be an object")
    raw_outputs = document.get("outputs")
    requested: list[str] | None = None
    binary_outputs: set[str] = set()
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in raw_outputs
        ):
            raise InvalidInput('"outputs" must be a list of objects with a name')
        requested = [o["name"] for o in raw_outputs]
        binary_outputs = {
            o["name"] for o in raw_outputs if (o.get("parameters") or {}).get("binary_data") is True
        }
    request_id = document.get("id")
    return V2Request(
        id=str(request_id)[:256] if request_id is not None else None,
        inputs=inputs,
        outputs=requested,
        binary_outputs=binary_outputs,
        binary_default=parameters.get("binary_data_output") is True,
        parameters=parameters,
    )


def tensor_bytes(tensor: Tensor) -> bytes:
    if tensor.datatype == "BYTES":
        return b"".join(struct.pack("<I", len(v)) + v for v in tensor.data.reshape(-1))
    return np.ascontiguousarray(
        tensor.data, dtype=np.dtype(DATATYPES[tensor.datatype]).newbyteorder("<")
    ).tobytes()


def encode_response(
    result: InferenceResult, request: V2Request, extra: dict[str, Any]
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header length when binary outputs follow it."""
    outputs = []
    blobs: list[bytes] = []
    for tensor in result.outputs(request.outputs):
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape}
        if tensor.name in request.binary_outputs or request.binary_default:
            blob = tensor_bytes(tensor)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif tensor.datatype == "BYTES":
            entry["data"] = [v.decode("utf-8", "replace") for v in tensor.data.reshape(-1)]
        else:
            entry["data"] = tensor.data.reshape(-1)
        outputs.append(entry)
    document: dict[str, Any] = {
        "model_name": result.model,
        "model_version": str(result.version),
        "outputs": outputs,
        "parameters": extra,
    }
    if request.id is not None:
        document["id"] = request.id
    header = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)
