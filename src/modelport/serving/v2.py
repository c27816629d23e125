"""Open Inference Protocol (KServe V2) REST codec, with the binary tensor data extension.

Bodies are parsed from raw bytes whatever the Content-Type. With an ``Inference-Header-Content-Length``
header the first that many bytes are the JSON header and the rest holds the tensors whose parameters
give ``binary_data_size`` (``BYTES`` elements as 4-byte little-endian length + bytes). JSON ``NaN`` and
``Infinity`` tokens are accepted. Every declared shape is checked against the element limit *before*
anything is allocated; data must match the shape exactly.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from modelport.errors import InvalidInput
from modelport.serving.dataplane import InferenceResult
from modelport.serving.tensors import DATATYPES, Tensor

__all__ = [
    "Limits",
    "V2Request",
    "check_shape",
    "decode_request",
    "encode_response",
    "parse_json",
    "tensor_bytes",
    "tensor_from_bytes",
]

HEADER_LENGTH = "inference-header-content-length"


@dataclass(frozen=True, slots=True)
class Limits:
    max_body_bytes: int = 64 << 20
    max_elements: int = 16_000_000
    max_json_depth: int = 64


@dataclass(slots=True)
class V2Request:
    id: str | None
    inputs: list[Tensor]
    outputs: list[str] | None
    binary_outputs: set[str]
    binary_default: bool
    parameters: dict[str, Any]


def _depth_ok(data: bytes, limit: int) -> bool:
    """Cheap bracket-depth scan (strings included, which only over-counts) before any parser recursion."""
    depth = 0
    for byte in data:
        if byte in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return False
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return True


def parse_json(data: bytes, limits: Limits) -> Any:
    # Counting brackets is C-fast; the exact depth scan runs only when there could be deep nesting.
    brackets = data.count(b"[") + data.count(b"{")
    if brackets > limits.max_json_depth and not _depth_ok(data, limits.max_json_depth):
        raise InvalidInput(f"JSON nests deeper than {limits.max_json_depth} levels")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    try:  # the standard parser accepts NaN / Infinity / -Infinity tokens
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"body is not valid JSON: {str(exc)[:120]}") from None


def check_shape(raw: Any, name: str, limits: Limits) -> list[int]:
    if not isinstance(raw, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in raw):
        raise InvalidInput(f"input {name!r}: shape must be a list of integers")
    if any(d < 0 for d in raw):
        raise InvalidInput(f"input {name!r}: shape {raw} has a negative dimension")
    if math.prod(raw) > limits.max_elements:
        raise InvalidInput(
            f"input {name!r}: shape {raw} declares {math.prod(raw):,} elements, "
            f"over the limit of {limits.max_elements:,}"
        )
    return raw


def _flatten(data: Any, name: str, depth: int = 0) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    for item in data:
        out.extend(_flatten(item, name, depth + 1) if isinstance(item, list) else [item])
    return out


def _from_json(data: Any, datatype: str, count: int, name: str) -> np.ndarray:
    if not isinstance(data, list):
        data = [data]
    dtype = DATATYPES[datatype]
    if datatype == "BYTES":
        flat = _flatten(data, name)
        if not all(isinstance(v, str | bytes) for v in flat):
            raise InvalidInput(f"input {name!r}: BYTES data must be strings")
        array = np.array([v.encode() if isinstance(v, str) else v for v in flat], dtype=object)
    else:
        try:
            array = np.asarray(data, dtype=dtype).reshape(-1)
        except (TypeError, ValueError):
            flat = _flatten(data, name)
            if any(isinstance(v, bool | int | float) is False and v is not None for v in flat):
                raise InvalidInput(f"input {name!r}: data must be {datatype} numbers") from None
            if dtype not in (np.float16, np.float32, np.float64):
                raise InvalidInput(f"input {name!r}: data must be {datatype} numbers") from None
            array = np.array([np.nan if v is None else v for v in flat], dtype=dtype)
    if array.size != count:
        raise InvalidInput(f"input {name!r}: {array.size} value(s) given for a shape holding {count}")
    return array


def tensor_from_bytes(chunk: bytes, datatype: str, count: int, name: str) -> np.ndarray:
    if datatype == "BYTES":
        items, offset = [], 0
        while offset < len(chunk):
            if offset + 4 > len(chunk):
                raise InvalidInput(f"input {name!r}: truncated BYTES length prefix")
            (length,) = struct.unpack_from("<I", chunk, offset)
            offset += 4
            if offset + length > len(chunk):
                raise InvalidInput(f"input {name!r}: BYTES element runs past its data")
            items.append(chunk[offset : offset + length])
            offset += length
        array = np.array(items, dtype=object)
    else:
        dtype = np.dtype(DATATYPES[datatype]).newbyteorder("<")
        if len(chunk) != count * dtype.itemsize:
            raise InvalidInput(
                f"input {name!r}: {len(chunk)} bytes given for {count} {datatype} element(s) "
                f"({count * dtype.itemsize} bytes)"
            )
        array = np.frombuffer(chunk, dtype=dtype)
    if array.size != count:
        raise InvalidInput(f"input {name!r}: {array.size} value(s) given for a shape holding {count}")
    return array


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
    total = 0
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
            array = _from_json(raw["data"], datatype, count, name)
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
    for tensor in result.outputs:
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
