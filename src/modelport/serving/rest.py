"""REST adapter: a raw ASGI application with one explicit route table.

No web framework on the hot path: a request is matched against the table below, its body read with a
hard size limit, handed to the data plane, and the answer serialised with orjson. Every failure —
including unknown paths (404), wrong methods (405) and oversized bodies (413) — is JSON:
``{"error": "..."}`` on ``/v2`` and the health routes, MLflow's ``{"error_code", "message"}`` on the
MLflow routes. Core errors are mapped to statuses in :func:`status_for`, and only there.
"""

from __future__ import annotations

import asyncio
import gc
import re
import signal
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson

from modelport._version import __version__
from modelport.errors import (
    Conflict,
    InputMismatch,
    InvalidInput,
    ModelportError,
    NotFound,
    StoreNotReady,
)
from modelport.registry.names import parse_ref
from modelport.serving.dataplane import DataPlane
from modelport.serving.mlflow import UnsupportedMediaType, decode_frame, encode_predictions
from modelport.serving.v2 import HEADER_LENGTH, Limits, decode_request, encode_response

__all__ = ["RestApp", "status_for"]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def status_for(error: Exception) -> int:
    """The one place core errors become HTTP statuses."""
    if isinstance(error, HTTPError):
        return error.status
    if isinstance(error, UnsupportedMediaType):
        return 415
    if isinstance(error, InvalidInput | InputMismatch):
        return 400
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, Conflict):
        return 409
    if isinstance(error, StoreNotReady):
        return 503
    return 500  # model failures, integrity failures and anything unexpected


@dataclass(slots=True)
class Request:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass(slots=True)
class Response:
    body: bytes
    status: int = 200
    content_type: bytes = b"application/json"
    headers: tuple[tuple[bytes, bytes], ...] = ()


def _json(data: Any, status: int = 200, headers: tuple[tuple[bytes, bytes], ...] = ()) -> Response:
    return Response(orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY), status, headers=headers)


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
        drain_seconds: float = 0.0,
    ) -> None:
        self.timeout = timeout
        self.drain_seconds = drain_seconds
        self.plane = plane
        self.limits = limits
        self.default_model = default_model
        self.in_flight = 0
        # Servers sharing this worker's event loop (gRPC): objects with async start() and stop().
        self.companions = companions

    # -- the route table ------------------------------------------------------------------------

    async def live(self, request: Request) -> Response:
        return _json({"live": self.plane.live()})

    async def ready(self, request: Request) -> Response:
        ready = self.plane.ready()
        return _json({"ready": ready}, 200 if ready else 503)

    async def server_metadata(self, request: Request) -> Response:
        return _json(self.plane.server_metadata())

    async def model_metadata(self, request: Request) -> Response:
        return _json(await self.plane.model_metadata(request.params["name"], request.params.get("version")))

    async def model_ready(self, request: Request) -> Response:
        name, version = request.params["name"], request.params.get("version")
        self.plane.resolve(name, version)  # unknown model or version: 404
        ready = await self.plane.model_ready(name, version)
        return _json({"name": name, "ready": ready}, 200 if ready else 503)

    async def infer(self, request: Request) -> Response:
        self.plane.resolve(request.params["name"], request.params.get("version"))  # 404 before 400
        decoded = decode_request(request.body, request.headers.get(HEADER_LENGTH), self.limits)
        result = await self.plane.infer(
            request.params["name"], request.params.get("version"), decoded.inputs, decoded.outputs
        )
        parameters: dict[str, Any] = {"model_version": result.version}
        if result.flags:
            parameters["flags"] = result.flags
            parameters["flag_count"] = sum(sum(kinds.values()) for kinds in result.flags.values())
        body, header_length = encode_response(result, decoded, parameters)
        headers: tuple[tuple[bytes, bytes], ...] = ((b"x-model-version", str(result.version).encode()),)
        if header_length is None:
            return Response(body, headers=headers)
        headers += ((b"inference-header-content-length", str(header_length).encode()),)
        return Response(body, content_type=b"application/octet-stream", headers=headers)

    async def repository_index(self, request: Request) -> Response:
        return _json(self.plane.repository_index())

    async def repository_load(self, request: Request) -> Response:
        await self.plane.load(request.params["name"])
        return _json({})

    async def repository_unload(self, request: Request) -> Response:
        self.plane.unload(request.params["name"])
        return _json({})

    async def statistics(self, request: Request) -> Response:
        name = request.params.get("name")
        return _json({"model_stats": self.plane.statistics(name, request.params.get("version"))})

    async def ping(self, request: Request) -> Response:
        return Response(b"\n", 200 if self.plane.ready() else 503)

    async def mlflow_version(self, request: Request) -> Response:
        return Response(__version__.encode(), content_type=b"text/plain")

    async def invocations(self, request: Request) -> Response:
        ref = request.params.get("ref") or self.default_model
        if ref is None:
            raise HTTPError(
                404,
                "no default model: start the server with --default-model "
                "or call /endpoints/{REF}/invocations",
            )
        parsed = parse_ref(ref)
        selector = (
            None
            if parsed.alias == "latest" and "@" not in ref
            else (str(parsed.version) if parsed.version else parsed.alias)
        )
        loaded = await self.plane.loaded(parsed.name, selector)
        frame = decode_frame(
            request.body,
            request.headers.get("content-type", "application/json"),
            loaded.signature,
            self.limits,
        )
        prediction = loaded.predict(frame)
        headers = ((b"x-model-version", str(loaded.version.number).encode()),)
        return _json(encode_predictions(prediction, loaded.signature), headers=headers)

    ROUTES: ClassVar[tuple[tuple[str, re.Pattern[str], Handler, bool], ...]] = (
        # method, path pattern, handler, whether errors use MLflow's shape
        ("GET", re.compile(r"/v2/health/live"), live, False),
        ("GET", re.compile(r"/v2/health/ready"), ready, False),
        ("GET", re.compile(r"/v2/?"), server_metadata, False),
        ("GET", re.compile(r"/v2/models/stats"), statistics, False),  # before /v2/models/{name}
        ("GET", re.compile(rf"/v2/models/{_MODEL}{_VERSION}"), model_metadata, False),
        ("GET", re.compile(rf"/v2/models/{_MODEL}{_VERSION}/ready"), model_ready, False),
        ("POST", re.compile(rf"/v2/models/{_MODEL}{_VERSION}/infer"), infer, False),
        ("GET", re.compile(rf"/v2/models/{_MODEL}{_VERSION}/stats"), statistics, False),
        ("POST", re.compile(r"/v2/repository/index"), repository_index, False),
        ("POST", re.compile(rf"/v2/repository/models/{_MODEL}/load"), repository_load, False),
        ("POST", re.compile(rf"/v2/repository/models/{_MODEL}/unload"), repository_unload, False),
        ("GET", re.compile(r"/ping"), ping, True),
        ("GET", re.compile(r"/health"), ping, True),
        ("GET", re.compile(r"/version"), mlflow_version, True),
        ("POST", re.compile(r"/invocations"), invocations, True),
        ("POST", re.compile(r"/endpoints/(?P<ref>[^/]+)/invocations"), invocations, True),
    )

    # -- ASGI -----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        matched = self._match(method, path)
        mlflow_errors = matched[2] if matched else not path.startswith("/v2")
        self.in_flight += 1
        try:
            if matched is None:
                allowed = any(p.fullmatch(path) for _, p, _, _ in self.ROUTES)
                raise HTTPError(
                    405 if allowed else 404,
                    f"{'method not allowed' if allowed else 'no route'}: {method} {path}",
                )
            handler, params = matched[0], matched[1]
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            body = await self._read_body(receive, headers) if method == "POST" else b""
            try:
                async with asyncio.timeout(self.timeout):  # no extra task per request, unlike wait_for
                    response = await handler(self, Request(method, path, params, headers, body))
            except TimeoutError:
                raise HTTPError(504, f"the request was not answered within {self.timeout:g} s") from None
        except Exception as exc:
            response = self._error(exc, mlflow_errors)
        finally:
            self.in_flight -= 1
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [
                    (b"content-type", response.content_type),
                    (b"content-length", str(len(response.body)).encode()),
                    *response.headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": response.body})

    def _match(self, method: str, path: str) -> tuple[Handler, dict[str, str], bool] | None:
        for route_method, pattern, handler, mlflow_errors in self.ROUTES:
            if route_method != method:
                continue
            found = pattern.fullmatch(path)
            if found:
                return handler, {k: v for k, v in found.groupdict().items() if v is not None}, mlflow_errors
        return None

    async def _read_body(self, receive: Receive, headers: dict[str, str]) -> bytes:
        limit = self.limits.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HTTPError(413, f"body of {int(declared):,} bytes is over the limit of {limit:,}")
        chunks: list[bytes] = []
        size = 0
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

    @staticmethod
    def _error(exc: Exception, mlflow_errors: bool) -> Response:
        status = status_for(exc)
        message = (
            str(exc) if isinstance(exc, ModelportError | HTTPError) else "internal error: the model failed"
        )
        if mlflow_errors:
            code = {
                400: "BAD_REQUEST",
                404: "RESOURCE_DOES_NOT_EXIST",
                413: "BAD_REQUEST",
                415: "BAD_REQUEST",
            }.get(status, "INTERNAL_ERROR")
            return _json({"error_code": code, "message": message}, status)
        return _json({"error": message}, status)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        poller: asyncio.Task[None] | None = None
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
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
        """Notice registry changes from any process (alias moves) even when no request comes."""
        while True:
            await asyncio.sleep(self.plane.pool.poll_interval)
            try:
                await asyncio.to_thread(self.plane.pool.refresh_if_changed)
            except ModelportError:
                continue  # the database is unreachable: keep serving the routes we have
