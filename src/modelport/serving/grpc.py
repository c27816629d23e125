"""gRPC adapter: ``inference.GRPCInferenceService`` (Open Inference Protocol) over grpc.aio.

Runs in the same worker processes and event loop as REST, over the same data plane. Inputs may be
typed ``contents`` or ``raw_input_contents``; outputs are always ``raw_output_contents``. Messages up to
``MODELPORT_MAX_BODY_BYTES`` are accepted (64 MiB by default, far above gRPC's 4 MiB default). Statistics
and repository RPCs answer UNIMPLEMENTED (they are served over REST). Several workers share one port
with ``SO_REUSEPORT``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelport.errors import InvalidInput, ModelportError, RateLimited, outcome_for
from modelport.monitoring.tracing import Timeline
from modelport.optional import require
from modelport.registry.names import ModelRef
from modelport.security.keys import Principal
from modelport.serving.dataplane import TensorPayload, edge_ref
from modelport.serving.http import public_message

# A missing or too old grpcio/protobuf fails on this import, naming the extra (serving/protocol/__init__.py).
from modelport.serving.protocol import PURPOSE
from modelport.serving.protocol import inference_pb2 as pb
from modelport.serving.protocol import inference_pb2_grpc as pb_grpc
from modelport.serving.tensors import DATATYPES, Tensor, numbers_as
from modelport.serving.v2 import (
    Limits,
    check_bytes_elements,
    check_shape,
    tensor_bytes,
    tensor_from_bytes,
)
from modelport.serving.worker import Finished, Worker

if TYPE_CHECKING:
    import grpc
else:
    grpc = require("grpc", "grpc", PURPOSE)

__all__ = ["GrpcServer"]

_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def _code(error: BaseException) -> grpc.StatusCode:
    """The gRPC status of ``error``, from the one errors table (``errors.OUTCOMES``)."""
    return grpc.StatusCode[outcome_for(error).grpc]


def _message(error: ModelportError) -> str:
    """What a client may read: database errors carry the database's address, so they say less."""
    return public_message(error)


def _inputs(request: Any, limits: Limits) -> list[Tensor]:
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput("raw_input_contents must hold one entry per input")
    tensors = []
    total = texts = 0
    for index, item in enumerate(request.inputs):
        if item.datatype not in DATATYPES:
            raise InvalidInput(f"input {item.name!r}: unknown datatype {item.datatype[:20]!r}")
        shape = check_shape(list(item.shape), item.name, limits)
        count = math.prod(shape)
        total += count
        if total > limits.max_elements:
            raise InvalidInput(f"the request holds more than {limits.max_elements:,} elements")
        if item.datatype == "BYTES":
            texts += count
            check_bytes_elements(texts, limits)
        if raw:
            array = tensor_from_bytes(raw[index], item.datatype, count, item.name)
        else:
            field = _CONTENTS.get(item.datatype)
            if field is None:
                raise InvalidInput(
                    f"input {item.name!r}: {item.datatype} has no typed contents: send raw bytes"
                )
            contents = getattr(item.contents, field)
            if len(contents) != count:  # before any copy: the field may hold millions of values
                raise InvalidInput(
                    f"input {item.name!r}: {len(contents)} value(s) given for a shape holding {count}"
                )
            # The typed fields are wider than the small types they carry (uint_contents holds UINT8
            # as uint32): 300 must be refused for UINT8, not wrapped or raised as a 500.
            array = (
                np.array(list(contents), dtype=object)
                if item.datatype == "BYTES"
                else numbers_as(np.array(contents), item.datatype, item.name)
            )
        tensors.append(
            Tensor(
                item.name, item.datatype, shape, array.reshape(shape) if item.datatype != "BYTES" else array
            )
        )
    return tensors


def _token(context: Any) -> str | None:
    """The API key from ``authorization: Bearer …`` or ``x-api-key`` metadata. As over REST, each may
    come once, and both only with the same key: which of two counted would depend on who reads them."""
    found: dict[str, list[str]] = {"authorization": [], "x-api-key": []}
    for key, value in context.invocation_metadata() or ():
        if key in found:
            found[key].append(str(value))
    authorization, api_key = found["authorization"], found["x-api-key"]
    if len(authorization) > 1 or len(api_key) > 1:
        raise InvalidInput("authorization and x-api-key metadata may be sent only once")
    token = api_key[0] if api_key else None
    if authorization:
        scheme, _, value = authorization[0].partition(" ")
        bearer = value.strip() if scheme.lower() == "bearer" else None
        if token is not None and token != bearer:
            raise InvalidInput("authorization and x-api-key carry different credentials: send one")
        token = bearer
    return token


def _address(context: Any) -> str | None:
    """The client address as the REST adapter sees it, so both protocols share one failure budget:
    ``ipv4:127.0.0.1:5555`` → ``127.0.0.1``; ``ipv6:[::1]:5555`` (or ``%5B::1%5D``) → ``::1``."""
    from urllib.parse import unquote

    peer = unquote(str(context.peer() or ""))
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    if kind == "ipv6":
        return rest.rsplit(":", 1)[0].strip("[]")
    return peer or None


class _Servicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, worker: Worker, limits: Limits) -> None:
        self.worker = worker
        self.plane = worker.plane
        self.limits = limits

    async def _admit(self, context: Any, permission: str, name: str | None = None) -> Principal:
        """The gate's one admission, as over REST: key, then rate and quota, then role, then the key's
        model scope (a model outside it answers like a missing one)."""
        try:
            return await self.worker.gate.admit(
                _token(context),
                _address(context),
                permission,
                name,
                on_denied=lambda who: self.worker.record_denial(who, f"gRPC {permission}"),
            )
        except RateLimited as exc:
            context.set_trailing_metadata((("retry-after", str(max(1, math.ceil(exc.retry_after)))),))
            await context.abort(_code(exc), str(exc))
        except ModelportError as exc:
            await context.abort(_code(exc), _message(exc))
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    async def _ref(self, context: Any, name: str, version: str) -> ModelRef:
        try:
            return edge_ref(name, version or None)
        except ModelportError as exc:
            await context.abort(_code(exc), _message(exc))
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    async def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=self.plane.live())

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.plane.ready())

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        await self._admit(context, "read")
        meta = self.plane.server_metadata()
        return pb.ServerMetadataResponse(
            name=meta["name"], version=meta["version"], extensions=meta["extensions"]
        )

    async def ModelReady(self, request: Any, context: Any) -> Any:
        await self._admit(context, "read", request.name)
        ref = await self._ref(context, request.name, request.version)
        try:
            self.plane.resolve(ref)
            ready = await self.plane.model_ready(ref)
        except ModelportError as exc:
            await context.abort(_code(exc), _message(exc))
        except Exception:
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        return pb.ModelReadyResponse(ready=ready)

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        await self._admit(context, "read", request.name)
        ref = await self._ref(context, request.name, request.version)
        try:
            meta = await self.plane.model_metadata(ref)
        except ModelportError as exc:
            await context.abort(_code(exc), _message(exc))
        except Exception:
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta["inputs"]],
            outputs=[
                tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta["outputs"]
            ],
        )

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        started = time.perf_counter()
        principal = await self._admit(context, "infer", request.model_name)
        timeline = None
        if self.worker.tracer is not None:
            metadata = dict(context.invocation_metadata() or ())
            timeline = Timeline(int(started * 1e9), metadata.get("traceparent"), metadata.get("tracestate"))
        size = request.ByteSize()
        done = Finished(
            "grpc",
            None,
            None,
            200,
            started,
            principal,
            bytes_in=size,
            request_id=request.id[:128],
            timeline=timeline,
        )
        try:
            done.ref = ref = edge_ref(request.model_name, request.model_version or None)
            done.version = self.plane.resolve(ref)  # NOT_FOUND before INVALID_ARGUMENT
            inputs = _inputs(request, self.limits)
            if timeline is not None:
                timeline.parsed = time.perf_counter_ns()
            requested = [o.name for o in request.outputs] or None
            result = await self.plane.infer(
                ref,
                TensorPayload(inputs, size),
                request_id=request.id[:128],
                key_id=principal.key_id,
                timeline=timeline,
                headers=_metadata(context),
            )
            done.version = result.version
            outputs = result.outputs(requested)
        except Exception as exc:
            outcome = outcome_for(exc)
            done.status, done.wire_status = outcome.http, _code(exc).value[0]
            self.worker.finished(done)
            if isinstance(exc, ModelportError):
                await context.abort(_code(exc), _message(exc))
            await context.abort(grpc.StatusCode.INTERNAL, "internal error: the model failed")
        response = pb.ModelInferResponse(
            model_name=result.model, model_version=str(result.version), id=request.id
        )
        response.parameters["model_version"].int64_param = result.version
        if result.flags:
            response.parameters["flag_count"].int64_param = sum(
                sum(k.values()) for k in result.flags.values()
            )
            response.parameters["flags"].string_param = json.dumps(result.flags, separators=(",", ":"))
        for tensor in outputs:
            response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
            response.raw_output_contents.append(tensor_bytes(tensor))
        context.set_trailing_metadata((("x-model-version", str(result.version)),))
        if timeline is not None:
            timeline.serialised = time.perf_counter_ns()
        done.rows, done.bytes_out, done.wire_status = result.rows, response.ByteSize(), 0
        self.worker.finished(done)
        return response


class GrpcServer:
    """Starts and stops the gRPC server inside a worker's event loop (a :class:`ProtocolServer`)."""

    def __init__(
        self,
        worker: Worker,
        limits: Limits,
        host: str,
        port: int,
        *,
        tls: tuple[Path, Path] | None = None,
        handshake_timeout: float = 10.0,
    ) -> None:
        self.worker, self.limits, self.address = worker, limits, f"{host}:{port}"
        self.tls = tls
        self.handshake_timeout = handshake_timeout
        self._server: Any = None

    async def start(self) -> None:
        size = self.limits.max_body_bytes
        self._server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", size),
                ("grpc.max_send_message_length", size),
                ("grpc.so_reuseport", 1),
                # What a client without a key can hold (the REST side's header timeout and limits):
                # a connection must finish its TLS and HTTP/2 handshake in time, may run 100 calls at
                # once (HTTP/2's suggested floor; more wait in the client), and is closed after 5
                # idle minutes. Metadata stays within gRPC's own default (8 KiB soft, 16 KiB hard).
                ("grpc.server_handshake_timeout_ms", int(self.handshake_timeout * 1000)),
                ("grpc.max_concurrent_streams", 100),
                ("grpc.max_connection_idle_ms", 300_000),
            ]
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(  # type: ignore[no-untyped-call]
            _Servicer(self.worker, self.limits), self._server
        )
        if self.tls is None:
            self._server.add_insecure_port(self.address)
        else:
            cert, key = (path.read_bytes() for path in self.tls)
            self._server.add_secure_port(self.address, grpc.ssl_server_credentials([(key, cert)]))
        await self._server.start()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=30)


def _metadata(context: Any) -> dict[str, str]:
    """The call's metadata as lower-case header names (for a release's sticky key)."""
    return {str(k).lower(): str(v) for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
