"""The worker: one serving process's life, its background duties and its request accounting.

Every protocol adapter (REST in ``rest.py``, gRPC in ``grpc.py``, and the ``/api/v1`` handlers in
``management.py``) is a thin peer over one :class:`Worker`; none imports another. The worker owns:

- **start and stop**: the prediction log, the shadow scorer, the protocol servers that share the event
  loop (gRPC), the scoring process, and the last flushes on the way out;
- **drain**: on SIGTERM it reports not-ready at once and keeps serving for ``drain_seconds`` before
  the server's own handler closes the socket;
- **the background duties**, every ``route_poll_seconds`` (250 ms by default): registry changes (alias
  moves, releases, key revocations), metric and access-log flushes, prediction-log segments, usage and
  release counts, drift evaluation and automatic rollback;
- **request accounting**: :meth:`finished` is the one place where an inference request of any protocol
  is counted — Prometheus metrics, the key's usage, the trace.

``app.py`` builds it (the single wiring point); it knows nothing of HTTP or protobuf.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from modelport.errors import ModelportError, StoreNotReady
from modelport.events.dispatch import dispatcher_for
from modelport.monitoring.logs import ACCESS_LOG
from modelport.monitoring.metrics import LOCAL, METRICS, alias_label, outcome_of
from modelport.monitoring.monitor import Monitor
from modelport.monitoring.tracing import Timeline, Tracer
from modelport.registry.names import ModelRef
from modelport.registry.service import Registry
from modelport.releases.manager import ReleaseManager
from modelport.security.gate import Gate
from modelport.security.keys import Principal
from modelport.serving.dataplane import DataPlane

if TYPE_CHECKING:
    from modelport.batch.runner import JobRunner

__all__ = ["Finished", "ProtocolServer", "Worker"]

log = logging.getLogger("modelport.serving")

USAGE_FLUSH_SECONDS = 1.0


class ProtocolServer(Protocol):
    """A server that shares the worker's event loop (gRPC)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass(slots=True)
class Finished:
    """One answered inference request, as every protocol reports it to :meth:`Worker.finished`."""

    protocol: str  # "v2", "grpc", "mlflow" or "tfserving": a metric label
    ref: ModelRef | None  # None: the request named no valid model
    version: int | None  # the version that answered (or was chosen), if any
    status: int  # the HTTP status REST gives for this outcome (gRPC reports the same class)
    started: float  # time.perf_counter() at arrival
    principal: Principal | None  # None: refused before admission (no usage is counted)
    rows: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    request_id: str = ""
    timeline: Timeline | None = None
    wire_status: int | None = None  # the status on the wire, for traces: the gRPC code's number (None: HTTP)


@dataclass
class Worker:
    """One serving process: the data plane, the gate and everything that runs beside requests."""

    plane: DataPlane
    gate: Gate
    monitor: Monitor | None = None
    tracer: Tracer | None = None
    drain_seconds: float = 0.0
    release_flush_seconds: float = 5.0
    prediction_flush_seconds: float = 10.0
    servers: list[ProtocolServer] = field(default_factory=list)
    jobs: JobRunner | None = None  # batch jobs submitted over the API (batch/runner.py)
    _jobs_tick: asyncio.Task[list[str]] | None = None
    _poller: asyncio.Task[None] | None = None
    _evaluation: asyncio.Task[None] | None = None

    @property
    def registry(self) -> Registry:
        return self.plane.pool.registry

    @property
    def draining(self) -> bool:
        return self.plane.draining

    # -- start, stop, drain ---------------------------------------------------------------------

    async def start(self) -> None:
        """Everything a worker needs before its first request (called once, on its event loop)."""
        plane = self.plane
        if plane.predictions is not None and any(
            p.get("sample_rate", 0) > 0 for p in plane.pool.log_policies.values()
        ):
            plane.predictions.prepare()
        plane.sync_shadows()
        self._poller = asyncio.create_task(self.run_duties())
        for server in self.servers:
            await server.start()
        # Everything loaded so far lives as long as the worker: keep it out of the cyclic collector's
        # full passes, whose pauses otherwise show up as p99 spikes.
        gc.collect()
        gc.freeze()
        self._drain_on_sigterm()

    async def stop(self) -> None:
        """Stop taking requests, let the protocol servers finish theirs, write what is counted."""
        self.plane.draining = True
        for server in self.servers:
            await server.stop()
        if self._poller is not None:
            self._poller.cancel()
        await self.flush_usage()
        await self.write_predictions(now=True)
        await self.plane.close_shadows()  # its last answers are counted before the flush
        await self.plane.close_scoring()
        with contextlib.suppress(Exception):  # the counts of the last seconds, if the database is there
            await self.flush_releases()
        ACCESS_LOG.flush()
        if self.monitor is not None:
            await asyncio.to_thread(self.monitor.close)  # its report child, if one is up
        if self.tracer is not None:
            await asyncio.to_thread(self.tracer.shutdown)

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

    # -- request accounting -----------------------------------------------------------------------

    def finished(self, done: Finished) -> None:
        """Count one inference request of any protocol: the request and latency metrics (labels stay
        bounded: only registered models and versions, and aliases that exist, become values), the key's
        usage, and the trace when tracing is on."""
        ref = done.ref
        routes = self.plane.pool.routes_of(ref.name) if ref is not None else None
        model = ref.name if ref is not None and routes is not None else ""
        version = str(done.version) if done.version is not None and model else ""
        alias = alias_label(routes, ref.selector if ref is not None else None)
        outcome = outcome_of(done.status)
        LOCAL.request(model, version, alias, done.protocol, outcome, time.perf_counter() - done.started)
        if model and done.principal is not None:
            self.gate.count(
                done.principal,
                model,
                rows=done.rows,
                error=done.status >= 400,
                bytes_in=done.bytes_in,
                bytes_out=done.bytes_out,
            )
        if self.tracer is not None and done.timeline is not None:
            self.tracer.finish(
                done.timeline,
                protocol=done.protocol,
                model=ref.name[:100] if ref is not None else "",
                version=done.version,
                rows=done.rows,
                outcome=outcome,
                status=done.status if done.wire_status is None else done.wire_status,
                request_id=done.request_id,
                key_id=done.principal.key_id if done.principal is not None else "",
            )

    async def record_denial(self, principal: Principal, what: str) -> None:
        """Write a refused privileged attempt to the audit log (the gate limits how often)."""

        def append() -> None:
            with contextlib.suppress(ModelportError):  # the refusal stands whether or not it is recorded
                self.registry.store.append_audit(
                    principal.actor, "denied", what[:300], after={"role": principal.role}
                )

        await asyncio.to_thread(append)

    # -- background duties ----------------------------------------------------------------------

    async def run_duties(self) -> None:
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
            await self.write_predictions()
            # in the background: an evaluation takes seconds, and alias moves and key revocations
            # must still reach this worker within a poll interval meanwhile
            idle = self._evaluation is None or self._evaluation.done()
            if idle and self.monitor is not None and self.monitor.due(time.monotonic()) and self.logging():
                self._evaluation = asyncio.create_task(self.evaluate())
            if (
                self.jobs is not None
                and self.jobs.due()
                and (self._jobs_tick is None or self._jobs_tick.done())
            ):
                self._jobs_tick = asyncio.create_task(asyncio.to_thread(self.jobs.tick))
            dispatcher_for(self.registry).kick()  # webhooks: on a thread of its own when due (events/)
            try:
                keys_generation = await self.refresh(keys_generation)
            except Exception as exc:  # keep polling whatever happens; serve the routes and keys we have
                log.warning("registry poll failed (%s); retrying", type(exc).__name__)
            if loop.time() - last_flush >= USAGE_FLUSH_SECONDS:
                last_flush = loop.time()
                METRICS.sample_memory()
                try:
                    await self.flush_usage()
                except Exception as exc:
                    log.warning("usage flush failed (%s)", type(exc).__name__)
            if loop.time() - last_release_flush >= self.release_flush_seconds:
                last_release_flush = loop.time()
                try:
                    await self.flush_releases()
                except Exception as exc:
                    log.warning("release counts not written (%s)", type(exc).__name__)

    async def refresh(self, keys_generation: int) -> int:
        """Read the registry's routes if they changed (and start or stop shadows for them); reload the
        keys when the generation moved. Returns the generation the keys now reflect."""
        if await asyncio.to_thread(self.plane.pool.refresh_if_changed):
            self.plane.sync_shadows()
        generation = self.plane.pool.generation
        if generation != keys_generation:
            await asyncio.to_thread(self.gate.reload)
        return generation

    def logging(self) -> bool:
        """Whether some model logs predictions: only then is there drift or live accuracy to evaluate
        (and only then does the monitor's evaluation child run, every interval)."""
        return self.plane.predictions is not None and any(
            policy.get("sample_rate", 0) > 0 for policy in self.plane.pool.log_policies.values()
        )

    async def evaluate(self) -> None:
        """Drift and live accuracy for /metrics, once per interval, by one of the workers."""
        monitor = self.monitor
        if monitor is None:
            return
        try:
            await asyncio.to_thread(monitor.tick)
        except Exception as exc:  # a bad segment or an away database must not stop the duties
            log.warning("drift and accuracy evaluation failed (%s)", type(exc).__name__)

    async def write_predictions(self, *, now: bool = False) -> None:
        predictions = self.plane.predictions
        if predictions is None or not (
            now or predictions.due(time.monotonic(), self.prediction_flush_seconds)
        ):
            return
        items = predictions.take()
        if items:
            try:
                await asyncio.to_thread(predictions.write, items)
            except Exception as exc:  # the disk is full or gone: the requests were answered anyway
                predictions.lost(items)  # counted per request, as a full queue counts them
                logging.getLogger("modelport.monitoring").warning(
                    "prediction log segment not written (%s)", type(exc).__name__
                )

    async def flush_releases(self) -> None:
        """Add this worker's per-arm counts to the database, then check automatic-rollback bounds."""
        counts = self.plane.release_counts
        rows = counts.take()
        if rows:
            try:
                await asyncio.to_thread(self.registry.store.releases.add_stats, rows)
            except StoreNotReady:
                counts.restore(rows)  # the database is away: keep them for the next second
                return
        releases = self.plane.pool.releases()
        if any(r.auto_rollback is not None for by_alias in releases.values() for r in by_alias.values()):
            manager = ReleaseManager(self.registry)
            for ref in await asyncio.to_thread(manager.check_auto_rollback, releases):
                log.warning("automatic rollback of %s: the canary broke its bound", ref)

    async def flush_usage(self) -> None:
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
