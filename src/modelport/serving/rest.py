"""REST adapter: a raw ASGI application with one explicit route table.

No web framework on the hot path: a request is matched against the table below, its body read with a
hard size limit, handed to the data plane, and the answer serialised with orjson. Every failure —
including unknown paths (404), wrong methods (405) and oversized bodies (413) — is JSON:
``{"error": "..."}`` on ``/v2``, TensorFlow Serving's ``/v1`` and the health routes, MLflow's
``{"error_code", "message"}`` on the MLflow routes. Core errors are mapped to statuses in
:func:`status_for`, and only there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar
from urllib.parse import parse_qs

import orjson

from modelport._version import __version__
from modelport.errors import (
    ModelportError,
    NotFound,
    RateLimited,
    brief,
    outcome_for,
)
from modelport.events import routes as event_routes
from modelport.evidence import routes as evidence_routes
from modelport.monitoring.logs import ACCESS_LOG
from modelport.monitoring.logs import request_id as make_request_id
from modelport.monitoring.metrics import CONTENT_TYPE, LOCAL, render
from modelport.monitoring.tracing import Timeline
from modelport.registry.names import ModelRef
from modelport.security.gate import Gate
from modelport.security.keys import DEV_PRINCIPAL
from modelport.serving import management, tfserving, upload
from modelport.serving.dataplane import OFFLOAD_BYTES, DataPlane, TensorPayload, edge_ref
from modelport.serving.http import HTTPError, Request, Response, json_response, public_message
from modelport.serving.mlflow import FramePayload, UnsupportedMediaType, encode_predictions
from modelport.serving.v2 import HEADER_LENGTH, Limits, decode_request, encode_response
from modelport.serving.worker import Finished, Worker

__all__ = ["RestApp", "mlflow_ref", "status_for"]

log = logging.getLogger("modelport.serving")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def _token(headers: dict[str, str]) -> str | None:
    """The API key from ``Authorization: Bearer …`` or ``X-API-Key``. Both may be sent only when they
    carry the same key: otherwise which one counts would depend on who reads them (a proxy that checks
    one while this server used the other)."""
    authorization = headers.get("authorization")
    api_key = headers.get("x-api-key")
    if authorization is not None:
        scheme, _, value = authorization.partition(" ")
        token = value.strip() if scheme.lower() == "bearer" else None
        if api_key is not None and api_key != token:
            raise HTTPError(400, "Authorization and X-API-Key carry different credentials: send one")
        return token
    return api_key


# Headers a request may carry once: with two, the dict below would keep the last, while a proxy or log
# in front may have read the first.
_SINGLE = frozenset({"authorization", "x-api-key"})
# State-changing methods a browser can send cross-site (a form, or fetch with mode "no-cors").
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_LOOPBACK_ORIGIN = re.compile(r"https?://(?:localhost|127\.0\.0\.1|\[::1\])(?::[0-9]{1,5})?")


# host[:port] or [v6]:port — nothing else (no userinfo, no path)
_HOST = re.compile(r"(?:\[([0-9a-f:.]+)\]|([a-z0-9._-]+))(?::[0-9]{1,5})?")


def _pickled(content_type: str, body: bytes) -> bool:
    """A body declared as a pickle, or starting with a pickle protocol 2–5 header. Nothing here ever
    unpickles; this only turns such a body into a clear 415 instead of a parse error."""
    return "pickle" in content_type.lower() or (
        body[:1] == b"\x80" and body[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")
    )


def _client(scope: Scope) -> str | None:
    client = scope.get("client")
    return client[0] if client else None


def _query(scope: Scope) -> dict[str, list[str]]:
    raw = scope.get("query_string", b"")
    try:
        query = parse_qs(raw.decode("latin-1"), max_num_fields=20) if raw else {}
    except ValueError:
        raise HTTPError(400, "too many query parameters") from None
    if any(ord(c) < 32 or ord(c) == 127 for values in query.values() for v in values for c in v):
        raise HTTPError(400, "query parameters may not hold control characters")
    return query


def _complete(receive: Receive) -> bool:
    """Whether uvicorn already holds the request's whole body, so that ``receive()`` cannot wait: then
    no body timer is needed (one costs ~4 µs, on every request). Read from uvicorn's request cycle
    (``more_body`` turns False when the parser completes the message); anything else — another
    server, a test client — takes the timed path."""
    return getattr(getattr(receive, "__self__", None), "more_body", True) is False


def status_for(error: Exception) -> int:
    """The HTTP status of ``error``: the errors table's (``errors.OUTCOMES``), or an HTTPError's own."""
    if isinstance(error, HTTPError):
        return error.status
    return outcome_for(error).http


def mlflow_ref(text: str) -> ModelRef:
    """``NAME`` or ``NAME@SELECTOR`` from MLflow's ``/endpoints/{REF}`` (or the default model)."""
    name, sep, selector = text.partition("@")
    if sep and not selector:
        raise NotFound(f"reference {text[:100]!r} ends with '@': add an alias or a version number")
    return edge_ref(name, selector or None)


# An answer at least this many rows long is encoded on a thread (MLflow records for 300,000 rows take
# ~0.3 s of Python objects), so probes on the same worker keep answering.
OFFLOAD_ROWS = 5_000
_NO_DEFAULT = "no default model: start the server with --default-model or call /endpoints/{REF}/invocations"

Handler = Callable[["RestApp", Request], Awaitable[Response]]
_MODEL = r"(?P<name>[^/]+)"
_VERSION = r"(?:/versions/(?P<version>[^/]+))?"
# TF Serving paths end in ":predict", so a name stops at a colon; "labels/L" names the selector L
# (NAME@L: an alias, a version label or a number), read by _ref as a version segment is.
_TF_MODEL = r"/v1/models/(?P<name>[^/:]+)"
_TF_LABEL = r"/labels/(?P<version>[^/:]+)"


class RestApp:
    """The ASGI application: HTTP in, the worker's data plane and gate, HTTP out. Only translates."""

    def __init__(
        self,
        worker: Worker,
        limits: Limits,
        default_model: str | None = None,
        timeout: float = 30.0,
        body_timeout: float = 10.0,
        hsts: bool = False,
        allowed_hosts: tuple[str, ...] = (),
        metrics_public: bool = False,
    ) -> None:
        self.worker = worker
        # Answered on every response: HSTS when TLS is on; never any CORS header (no cross-origin reads).
        self.extra_headers: tuple[tuple[bytes, bytes], ...] = (
            ((b"strict-transport-security", b"max-age=31536000; includeSubDomains"),) if hsts else ()
        )
        self.allowed_hosts = frozenset(h.lower() for h in allowed_hosts)
        self._openapi: bytes | None = None
        self.metrics_public = metrics_public
        self.timeout = timeout
        self.body_timeout = body_timeout
        self.limits = limits
        self.default_model = default_model
        # the default model's reference, parsed once (serve checked its form at start-up)
        self.default_ref = mlflow_ref(default_model) if default_model is not None else None
        self.in_flight = 0
        self._console: Any = None  # the web console (modelport.ui), built on its first request

    @property
    def plane(self) -> DataPlane:
        return self.worker.plane

    @property
    def gate(self) -> Gate:
        return self.worker.gate

    # -- the route table ------------------------------------------------------------------------

    async def live(self, request: Request) -> Response:
        return json_response({"live": self.plane.live()})

    async def ready(self, request: Request) -> Response:
        ready = self.plane.ready()
        return json_response({"ready": ready}, 200 if ready else 503)

    async def server_metadata(self, request: Request) -> Response:
        return json_response(self.plane.server_metadata())

    async def model_metadata(self, request: Request) -> Response:
        return json_response(await self.plane.model_metadata(request.model_ref))

    async def model_ready(self, request: Request) -> Response:
        ref = request.model_ref
        self.plane.resolve(ref)  # unknown model or version: 404
        ready = await self.plane.model_ready(ref)
        return json_response({"name": ref.name, "ready": ready}, 200 if ready else 503)

    async def infer(self, request: Request) -> Response:
        ref = request.model_ref
        request.version = self.plane.resolve(ref)  # 404 before 400
        big = len(request.body) >= OFFLOAD_BYTES
        header_length = request.headers.get(HEADER_LENGTH)
        decoded = (
            await asyncio.to_thread(decode_request, request.body, header_length, self.limits)
            if big
            else decode_request(request.body, header_length, self.limits)
        )
        if decoded.id is not None and "x-request-id" not in request.headers:
            # the protocol's own request id names the request in every log, as over gRPC
            request.request_id = make_request_id(str(decoded.id))
        timeline = request.timeline
        if timeline is not None:
            timeline.parsed = time.perf_counter_ns()
        result = await self.plane.infer(
            ref,
            TensorPayload(decoded.inputs, len(request.body)),
            request_id=request.request_id,
            key_id=request.principal.key_id,
            timeline=timeline,
            headers=request.headers,
        )
        request.version, request.rows = result.version, result.rows
        parameters: dict[str, object] = {"model_version": result.version}
        if result.flags:
            parameters["flags"] = result.flags
            parameters["flag_count"] = sum(sum(kinds.values()) for kinds in result.flags.values())
        if result.rows >= OFFLOAD_ROWS:
            body, header_length_out = await asyncio.to_thread(encode_response, result, decoded, parameters)
        else:
            body, header_length_out = encode_response(result, decoded, parameters)
        if timeline is not None:
            timeline.serialised = time.perf_counter_ns()
        headers: tuple[tuple[bytes, bytes], ...] = ((b"x-model-version", str(result.version).encode()),)
        if header_length_out is None:
            return Response(body, headers=headers)
        headers += ((b"inference-header-content-length", str(header_length_out).encode()),)
        return Response(body, content_type=b"application/octet-stream", headers=headers)

    async def invocations(self, request: Request) -> Response:
        """MLflow scoring, through the same data plane as V2 and gRPC: value checks with the model's
        policy, flags, batching, release arms (sticky by header or field), shadow copies, the
        prediction log and statistics."""
        ref = request.model_ref
        request.version = self.plane.resolve(ref)  # 404 before 400
        content_type = request.headers.get("content-type", "application/json")
        timeline = request.timeline
        if timeline is not None:  # the table is decoded against the answering version's signature,
            timeline.parsed = time.perf_counter_ns()  # in the "validate" phase
        result = await self.plane.infer(
            ref,
            FramePayload(request.body, content_type, self.limits),
            request_id=request.request_id,
            key_id=request.principal.key_id,
            timeline=timeline,
            headers=request.headers,
        )
        request.version, request.rows = result.version, result.rows
        if result.rows >= OFFLOAD_ROWS:
            body = await asyncio.to_thread(
                encode_predictions, result.prediction, result.signature, result.flags
            )
        else:
            body = encode_predictions(result.prediction, result.signature, result.flags)
        if timeline is not None:
            timeline.serialised = time.perf_counter_ns()
        return Response(body, headers=((b"x-model-version", str(result.version).encode()),))

    async def repository_index(self, request: Request) -> Response:
        sees = request.principal.sees
        return json_response([entry for entry in self.plane.repository_index() if sees(entry["name"])])

    async def repository_load(self, request: Request) -> Response:
        await self.plane.load(request.model_ref)
        return json_response({})

    async def repository_unload(self, request: Request) -> Response:
        self.plane.unload(request.model_ref)
        return json_response({})

    async def statistics(self, request: Request) -> Response:
        stats = self.plane.statistics(request.ref)
        return json_response({"model_stats": [s for s in stats if request.principal.sees(s["name"])]})

    async def ping(self, request: Request) -> Response:
        return Response(b"\n", 200 if self.plane.ready() else 503)

    async def mlflow_version(self, request: Request) -> Response:
        return Response(__version__.encode(), content_type=b"text/plain")

    async def metrics(self, request: Request) -> Response:
        LOCAL.flush()  # this worker's latest counts; the others flush on their own within 0.25 s
        body = await asyncio.to_thread(render)
        monitor = self.worker.monitor
        if monitor is not None:
            body += monitor.exposition()  # drift and live accuracy, computed by one worker
        principal = request.principal
        if principal.role != "admin" and "*" not in principal.models:
            # A scoped key reads only its models' series: a model's existence is not revealed outside
            # a key's patterns (docs/security.md). Keys with `*` and public scrapers skip the filtering.
            from modelport.monitoring.metrics import scoped

            body = await asyncio.to_thread(scoped, body, principal.sees)
        return Response(body, content_type=CONTENT_TYPE)

    async def openapi(self, request: Request) -> Response:
        if self._openapi is None:
            from modelport.serving.openapi import document

            self._openapi = orjson.dumps(document(self.ROUTES))
        return Response(self._openapi)

    # method, path pattern, handler, whether errors use MLflow's shape, permission (None = open probe)
    ROUTES: ClassVar[tuple[tuple[str, re.Pattern[str], Handler, bool, str | None], ...]] = (
        ("GET", re.compile(r"/v2/health/live"), live, False, None),
        ("GET", re.compile(r"/v2/health/ready"), ready, False, None),
        ("GET", re.compile(r"/v2/?"), server_metadata, False, "read"),
        ("GET", re.compile(r"/v2/models/stats"), statistics, False, "read"),  # before /v2/models/{name}
        ("GET", re.compile(rf"/v2/models/{_MODEL}{_VERSION}"), model_metadata, False, "read"),
        ("GET", re.compile(rf"/v2/models/{_MODEL}{_VERSION}/ready"), model_ready, False, "read"),
        ("POST", re.compile(rf"/v2/models/{_MODEL}{_VERSION}/infer"), infer, False, "infer"),
        ("GET", re.compile(rf"/v2/models/{_MODEL}{_VERSION}/stats"), statistics, False, "read"),
        ("POST", re.compile(r"/v2/repository/index"), repository_index, False, "read"),
        ("POST", re.compile(rf"/v2/repository/models/{_MODEL}/load"), repository_load, False, "publish"),
        ("POST", re.compile(rf"/v2/repository/models/{_MODEL}/unload"), repository_unload, False, "publish"),
        ("GET", re.compile(r"/ping"), ping, True, None),
        ("GET", re.compile(r"/health"), ping, True, None),
        ("GET", re.compile(r"/version"), mlflow_version, True, "read"),
        ("POST", re.compile(r"/invocations"), invocations, True, "infer"),
        ("POST", re.compile(r"/endpoints/(?P<ref>[^/]+)/invocations"), invocations, True, "infer"),
        # TensorFlow Serving / KServe V1 REST (serving/tfserving.py): errors as {"error": ...}
        ("POST", re.compile(rf"{_TF_MODEL}{_VERSION}:predict"), tfserving.tf_predict, False, "infer"),
        ("POST", re.compile(rf"{_TF_MODEL}{_TF_LABEL}:predict"), tfserving.tf_predict, False, "infer"),
        ("GET", re.compile(rf"{_TF_MODEL}{_VERSION}"), tfserving.tf_model_status, False, "read"),
        ("GET", re.compile(rf"{_TF_MODEL}{_TF_LABEL}"), tfserving.tf_model_status, False, "read"),
        ("GET", re.compile(rf"{_TF_MODEL}{_VERSION}/metadata"), tfserving.tf_model_metadata, False, "read"),
        ("GET", re.compile(r"/openapi\.json"), openapi, False, "read"),
        # "metrics": open to scrapers with MODELPORT_METRICS_PUBLIC, else any valid key ("read")
        ("GET", re.compile(r"/metrics"), metrics, False, "metrics"),
        *management.ROUTES,
        # registration over HTTP: a streamed multipart upload, registered in a limited child process
        (
            "POST",
            re.compile(r"/api/v1/models/(?P<name>[^/]+)/versions"),
            upload.register_version,
            False,
            "publish",
        ),
        *event_routes.ROUTES,  # webhooks: subscriptions and deliveries (events/)
        *evidence_routes.ROUTES,  # what served at a time, as a verifiable bundle (evidence/)
    )

    # -- ASGI -----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["path"] == "/ui" or scope["path"].startswith("/ui/"):
            # The web console has its own route table and signs people in with cookies (ui/routes.py)
            if self._console is None:
                from modelport.ui import Console

                self._console = Console(self, self.worker.registry.settings.console_session_hours)
            await self._console(scope, receive, send)
            return
        started = time.perf_counter()
        method, path = scope["method"], scope["path"]
        matched = self.match(method, path)
        mlflow_errors = matched[2] if matched else not path.startswith(("/v2", "/v1/"))
        self.in_flight += 1
        request: Request | None = None
        ref: ModelRef | None = None
        body = b""
        request_id = ""
        try:
            raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw_headers}
            request_id = make_request_id(headers.get("x-request-id"))
            if len(headers) < len(raw_headers):  # some name came twice: only ever this slow path
                self._check_repeated(raw_headers)
            if self.gate.insecure and method in _UNSAFE:
                self._check_cross_site(headers)
            if matched is None or matched[3] is not None:  # probes answer whatever Host a balancer sends
                self._check_host(headers.get("host", ""))
            if matched is None:
                same_path = [route for route in self.ROUTES if route[1].fullmatch(path)]
                allowed = bool(same_path)
                if not any(route[4] is None for route in same_path):
                    # Unknown paths and wrong methods ask for a key first: without one, nothing
                    # about the route table leaks.
                    await self.gate.authenticate(_token(headers), _client(scope))
                raise HTTPError(
                    405 if allowed else 404,
                    f"{'method not allowed' if allowed else 'no route'}: {method} {path}",
                )
            handler, params, _, permission = matched
            if permission == "metrics":
                permission = None if self.metrics_public else "read"
            # The reference is parsed here, once; a malformed one is reported after admission (a
            # client without a key learns nothing, not even that a name is malformed).
            malformed: ModelportError | None = None
            try:
                ref = self._ref(params, path)
            except ModelportError as exc:
                malformed = exc
            principal = DEV_PRINCIPAL
            if permission is not None:
                principal = await self.gate.admit(
                    _token(headers),
                    _client(scope),
                    permission,
                    ref.name if ref is not None and path != "/invocations" else None,
                    on_denied=lambda who: self.worker.record_denial(who, f"{method} {path}"),
                )
                if path == "/invocations" and (ref is None or not principal.sees(ref.name)):
                    raise HTTPError(404, _NO_DEFAULT)  # the default model's name is not revealed
            if malformed is not None:
                raise malformed
            streams = getattr(handler, "streams_body", False)  # an upload reads its own body, streaming
            reads = method in ("POST", "PUT", "PATCH") and not streams
            body = await self._read_body(receive, headers) if reads else b""
            if _pickled(headers.get("content-type", ""), body):
                raise UnsupportedMediaType(
                    "pickled bodies are never accepted (they can run code): send JSON, CSV "
                    "or the binary tensor extension"
                )
            request = Request(method, path, params, headers, body, principal, _query(scope))
            if streams:
                request.receive = receive
            request.request_id = request_id
            request.ref = ref
            if self.worker.tracer is not None and permission == "infer":  # admitted inference only
                request.timeline = Timeline(
                    int(started * 1e9), headers.get("traceparent"), headers.get("tracestate")
                )
            if method != "GET" and path.startswith("/api/"):
                # A change is not cut off by the request timeout: its thread would commit after a 504.
                # It is bounded by the database's lock timeout instead, so the answer says what happened.
                response = await handler(self, request)
            else:
                try:
                    async with asyncio.timeout(self.timeout):  # no extra task per request, unlike wait_for
                        response = await handler(self, request)
                except TimeoutError:
                    raise HTTPError(504, f"the request was not answered within {self.timeout:g} s") from None
        except Exception as exc:
            response = self._error(exc, mlflow_errors)
        finally:
            self.in_flight -= 1
        if request is not None:
            request_id = request.request_id  # a V2 body may have named it
        if matched is not None and matched[3] == "infer":
            self.worker.finished(
                Finished(
                    _protocol(path, mlflow_errors),
                    ref,
                    request.version if request is not None else None,
                    response.status,
                    started,
                    request.principal if request is not None else None,
                    rows=request.rows if request is not None else 0,
                    bytes_in=len(body),
                    bytes_out=len(response.body),
                    request_id=request_id,
                    timeline=request.timeline if request is not None else None,
                )
            )
        if matched is None or matched[3] is not None:  # probes are not logged: balancers poll them
            self._log(method, path, ref, request, response.status, started, request_id)
        if response.file is not None:
            await self._send_file(send, response, request_id)
            return
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [
                    (b"content-type", response.content_type),
                    (b"content-length", str(len(response.body)).encode()),
                    *response.headers,
                    *self.extra_headers,
                    (b"x-request-id", request_id.encode()),
                    # a body left half-sent: the connection cannot carry another request
                    *(((b"connection", b"close"),) if response.status == 408 else ()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": response.body})

    async def _send_file(self, send: Any, response: Response, request_id: str) -> None:
        """A file, a MiB at a time, read off the event loop (a job's output may be gigabytes)."""
        assert response.file is not None
        with response.file.open("rb") as source:
            size = os.fstat(source.fileno()).st_size
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status,
                    "headers": [
                        (b"content-type", response.content_type),
                        (b"content-length", str(size).encode()),
                        *response.headers,
                        *self.extra_headers,
                        (b"x-request-id", request_id.encode()),
                    ],
                }
            )
            left = size
            while left > 0:
                piece = await asyncio.to_thread(source.read, min(left, 1 << 20))
                if not piece:
                    break
                left -= len(piece)
                await send({"type": "http.response.body", "body": piece, "more_body": left > 0})
            if left > 0:  # the file shrank while being sent: the client sees a short body
                await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _ref(self, params: dict[str, str], path: str) -> ModelRef | None:
        """The reference a route names: ``{name}`` (+ ``{version}``), MLflow's ``{ref}``, or the
        default model on ``/invocations``; None for routes about no model."""
        if "name" in params:
            return edge_ref(params["name"], params.get("version"))
        if "ref" in params:
            return mlflow_ref(params["ref"])
        if path == "/invocations":
            return self.default_ref
        return None

    def _log(
        self,
        method: str,
        path: str,
        ref: ModelRef | None,
        request: Request | None,
        status: int,
        started: float,
        request_id: str,
    ) -> None:
        if not ACCESS_LOG.enabled:
            return
        fields: dict[str, object] = {
            "msg": "request",
            "event": "request",
            "request_id": request_id,
            "method": method,
            "path": path[:300],
            "status": status,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
        }
        if request is not None:
            fields["key_id"] = request.principal.key_id
            if request.version is not None:
                fields["version"] = request.version
            if request.rows:
                fields["rows"] = request.rows
        if ref is not None:
            fields["model"] = ref.name
        ACCESS_LOG.write(fields)

    def _check_host(self, host: str) -> None:
        if not self.allowed_hosts:
            return
        found = _HOST.fullmatch(host.lower())
        name = (found.group(1) or found.group(2)) if found else None
        if name is None or (name not in self.allowed_hosts and "*" not in self.allowed_hosts):
            raise HTTPError(400, "the Host header names a host this server does not answer for")

    def match(self, method: str, path: str) -> tuple[Handler, dict[str, str], bool, str | None] | None:
        for route_method, pattern, handler, mlflow_errors, permission in self.ROUTES:
            if route_method != method:
                continue
            found = pattern.fullmatch(path)
            if found:
                params = {k: v for k, v in found.groupdict().items() if v is not None}
                return handler, params, mlflow_errors, permission
        return None

    async def _read_body(self, receive: Receive, headers: dict[str, str]) -> bytes:
        limit = self.limits.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HTTPError(413, f"body of {int(declared):,} bytes is over the limit of {limit:,}")
        if _complete(receive):  # the usual case: the whole body came with the headers
            message = await receive()
            if message["type"] == "http.disconnect":
                raise HTTPError(400, "client disconnected")
            body: bytes = message.get("body", b"")
            if len(body) > limit:
                raise HTTPError(413, f"body is over the limit of {limit:,} bytes")
            return body
        chunks: list[bytes] = []
        size = 0
        loop = asyncio.get_running_loop()
        # A body that stops must not hold the worker's memory and a connection for ever: each piece
        # must come within body_timeout, the whole body within the request timeout. One timeout for
        # the whole read, moved on at each piece (not one per receive: this is every request's path).
        finish = loop.time() + self.timeout
        try:
            async with asyncio.timeout(min(loop.time() + self.body_timeout, finish)) as deadline:
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise HTTPError(400, "client disconnected")
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise HTTPError(413, f"body is over the limit of {limit:,} bytes")
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
                    deadline.reschedule(min(loop.time() + self.body_timeout, finish))
        except TimeoutError:
            raise HTTPError(
                408,
                f"the request body did not arrive in time ({self.body_timeout:g} s between pieces, "
                f"{self.timeout:g} s in all)",
            ) from None

    @staticmethod
    def _check_repeated(raw_headers: list[tuple[bytes, bytes]]) -> None:
        seen: set[bytes] = set()
        for name, _ in raw_headers:
            lowered = name.lower()
            if lowered in seen and lowered.decode("latin-1") in _SINGLE:
                raise HTTPError(400, f"the {lowered.decode('latin-1')} header may be sent only once")
            seen.add(lowered)

    @staticmethod
    def _check_cross_site(headers: dict[str, str]) -> None:
        """Without keys (``--insecure-dev``) any web page the developer opens could POST here: refuse
        what a browser sends on another site's behalf. Clients that are not browsers send no Origin."""
        origin = headers.get("origin")
        site = headers.get("sec-fetch-site", "").lower()
        if site in ("cross-site", "same-site") or (
            origin is not None and not _LOOPBACK_ORIGIN.fullmatch(origin.lower())
        ):
            raise HTTPError(403, "cross-site request refused: this server runs without keys (--insecure-dev)")

    @staticmethod
    def _error(exc: Exception, mlflow_errors: bool) -> Response:
        """An error as JSON: ``{"error": …}``, or MLflow's ``{"error_code", "message"}`` on its routes;
        statuses and codes from the one errors table (``errors.OUTCOMES``)."""
        known = isinstance(exc, ModelportError | HTTPError)
        if not known:
            # The client hears only "internal error"; the operator needs the traceback.
            log.error("unexpected error answering a request", exc_info=exc)
        status = status_for(exc)
        message = public_message(exc) if known else "internal error: the model failed"
        headers: tuple[tuple[bytes, bytes], ...] = ()
        if status == 401:
            headers = ((b"www-authenticate", b'Bearer realm="modelport"'),)
        elif isinstance(exc, RateLimited):
            headers = ((b"retry-after", str(max(1, math.ceil(exc.retry_after))).encode()),)
        if isinstance(exc, ModelportError):
            # the class, beside the body each protocol fixes: a client raises exactly it (modelport.errors)
            headers += ((b"x-modelport-error", type(exc).__name__.encode()),)
        if mlflow_errors:
            if isinstance(exc, HTTPError):
                code = _MLFLOW_HTTP_CODES.get(status, "INTERNAL_ERROR")
            else:
                code = outcome_for(exc).mlflow
            return json_response({"error_code": code, "message": message}, status, headers)
        return json_response({"error": message}, status, headers)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.worker.start()
                except Exception as exc:  # one line for the operator; serve stops (supervisor.py)
                    with contextlib.suppress(Exception):  # undo what did start, as far as it goes
                        await self.worker.stop()
                    reason = f"{type(exc).__name__}: {brief(exc)}"
                    await send({"type": "lifespan.startup.failed", "message": reason})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.worker.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _protocol(path: str, mlflow_errors: bool) -> str:
    """An inference route's protocol, the metric label of its requests."""
    if mlflow_errors:
        return "mlflow"
    return "tfserving" if path.startswith("/v1/") else "v2"


# MLflow codes for errors the HTTP layer raises itself (sizes, media types, routes, timeouts).
_MLFLOW_HTTP_CODES = {
    400: "BAD_REQUEST",
    404: "RESOURCE_DOES_NOT_EXIST",
    405: "RESOURCE_DOES_NOT_EXIST",
    408: "BAD_REQUEST",
    413: "BAD_REQUEST",
    415: "BAD_REQUEST",
    504: "DEADLINE_EXCEEDED",
}
