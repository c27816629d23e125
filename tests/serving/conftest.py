"""Servers for the tests, and the registries they serve.

- :func:`serve_in_process`: the application of ``create_app(settings)`` with its lifespan run, answering
  through httpx's ASGI transport — no socket, no child process. The default for HTTP tests.
- :func:`start_server`: a real `modelport serve` process on 127.0.0.1, for what only a real server
  shows: uvicorn's protocol, several workers, SIGTERM and drain, TLS, gRPC, the scoring process.
- :func:`registered_home`: registries with real registered models, built once per test session
  (a registration runs a preflight child process and an ONNX conversion with its equivalence proof:
  seconds each) and handed out as copies, which a test may change at will.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
import pandas as pd
import pytest

from modelport.app import create_app, open_registry
from modelport.registry.service import Registry
from modelport.settings import Settings
from tests.conftest import FEATURES

T = TypeVar("T")


def new_connection_each(**kwargs: Any) -> httpx.Client:
    """A client that opens a new connection for every request (it keeps none alive), so that with
    ``--workers`` each request may land on any worker. One client for many requests: httpx builds an
    SSL context (loading the CA bundle, ~20 ms of CPU) for every client it makes."""
    return httpx.Client(limits=httpx.Limits(max_keepalive_connections=0), **kwargs)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- a real server process -----------------------------------------------------------------------------


@dataclass
class Server:
    url: str
    port: int
    home: Path
    process: subprocess.Popen[bytes]

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)


def start_server(
    home: Path,
    *args: str,
    env: dict[str, str] | None = None,
    ready_check: bool = True,
    insecure_dev: bool = True,
    scheme: str = "http",
    verify: ssl.SSLContext | bool = True,
    log_file: Path | None = None,
) -> Server:
    """Start `modelport serve`; wait for readiness (or, without ``ready_check``, for any answer).

    Protocol tests run the explicit development mode (``--insecure-dev``): what they test is the
    protocol. Everything about keys is tested in ``tests/security`` with ``insecure_dev=False``."""
    if insecure_dev:
        args = (*args, "--insecure-dev")
    port = free_port()
    # No drain period unless a test asks for one: stopping test servers stays fast.
    environment = {**os.environ, "MODELPORT_HOME": str(home), "MODELPORT_DRAIN_SECONDS": "0", **(env or {})}
    exe = str(Path(sys.executable).with_name("modelport"))
    stderr: int | IO[bytes] = subprocess.DEVNULL
    if log_file is not None:
        stderr = log_file.open("ab")
    process = subprocess.Popen(
        [exe, "serve", "--port", str(port), *args],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    if not isinstance(stderr, int):
        stderr.close()  # the child has its own copy
    url = f"{scheme}://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    with new_connection_each(timeout=1, verify=verify) as probe:
        while time.monotonic() < deadline:
            assert process.poll() is None, "server exited during start-up"
            try:
                status = probe.get(f"{url}/v2/health/ready").status_code
                if status == 200 or not ready_check:
                    return Server(url, port, home, process)
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    process.kill()
    raise AssertionError("server did not become ready within 60 s")


def stop_server(server: Server) -> int:
    server.process.terminate()
    try:
        return server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        return server.process.wait()


# -- the application in this process -------------------------------------------------------------------


def _run_on(loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, T], timeout: float | None) -> T:
    """``coroutine``'s result, run on ``loop`` (in another thread); TimeoutError after ``timeout``."""
    future = asyncio.run_coroutine_threadsafe(coroutine, loop)
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise TimeoutError from None


class _LoopTransport(httpx.BaseTransport):
    """A synchronous httpx transport that hands each request to an ASGI transport on the app's loop, so
    plain (and threaded) test code can call an app whose background duties run on that loop."""

    def __init__(self, asgi: httpx.ASGITransport, loop: asyncio.AbstractEventLoop) -> None:
        self._asgi = asgi
        self._loop = loop

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()  # the body as bytes: a stream both sync and async clients can hand over

        async def send() -> httpx.Response:
            response = await self._asgi.handle_async_request(request)
            return httpx.Response(
                response.status_code, headers=response.headers, content=await response.aread()
            )

        try:
            return _run_on(self._loop, send(), request.extensions.get("timeout", {}).get("read"))
        except TimeoutError:
            raise httpx.ReadTimeout("no answer in time", request=request) from None


@dataclass
class InProcess:
    """A running in-process app: :meth:`client` sends requests to it (like :meth:`Server.client`)."""

    home: Path
    transport: httpx.BaseTransport
    url: str = "http://127.0.0.1:8080"  # what Host and the scheme say: no socket is opened

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(
            transport=self.transport, base_url=self.url, timeout=30, headers=headers, **kwargs
        )


@contextlib.contextmanager
def serve_in_process(home: Path, *, insecure_dev: bool = True, **settings: Any) -> Iterator[InProcess]:
    """``create_app(Settings(home=home, ...))`` on an event loop of its own thread, lifespan started
    (routes read, background duties polling the registry) and, on leaving, shut down (counts flushed).

    Like :func:`start_server`: development mode unless ``insecure_dev=False``, and no drain period.
    Keyword arguments are :class:`~modelport.settings.Settings` fields, as ``MODELPORT_*`` variables are
    for a real server. The one place the tests build an app and drive its lifespan."""
    settings.setdefault("drain_seconds", 0)
    # A worker collects garbage as it starts, on its own thread (the app's, here). Collect what earlier
    # tests left first, in the thread that made it: some finalizers must run there (gevent's, which
    # tritonclient.http and Locust leave behind, crashed the process from the app's thread).
    gc.collect()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="asgi-app", daemon=True)
    thread.start()

    def run(coroutine: Coroutine[Any, Any, T]) -> T:
        return _run_on(loop, coroutine, 120)

    async def build() -> Any:  # as uvicorn does: the factory is called on the loop that serves
        return create_app(Settings(home=home, insecure_dev=insecure_dev, **settings))

    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    lifespan: asyncio.Future[Any] | None = None

    async def step(phase: str) -> None:
        assert lifespan is not None
        await received.put({"type": f"lifespan.{phase}"})
        reply: asyncio.Future[Any] = asyncio.ensure_future(sent.get())
        await asyncio.wait({reply, lifespan}, return_when=asyncio.FIRST_COMPLETED)
        if not reply.done():
            reply.cancel()
            lifespan.result()  # the app's own error, if it raised one
            raise AssertionError(f"the app's lifespan ended during {phase}")
        assert reply.result()["type"] == f"lifespan.{phase}.complete", reply.result()

    async def start(app: Any) -> None:
        nonlocal lifespan
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
        lifespan = asyncio.ensure_future(app(scope, received.get, sent.put))
        await step("startup")

    async def stop() -> None:
        await step("shutdown")
        assert lifespan is not None
        await lifespan
        current = asyncio.current_task()
        leftovers = [task for task in asyncio.all_tasks() if task is not current]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)
        await loop.shutdown_default_executor()

    try:
        app = run(build())
        run(start(app))
        try:
            transport = _LoopTransport(httpx.ASGITransport(app=app), loop)
            yield InProcess(home, transport)
        finally:
            run(stop())
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()
        # A worker freezes what it has loaded at start-up, out of the collector's reach for the life of
        # the process (serving/worker.py); here the process goes on to other tests.
        gc.unfreeze()


# -- registries with registered models -----------------------------------------------------------------

_KINDS = ("served", "keyed", "releases")


def _build(kind: str, home: Path, data: pd.DataFrame, sklearn_model: object) -> None:
    from sklearn.linear_model import LogisticRegression

    registry: Registry = open_registry(Settings(home=home, equivalence_rows=300), create=True)
    try:
        registry.register(sklearn_model, name="credit", sample=data, target="label", alias="production")
        weak = LogisticRegression(C=0.01, max_iter=500).fit(data[FEATURES], data["label"])
        if kind == "releases":  # three versions that answer differently, no other alias
            registry.register(weak, name="credit", sample=data, target="label")
            weaker = LogisticRegression(C=0.001, max_iter=500).fit(data[FEATURES], data["label"])
            registry.register(weaker, name="credit", sample=data, target="label")
            return
        registry.register(weak, name="credit", sample=data, target="label", alias="staging")
        if kind == "keyed":  # a second model, for keys scoped to one of them
            registry.register(weak, name="fraud", sample=data, target="label", alias="production")
    finally:
        registry.close()


def registered_home(
    kind: str, to: Path, tmp_path_factory: pytest.TempPathFactory, data: pd.DataFrame, sklearn_model: object
) -> Path:
    """A copy, at ``to``, of the registry ``kind``, registered once per test session:

    - ``served``: ``credit`` v1 (production) and v2 (staging, another regularisation);
    - ``keyed``: the same plus ``fraud`` v1 (production);
    - ``releases``: ``credit`` v1 (production), v2 and v3, each answering differently, no other alias.
    """
    assert kind in _KINDS, kind
    # In the session's base directory, so every test directory's conftest shares one build.
    built = tmp_path_factory.getbasetemp() / "registered" / kind
    if not built.exists():
        partial = built.with_name(f"{kind}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        _build(kind, partial, data, sklearn_model)
        partial.rename(built)
    shutil.copytree(built, to)
    return to


@pytest.fixture(scope="module")
def served_home(tmp_path_factory: pytest.TempPathFactory, data: pd.DataFrame, sklearn_model: object) -> Path:
    """``credit`` v1 (production) and v2 (staging), a copy per test module."""
    return registered_home(
        "served", tmp_path_factory.mktemp("served") / "home", tmp_path_factory, data, sklearn_model
    )


@pytest.fixture(scope="module")
def server(served_home: Path) -> Iterator[Server]:
    running = start_server(served_home, "--default-model", "credit@production")
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def app(served_home: Path) -> Iterator[InProcess]:
    """The app of ``server``, in this process."""
    with serve_in_process(served_home, default_model="credit@production") as running:
        yield running
