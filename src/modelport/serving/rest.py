"""REST adapter: a raw ASGI application with one explicit route table.

No web framework on the hot path: a request is matched against the table below, its body read with a
hard size limit, handed to the data plane, and the answer serialised with orjson. Every failure —
including unknown paths (404), wrong methods (405) and oversized bodies (413) — is JSON:
``{"error": "..."}`` on ``/v2`` and the health routes, MLflow's ``{"error_code", "message"}`` on the
MLflow routes. Core errors are mapped to statuses in :func:`status_for`, and only there.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import re
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qs

import orjson

from modelport._version import __version__
from modelport.errors import (
    Conflict,
    Forbidden,
    InputMismatch,
    InvalidInput,
    ModelNotFound,
    ModelportError,
    NotFound,
    RateLimited,
    ScoringTimeout,
    StoreNotReady,
    Unauthenticated,
    VersionArchived,
    VersionFailing,
)
from modelport.monitoring.logs import ACCESS_LOG
from modelport.monitoring.logs import request_id as make_request_id
from modelport.monitoring.metrics import CONTENT_TYPE, LOCAL, METRICS, alias_label, outcome_of, render
from modelport.monitoring.monitor import Monitor
from modelport.monitoring.tracing import Timeline, Tracer
from modelport.registry.names import is_model_name, parse_ref
from modelport.registry.service import LoadedVersion
from modelport.releases.manager import ReleaseManager
from modelport.security.gate import Gate
from modelport.security.keys import DEV_PRINCIPAL, Principal
from modelport.serving import management
from modelport.serving.dataplane import DataPlane
from modelport.serving.http import HTTPError, Request, Response, json_response, public_message
from modelport.serving.mlflow import UnsupportedMediaType, decode_frame, encode_predictions
from modelport.serving.v2 import HEADER_LENGTH, Limits, decode_request, encode_response

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["RestApp", "status_for"]

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
    """The one place core errors become HTTP statuses."""
    if isinstance(error, HTTPError):
        return error.status
    if isinstance(error, Unauthenticated):
        return 401
    if isinstance(error, Forbidden):
        return 403
    if isinstance(error, RateLimited):
        return 429
    if isinstance(error, UnsupportedMediaType):
        return 415
    if isinstance(error, InvalidInput | InputMismatch):
        return 400
    if isinstance(error, VersionArchived):
        return 410
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, Conflict):
        return 409
    if isinstance(error, StoreNotReady | VersionFailing):
        return 503
    if isinstance(error, ScoringTimeout):
        return 504
    return 500  # model failures, integrity failures and anything unexpected


USAGE_FLUSH_SECONDS = 1.0
_NO_DEFAULT = "no default model: start the server with --default-model or call /endpoints/{REF}/invocations"

Handler = Callable[["RestApp", Request], Awaitable[Response]]
_MODEL = r"(?P<name>[^/]+)"
_VERSION = r"(?:/versions/(?P<version>[^/]+))?"


class RestApp:
    """The ASGI application. ``plane`` does the work; this class only translates."""

    def __init__(
        self,
        plane: DataPlane,
        limits: Limits,
        default_model: str | None = None,
        companions: tuple[Any, ...] = (),
        timeout: float = 30.0,
        body_timeout: float = 10.0,
        drain_seconds: float = 0.0,
        gate: Gate | None = None,
        hsts: bool = False,
        allowed_hosts: tuple[str, ...] = (),
        metrics_public: bool = False,
        tracer: Tracer | None = None,
        monitor: Monitor | None = None,
        release_flush_seconds: float = 5.0,
        prediction_flush_seconds: float = 10.0,
    ) -> None:
        self.gate = gate if gate is not None else Gate(None, insecure=True)
        self.monitor = monitor
        self.release_flush_seconds = release_flush_seconds
        self._evaluation: asyncio.Task[None] | None = None
        self.prediction_flush_seconds = prediction_flush_seconds
        # Answered on every response: HSTS when TLS is on; never any CORS header (no cross-origin reads).
        self.extra_headers: tuple[tuple[bytes, bytes], ...] = (
            ((b"strict-transport-security", b"max-age=31536000; includeSubDomains"),) if hsts else ()
        )
        self.allowed_hosts = frozenset(h.lower() for h in allowed_hosts)
        self._openapi: bytes | None = None
        self.metrics_public = metrics_public
        self.tracer = tracer  # None unless MODELPORT_TRACING: then inference requests get a Timeline
        self.timeout = timeout
        self.body_timeout = body_timeout
        self.drain_seconds = drain_seconds
        self.plane = plane
        self.limits = limits
        self.default_model = default_model
        self.in_flight = 0
        # Servers sharing this worker's event loop (gRPC): objects with async start() and stop().
        self.companions = companions

    # -- the route table ------------------------------------------------------------------------

    async def live(self, request: Request) -> Response:
        return json_response({"live": self.plane.live()})

    async def ready(self, request: Request) -> Response:
        ready = self.plane.ready()
        return json_response({"ready": ready}, 200 if ready else 503)

    async def server_metadata(self, request: Request) -> Response:
        return json_response(self.plane.server_metadata())

    async def model_metadata(self, request: Request) -> Response:
        return json_response(
            await self.plane.model_metadata(request.params["name"], request.params.get("version"))
        )

    async def model_ready(self, request: Request) -> Response:
        name, version = request.params["name"], request.params.get("version")
        self.plane.resolve(name, version)  # unknown model or version: 404
        ready = await self.plane.model_ready(name, version)
        return json_response({"name": name, "ready": ready}, 200 if ready else 503)

    async def infer(self, request: Request) -> Response:
        # 404 before 400
        request.version = self.plane.resolve(request.params["name"], request.params.get("version"))
        decoded = decode_request(request.body, request.headers.get(HEADER_LENGTH), self.limits)
        timeline = request.timeline
        if timeline is not None:
            timeline.parsed = time.perf_counter_ns()
        result = await self.plane.infer(
            request.params["name"],
            request.params.get("version"),
            decoded.inputs,
            decoded.outputs,
            request_id=request.request_id,
            key_id=request.principal.key_id,
            timeline=timeline,
            headers=request.headers,
        )
        request.rows = result.rows
        parameters: dict[str, Any] = {"model_version": result.version}
        if result.flags:
            parameters["flags"] = result.flags
            parameters["flag_count"] = sum(sum(kinds.values()) for kinds in result.flags.values())
        body, header_length = encode_response(result, decoded, parameters)
        if timeline is not None:
            timeline.serialised = time.perf_counter_ns()
        headers: tuple[tuple[bytes, bytes], ...] = ((b"x-model-version", str(result.version).encode()),)
        if header_length is None:
            return Response(body, headers=headers)
        headers += ((b"inference-header-content-length", str(header_length).encode()),)
        return Response(body, content_type=b"application/octet-stream", headers=headers)

    async def repository_index(self, request: Request) -> Response:
        sees = request.principal.sees
        return json_response([entry for entry in self.plane.repository_index() if sees(entry["name"])])

    async def repository_load(self, request: Request) -> Response:
        await self.plane.load(request.params["name"])
        return json_response({})

    async def repository_unload(self, request: Request) -> Response:
        self.plane.unload(request.params["name"])
        return json_response({})

    async def statistics(self, request: Request) -> Response:
        name = request.params.get("name")
        stats = self.plane.statistics(name, request.params.get("version"))
        return json_response({"model_stats": [s for s in stats if request.principal.sees(s["name"])]})

    async def ping(self, request: Request) -> Response:
        return Response(b"\n", 200 if self.plane.ready() else 503)

    async def mlflow_version(self, request: Request) -> Response:
        return Response(__version__.encode(), content_type=b"text/plain")

    async def metrics(self, request: Request) -> Response:
        LOCAL.flush()  # this worker's latest counts; the others flush on their own within 0.25 s
        body = await asyncio.to_thread(render)
        if self.monitor is not None:
            body += self.monitor.exposition()  # drift and live accuracy, computed by one worker
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

    async def invocations(self, request: Request) -> Response:
        ref = request.params.get("ref") or self.default_model
        if ref is None:
            raise HTTPError(404, _NO_DEFAULT)
        parsed = parse_ref(ref)
        selector = (
            None
            if parsed.alias == "latest" and "@" not in ref
            else (str(parsed.version) if parsed.version else parsed.alias)
        )
        # A release splits MLflow traffic too (sticky by header; a field key is not read here, so such
        # requests go to the primary); shadows mirror V2 traffic only (docs/releases.md).
        number, release, arm = self.plane.choose(parsed.name, selector, None, request.headers)
        started = time.perf_counter()
        content_type = request.headers.get("content-type", "application/json")

        def decode(version: LoadedVersion) -> pd.DataFrame:
            return decode_frame(request.body, content_type, version.signature, self.limits)

        try:
            loaded = await self.plane.loaded_number(parsed.name, number)
            frame = decode(loaded)
        except Exception as exc:
            if release is not None:
                self.plane.count_failure(release, parsed.name, arm, exc, 0.0, decode)
            raise
        request.version = loaded.version.number
        timeline = request.timeline  # MLflow scoring: parse (checked against the signature), infer, serialise
        if timeline is not None:
            timeline.parsed = timeline.ran = time.perf_counter_ns()
        try:
            prediction = await self.plane.score(loaded, loaded.signature.batch(frame), len(frame))
        except Exception as exc:
            if release is not None:
                seconds = time.perf_counter() - started
                self.plane.count_failure(release, parsed.name, arm, exc, seconds)
            raise
        if release is not None:
            seconds = time.perf_counter() - started
            self.plane.release_counts.request(
                release.release_id, arm, seconds, error=False, labels=prediction.labels
            )
        if timeline is not None:
            timeline.done = timeline.serialising = time.perf_counter_ns()
        request.rows = len(frame)
        headers = ((b"x-model-version", str(loaded.version.number).encode()),)
        response = json_response(encode_predictions(prediction, loaded.signature), headers=headers)
        if timeline is not None:
            timeline.serialised = time.perf_counter_ns()
        return response

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
        ("GET", re.compile(r"/openapi\.json"), openapi, False, "read"),
        # "metrics": open to scrapers with MODELPORT_METRICS_PUBLIC, else any valid key ("read")
        ("GET", re.compile(r"/metrics"), metrics, False, "metrics"),
        *management.ROUTES,
    )

    # -- ASGI -----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        method, path = scope["method"], scope["path"]
        matched = self._match(method, path)
        mlflow_errors = matched[2] if matched else not path.startswith("/v2")
        self.in_flight += 1
        request: Request | None = None
        body = b""
        request_id = ""
        try:
            raw_headers = scope["headers"]
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
            principal = DEV_PRINCIPAL
            if permission is not None:
                principal = await self._admit(headers, scope, permission, method, path, params)
            body = await self._read_body(receive, headers) if method in ("POST", "PUT", "PATCH") else b""
            if _pickled(headers.get("content-type", ""), body):
                raise UnsupportedMediaType(
                    "pickled bodies are never accepted (they can run code): send JSON, CSV "
                    "or the binary tensor extension"
                )
            request = Request(method, path, params, headers, body, principal, _query(scope))
            request.request_id = request_id
            if self.tracer is not None and permission == "infer":  # admitted inference requests only
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
        if matched is not None and matched[3] == "infer":
            # matched[1], not `params`: the request may have failed before they were unpacked
            self._count(matched[1], request, response.status, mlflow_errors, started)
            if self.tracer is not None and request is not None and request.timeline is not None:
                self.tracer.finish(
                    request.timeline,
                    protocol="mlflow" if mlflow_errors else "v2",
                    model=self._model_of(matched[1])[:100],
                    version=request.version,
                    rows=request.rows,
                    outcome=outcome_of(response.status),
                    status=response.status,
                    request_id=request_id,
                    key_id=request.principal.key_id,
                )
        if matched is None or matched[3] is not None:  # probes are not logged: balancers poll them
            self._log(method, path, matched, request, response.status, started, request_id)
        if (
            request is not None
            and matched is not None
            and matched[3] == "infer"
            and is_model_name(model := self._model_of(matched[1]))
        ):
            self.gate.count(
                request.principal,
                model,
                rows=request.rows,
                error=response.status >= 400,
                bytes_in=len(body),
                bytes_out=len(response.body),
            )
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

    def _count(
        self, params: dict[str, str], request: Request | None, status: int, mlflow: bool, started: float
    ) -> None:
        """Count an inference request. Labels stay bounded: only registered models and versions, and
        aliases that exist, become label values."""
        routes = self.plane.pool.routes_of(self._model_of(params))
        model = self._model_of(params) if routes is not None else ""
        version = (
            str(request.version) if request is not None and request.version is not None and model else ""
        )
        selector = params.get("version") or (params.get("ref") or "").partition("@")[2] or None
        alias = alias_label(routes, selector)
        protocol = "mlflow" if mlflow else "v2"
        LOCAL.request(model, version, alias, protocol, outcome_of(status), time.perf_counter() - started)

    def _log(
        self,
        method: str,
        path: str,
        matched: tuple[Handler, dict[str, str], bool, str | None] | None,
        request: Request | None,
        status: int,
        started: float,
        request_id: str,
    ) -> None:
        if not ACCESS_LOG.enabled:
            return
        params = matched[1] if matched is not None else {}
        fields: dict[str, Any] = {
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
        if "name" in params or "ref" in params:
            fields["model"] = self._model_of(params)[:100]
        ACCESS_LOG.write(fields)

    def _model_of(self, params: dict[str, str]) -> str:
        """The model a request is about: ``{name}``, the model of ``{ref}``, or the default model."""
        if "name" in params:
            return params["name"]
        ref = params.get("ref") or self.default_model or ""
        return ref.split("@", 1)[0]

    async def _admit(
        self,
        headers: dict[str, str],
        scope: Scope,
        permission: str,
        method: str,
        path: str,
        params: dict[str, str],
    ) -> Principal:
        """Authenticate, then the key's rate and quota (so refusals below are limited too), then its
        role, then its model scope: a model outside the key's patterns answers like a missing one."""
        principal = await self.gate.authenticate(_token(headers), _client(scope))
        await self.gate.admit(principal)
        if not principal.may(permission):
            if permission in ("publish", "admin") and await self.gate.may_record_denial(principal):
                await asyncio.to_thread(self._audit_denied, principal, method, path)
            principal.require(permission)
        if "name" in params or "ref" in params:
            name = self._model_of(params)
            if not principal.sees(name):
                raise ModelNotFound(f"no model named {name[:100]!r}")
        elif (
            permission == "infer"
            and path == "/invocations"
            and (self.default_model is None or not principal.sees(self._model_of(params)))
        ):
            raise HTTPError(404, _NO_DEFAULT)  # the default model's name is not revealed
        return principal

    def _audit_denied(self, principal: Principal, method: str, path: str) -> None:
        with contextlib.suppress(ModelportError):  # the refusal stands whether or not it is recorded
            self.plane.pool.registry.store.append_audit(
                principal.actor, "denied", f"{method} {path}"[:300], after={"role": principal.role}
            )

    def _check_host(self, host: str) -> None:
        if not self.allowed_hosts:
            return
        found = _HOST.fullmatch(host.lower())
        name = (found.group(1) or found.group(2)) if found else None
        if name is None or (name not in self.allowed_hosts and "*" not in self.allowed_hosts):
            raise HTTPError(400, "the Host header names a host this server does not answer for")

    def _match(self, method: str, path: str) -> tuple[Handler, dict[str, str], bool, str | None] | None:
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
        status = status_for(exc)
        if not isinstance(exc, ModelportError | HTTPError):
            # The client hears only "internal error"; the operator needs the traceback.
            log.error("unexpected error answering a request", exc_info=exc)
        message = (
            public_message(exc)
            if isinstance(exc, ModelportError | HTTPError)
            else "internal error: the model failed"
        )
        headers: tuple[tuple[bytes, bytes], ...] = ()
        if status == 401:
            headers = ((b"www-authenticate", b'Bearer realm="modelport"'),)
        elif isinstance(exc, RateLimited):
            headers = ((b"retry-after", str(max(1, math.ceil(exc.retry_after))).encode()),)
        if mlflow_errors:
            code = {
                400: "BAD_REQUEST",
                404: "RESOURCE_DOES_NOT_EXIST",
                401: "UNAUTHENTICATED",
                403: "PERMISSION_DENIED",
                413: "BAD_REQUEST",
                415: "BAD_REQUEST",
                429: "REQUEST_LIMIT_EXCEEDED",
            }.get(status, "INTERNAL_ERROR")
            return json_response({"error_code": code, "message": message}, status, headers)
        return json_response({"error": message}, status, headers)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        poller: asyncio.Task[None] | None = None
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.plane.predictions is not None and any(
                    p.get("sample_rate", 0) > 0 for p in self.plane.pool.log_policies.values()
                ):
                    self.plane.predictions.prepare()
                self.plane.sync_shadows()
                poller = asyncio.create_task(self._poll())
                for companion in self.companions:
                    await companion.start()
                # Everything loaded so far lives as long as the worker: keep it out of the cyclic
                # collector's full passes, whose pauses otherwise show up as p99 spikes.
                gc.collect()
                gc.freeze()
                self._drain_on_sigterm()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.plane.draining = True
                for companion in self.companions:
                    await companion.stop()
                if poller is not None:
                    poller.cancel()
                await self._flush_usage()
                await self._write_predictions(now=True)
                await self.plane.close_shadows()  # its last answers are counted before the flush
                await self.plane.close_scoring()
                with contextlib.suppress(
                    Exception
                ):  # the counts of the last seconds, if the database is there
                    await self._flush_releases()
                ACCESS_LOG.flush()
                if self.tracer is not None:
                    await asyncio.to_thread(self.tracer.shutdown)
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _drain_on_sigterm(self) -> None:
        """On SIGTERM, report not-ready at once but keep serving for ``drain_seconds``; then hand the
        signal to the server's own handler, which closes the socket and lets in-flight requests finish."""
        if self.drain_seconds <= 0 or threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGTERM)
        if not callable(previous):
            return
        loop = asyncio.get_running_loop()

        def on_sigterm(signum: int, frame: Any) -> None:
            if self.plane.draining:
                return
            self.plane.draining = True
            loop.call_soon_threadsafe(loop.call_later, self.drain_seconds, previous, signum, frame)

        signal.signal(signal.SIGTERM, on_sigterm)

    async def _poll(self) -> None:
        """Notice registry changes from any process (alias moves, key changes) even when no request
        comes, and add usage counts to the database about once a second. Keys are reloaded until a
        reload succeeds for the generation seen: one failed read must not leave a revoked key working."""
        loop = asyncio.get_running_loop()
        last_flush = last_release_flush = loop.time()
        keys_generation = self.plane.pool.generation
        while True:
            await asyncio.sleep(self.plane.pool.poll_interval)
            LOCAL.flush()
            ACCESS_LOG.flush()
            await self._write_predictions()
            # in the background: an evaluation takes seconds, and alias moves and key revocations
            # must still reach this worker within a poll interval meanwhile
            idle = self._evaluation is None or self._evaluation.done()
            if idle and self.monitor is not None and self.monitor.due(time.monotonic()):
                self._evaluation = asyncio.create_task(self._evaluate())
            try:
                if await asyncio.to_thread(self.plane.pool.refresh_if_changed):
                    self.plane.sync_shadows()
                generation = self.plane.pool.generation
                if generation != keys_generation:
                    await asyncio.to_thread(self.gate.reload)
                    keys_generation = generation
            except Exception as exc:  # keep polling whatever happens; serve the routes and keys we have
                log.warning("registry poll failed (%s); retrying", type(exc).__name__)
            if loop.time() - last_flush >= USAGE_FLUSH_SECONDS:
                last_flush = loop.time()
                METRICS.sample_memory()
                try:
                    await self._flush_usage()
                except Exception as exc:
                    log.warning("usage flush failed (%s)", type(exc).__name__)
            if loop.time() - last_release_flush >= self.release_flush_seconds:
                last_release_flush = loop.time()
                try:
                    await self._flush_releases()
                except Exception as exc:
                    log.warning("release counts not written (%s)", type(exc).__name__)

    async def _evaluate(self) -> None:
        """Drift and live accuracy for /metrics, once per interval, by one of the workers."""
        monitor = self.monitor
        if monitor is None:
            return
        try:
            await asyncio.to_thread(monitor.tick)
        except Exception as exc:  # a bad segment or an away database must not stop the poller
            log.warning("drift and accuracy evaluation failed (%s)", type(exc).__name__)

    async def _write_predictions(self, *, now: bool = False) -> None:
        log = self.plane.predictions
        if log is None or not (now or log.due(time.monotonic(), self.prediction_flush_seconds)):
            return
        items = log.take()
        if items:
            try:
                await asyncio.to_thread(log.write, items)
            except Exception as exc:  # the disk is full or gone: the requests were answered anyway
                log.lost(items)  # counted per request, as a full queue counts them
                logging.getLogger("modelport.monitoring").warning(
                    "prediction log segment not written (%s)", type(exc).__name__
                )

    async def _flush_releases(self) -> None:
        """Add this worker's per-arm counts to the database, then check automatic-rollback bounds."""
        counts = self.plane.release_counts
        rows = counts.take()
        if rows:
            try:
                await asyncio.to_thread(self.plane.pool.registry.store.releases.add_stats, rows)
            except StoreNotReady:
                counts.restore(rows)  # the database is away: keep them for the next second
                return
        releases = self.plane.pool.releases()
        if any(r.auto_rollback is not None for by_alias in releases.values() for r in by_alias.values()):
            manager = ReleaseManager(self.plane.pool.registry)
            for ref in await asyncio.to_thread(manager.check_auto_rollback, releases):
                log.warning("automatic rollback of %s: the canary broke its bound", ref)

    async def _flush_usage(self) -> None:
        rows, unflushed = self.gate.take_pending()
        try:
            await asyncio.to_thread(self.gate.write_usage, rows)
        except StoreNotReady:
            self.gate.restore(rows)  # the database is away: keep the counts for the next attempt
            return
        except ModelportError as exc:
            # The database refused these rows themselves: retrying would refuse them forever and
            # block every later count. Drop them, say so, and go on.
            log.warning("usage rows refused by the database and dropped: %s", exc)
        self.gate.written(unflushed)
