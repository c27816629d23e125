"""How `modelport serve` runs its workers — one in the `serve` process itself, or several under a
supervisor — and how it stops when they cannot start.

uvicorn's supervisor (:class:`uvicorn.supervisors.Multiprocess`) replaces a worker that dies, also one
that dies before it ever served: a worker that cannot start (measured: a protobuf runtime older than the
generated gRPC code raises ``VersionError`` at import) was started again and again, and `serve` neither
exited nor became live. Here:

- every worker builds its app through :class:`WorkerApp`, which turns a failure into one line (the
  exception's class and message, no traceback) sent to the supervisor, and exit status 3;
- :class:`Supervisor` is uvicorn's — same sockets, signals, SIGHUP/SIGTTIN/SIGTTOU, graceful shutdown
  and health checks of running workers — but counts the workers that died before they were ever ready:
  after ``max_failed_starts`` in a row (no worker became ready in between) it stops the others and
  :func:`run` raises :class:`WorkerStartFailed` with the reason. A worker that dies after it was ready
  is replaced as before;
- with one worker there is nothing to start again: a failure raises :class:`WorkerStartFailed` at once.

Failures that uvicorn handles itself before or after the app is built (a lifespan startup that raises,
a socket it cannot bind) end the worker with uvicorn's status 3 after uvicorn logged why; they count the
same way.

The supervisor also keeps the multi-process metrics right (``monitoring/metrics.py``): it forgets the
gauges of processes that are gone and counts its own memory.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
from dataclasses import dataclass
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from socket import socket
from typing import TYPE_CHECKING, Any

from uvicorn import Config, Server
from uvicorn.supervisors.multiprocess import Multiprocess, Process

if TYPE_CHECKING:
    from modelport.monitoring.metrics import SupervisorMemory

__all__ = ["MAX_FAILED_STARTS", "Supervisor", "WorkerApp", "WorkerStartFailed", "describe", "run"]

log = logging.getLogger("modelport.serving")

MAX_FAILED_STARTS = 3
STARTUP_FAILURE = 3  # exit status of a worker that could not start (uvicorn's and gunicorn's choice)


class WorkerStartFailed(Exception):
    """The server's workers could not start; the message says why in one line."""


def describe(exc: BaseException) -> str:
    """``Class: message`` on one line (the message's first two lines, bounded), never a traceback."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = " ".join(lines[:2])[:500]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(frozen=True)
class WorkerApp:
    """uvicorn's app factory in every worker: imports ``factory`` (``module:function``) and calls it.

    In a worker process (``reasons`` set) a failure goes to the supervisor as one line and the worker
    ends at once with status 3 — ``os._exit``: threads that a half-built app started must not keep a
    dead worker alive. In the `serve` process itself (one worker) it raises :class:`WorkerStartFailed`."""

    factory: str
    reasons: Connection | None = None

    def __call__(self) -> Any:
        module, _, name = self.factory.partition(":")
        try:
            return getattr(importlib.import_module(module), name)()
        except Exception as exc:
            if self.reasons is None:
                raise WorkerStartFailed(describe(exc)) from exc
            with contextlib.suppress(OSError):
                self.reasons.send(describe(exc))
            sys.stderr.flush()
            os._exit(STARTUP_FAILURE)


class Supervisor(Multiprocess):
    """uvicorn's multi-process supervisor, which gives up on workers that cannot start."""

    def __init__(
        self,
        config: Config,
        sockets: list[socket],
        *,
        reasons: Connection,
        max_failed_starts: int = MAX_FAILED_STARTS,
        metrics: bool = False,
    ) -> None:
        super().__init__(config, sockets)
        self.reasons = reasons
        self.max_failed_starts = max_failed_starts
        self.failed_starts = 0  # workers in a row that died before they were ready
        self.failure: str | None = None  # why the supervisor gave up
        self._ready: set[int | None] = set()  # pids of the workers seen ready
        self._last_reason: str | None = None
        self._memory: SupervisorMemory | None = None
        if metrics:
            # imported here: every worker imports this module first, to unpickle its WorkerApp; that
            # step stays light (uvicorn and the standard library) so that it cannot fail on its own
            from modelport.monitoring.metrics import SupervisorMemory

            self._memory = SupervisorMemory()

    def keep_subprocess_alive(self) -> None:
        """uvicorn's check of every worker (every 0.5 s), counting the workers that never became ready.

        A worker that is still starting is only asked whether it is ready, with a short timeout: a
        worker that dies while it is asked (one whose start-up failed takes about a second to exit)
        held uvicorn's health check for its full five seconds, on every attempt. A ready worker gets
        uvicorn's health check, and is killed and replaced when it does not answer."""
        if self.should_exit.is_set():
            return
        for index, process in enumerate(self.processes):
            pid = process.pid
            if pid in self._ready:
                if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                    continue
            elif process.process.is_alive():
                if process.is_ready(timeout=0.5):
                    self._ready.add(pid)
                    self.failed_starts = 0
                continue
            process.kill()  # dead, or ready but no longer answering the health check
            process.join()
            if pid not in self._ready:
                self.failed_starts += 1
                reason = self._reason(process.exitcode)
                if self.failed_starts >= self.max_failed_starts:
                    self.failure = f"{reason} ({self.failed_starts} worker starts failed in a row)"
                    self.should_exit.set()
                    return
                log.warning(
                    "worker %s could not start (%d of %d); starting another",
                    pid,
                    self.failed_starts,
                    self.max_failed_starts,
                )
            self._ready.discard(pid)
            if self.should_exit.is_set():
                return
            replacement = Process(self.config, self.sockets)
            replacement.start()
            self.processes[index] = replacement
        self._account()

    def _reason(self, exitcode: int | None) -> str:
        """The latest reason a worker sent; else what became of the worker."""
        with contextlib.suppress(OSError, EOFError):
            while self.reasons.poll():
                self._last_reason = str(self.reasons.recv())
        if self._last_reason is not None and exitcode == STARTUP_FAILURE:
            return self._last_reason
        if exitcode is not None and exitcode < 0:
            return f"a worker was killed by signal {-exitcode} before it was ready"
        return f"a worker exited with status {exitcode} before it was ready; the reason is logged above"

    def _account(self) -> None:
        """Per-process gauges of live processes only, and the supervisor's own memory."""
        if self._memory is None:
            return
        from modelport.monitoring.metrics import forget_dead

        workers = {p.pid for p in self.processes if p.pid is not None}
        forget_dead(workers | {os.getpid()})
        self._memory.sample(workers)


def run(factory: str, *, workers: int, max_failed_starts: int = MAX_FAILED_STARTS, **options: Any) -> None:
    """Serve the app that ``factory`` (``module:function``) builds, with uvicorn ``options``, until a
    signal stops the server. Raises :class:`WorkerStartFailed` when the workers cannot start.

    With several workers, metrics are kept in multi-process mode when ``PROMETHEUS_MULTIPROC_DIR`` is
    set (``modelport serve`` sets it)."""
    if workers == 1:
        _run_in_process(Config(WorkerApp(factory), factory=True, workers=1, **options))
        return
    reasons, writer = Pipe(duplex=False)
    config = Config(WorkerApp(factory, writer), factory=True, workers=workers, **options)
    try:
        sock = config.bind_socket()
    except SystemExit:  # uvicorn logged why (address in use, no permission)
        raise WorkerStartFailed(f"cannot listen on {config.host}:{config.port}") from None
    supervisor = Supervisor(
        config,
        [sock],
        reasons=reasons,
        max_failed_starts=max_failed_starts,
        metrics=bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR")),
    )
    with contextlib.suppress(KeyboardInterrupt):  # as uvicorn.run: Ctrl-C is a normal stop
        supervisor.run()
    if supervisor.failure is not None:
        raise WorkerStartFailed(supervisor.failure)


def _run_in_process(config: Config) -> None:
    """One worker: the server runs in this process (as ``uvicorn.run`` does it)."""
    server = Server(config)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    except SystemExit as exc:  # uvicorn's own start-up failures (lifespan, bind): it logged why
        if server.started:
            raise
        raise WorkerStartFailed(
            f"uvicorn stopped with status {exc.code}; the reason is logged above"
        ) from None
    if not server.started:
        raise WorkerStartFailed("uvicorn stopped before it served; the reason is logged above")
