"""OpenTelemetry traces of inference requests: optional, off by default (``MODELPORT_TRACING``).

Off, this module is plain Python: nothing imports OpenTelemetry, no :class:`Tracer` exists, and a
request only meets ``is None`` tests. On, every admitted inference request (REST ``/v2``, MLflow scoring,
gRPC) becomes one server span, continuing the caller's W3C ``traceparent`` when it sends one::

    modelport.infer    model, version, rows, protocol, outcome, status, request id, key id
     ├── parse         body (JSON, binary tensors, protobuf) → tensors
     ├── validate      tensors → the signature's columns; shape, range and category checks
     ├── queue         waiting in the micro-batcher for the batch to run
     ├── infer         the runtime call of that batch (shared by its requests; ``modelport.batch_rows``)
     └── serialise     outputs → tensors → response body

The request path records monotonic timestamps in a :class:`Timeline` — the batcher stamps the
timelines of the requests it runs — and the spans are made with those explicit times once the answer is
ready. So no tracing context crosses the batcher, and a request's spans cost one burst of work at its
end. Spans leave through a ``BatchSpanProcessor`` and an OTLP/HTTP exporter in a background thread: a
slow or unreachable collector never delays or fails a request. No span holds an input value, an error
message (they can quote input) or a key secret: only the key's id.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from modelport._version import __version__
from modelport.optional import require

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

__all__ = ["SPAN_NAME", "Timeline", "Tracer"]

SPAN_NAME = "modelport.infer"
_SERVER_ERRORS = frozenset({"error", "timeout", "unavailable"})  # 4xx outcomes are the caller's
_PURPOSE = "MODELPORT_TRACING (OpenTelemetry traces)"

log = logging.getLogger("modelport.monitoring")


class Timeline:
    """When each phase of one inference request began and ended, in ``time.perf_counter_ns()``; 0 for
    a boundary the request never reached (it failed, or its protocol has no such phase)."""

    __slots__ = (
        "batch_rows",
        "done",
        "parsed",
        "parsing",
        "queued",
        "ran",
        "received",
        "serialised",
        "serialising",
        "traceparent",
        "tracestate",
        "validating",
    )

    def __init__(self, received: int, traceparent: str | None = None, tracestate: str | None = None) -> None:
        self.received = received  # the request arrived (the server span's start)
        self.parsing = time.perf_counter_ns()  # the adapter starts on the body
        self.parsed = 0
        self.validating = 0  # the data plane starts converting tensors to columns
        self.queued = 0  # the request joined the micro-batcher's queue
        self.ran = 0  # its batch's runtime call started
        self.done = 0  # … and returned
        self.batch_rows = 0  # rows in that call, all requests together
        self.serialising = 0  # the data plane starts on the outputs
        self.serialised = 0  # the adapter has the response body
        self.traceparent = traceparent
        self.tracestate = tracestate


class Tracer:
    """Turns finished requests' timelines into spans and exports them (exists only when tracing is on).

    ``endpoint`` is the collector's OTLP/HTTP traces URL; ``sample_rate`` the share of new traces kept
    (a caller's sampling decision in ``traceparent`` is followed). The SDK's own ``OTEL_BSP_*`` and
    ``OTEL_EXPORTER_OTLP_TRACES_{HEADERS,TIMEOUT,CERTIFICATE}`` variables apply."""

    def __init__(self, endpoint: str, sample_rate: float = 1.0) -> None:
        # The SDK and the exporter are two packages of the extra: either may be missing.
        require("opentelemetry.sdk.trace", "tracing", _PURPOSE)
        require("opentelemetry.exporter.otlp.proto.http.trace_exporter", "tracing", _PURPOSE)
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        from opentelemetry.trace import SpanKind, Status, StatusCode
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        resource = Resource.create(
            {"service.name": "modelport", "service.version": __version__, "process.pid": os.getpid()}
        )
        # No atexit hook and no global provider: the worker's lifespan shuts this one down (shutdown()).
        self._provider: TracerProvider = TracerProvider(
            resource=resource, sampler=ParentBased(TraceIdRatioBased(sample_rate)), shutdown_on_exit=False
        )
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        self._tracer = self._provider.get_tracer("modelport", __version__)
        self._propagator = TraceContextTextMapPropagator()
        self._in_context = trace.set_span_in_context
        self._server = SpanKind.SERVER
        self._error = Status(StatusCode.ERROR)
        self._warned = False

    def finish(
        self,
        timeline: Timeline,
        *,
        protocol: str,
        model: str,
        version: int | None,
        rows: int,
        outcome: str,
        status: int,
        request_id: str,
        key_id: str,
    ) -> None:
        """Make the request's spans, ending now. ``status`` is the HTTP status (REST) or the gRPC status
        code (gRPC); ``outcome`` the metrics' outcome label. Never raises: tracing must not fail a
        request."""
        try:
            self._emit(timeline, protocol, model, version, rows, outcome, status, request_id, key_id)
        except Exception as exc:
            if not self._warned:
                self._warned = True
                log.warning("trace not recorded (%s); requests are unaffected", type(exc).__name__)

    def _emit(
        self,
        timeline: Timeline,
        protocol: str,
        model: str,
        version: int | None,
        rows: int,
        outcome: str,
        status: int,
        request_id: str,
        key_id: str,
    ) -> None:
        end = time.perf_counter_ns()
        offset = time.time_ns() - end  # perf_counter → nanoseconds since the epoch
        parent = None
        if timeline.traceparent:
            carrier = {"traceparent": timeline.traceparent}
            if timeline.tracestate:
                carrier["tracestate"] = timeline.tracestate
            parent = self._propagator.extract(carrier)
        attributes: dict[str, Any] = {
            "modelport.model": model,
            "modelport.protocol": protocol,
            "modelport.outcome": outcome,
            "modelport.rows": rows,
            "modelport.request_id": request_id,
            "modelport.key_id": key_id,
            "rpc.grpc.status_code" if protocol == "grpc" else "http.response.status_code": status,
        }
        if version is not None:
            attributes["modelport.version"] = version
        server = self._tracer.start_span(
            SPAN_NAME,
            context=parent,
            kind=self._server,
            attributes=attributes,
            start_time=timeline.received + offset,
        )
        if not server.is_recording():  # not sampled
            return
        if outcome in _SERVER_ERRORS:
            server.set_status(self._error)
        context = self._in_context(server)
        phases = (
            ("parse", timeline.parsing, timeline.parsed),
            ("validate", timeline.validating, timeline.queued),
            ("queue", timeline.queued, timeline.ran),
            ("infer", timeline.ran, timeline.done),
            ("serialise", timeline.serialising, timeline.serialised),
        )
        for name, started, stopped in phases:
            if not started:
                continue
            span = self._tracer.start_span(name, context=context, start_time=started + offset)
            if name == "infer" and timeline.batch_rows:
                span.set_attribute("modelport.batch_rows", timeline.batch_rows)
            if not stopped:  # the phase the request failed (or timed out) in
                stopped = end
                if outcome != "ok":
                    span.set_status(self._error)
            span.end(end_time=stopped + offset)
        server.end(end_time=end + offset)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Export the spans still queued, waiting at most ``timeout`` seconds: an unreachable collector
        (the exporter retries for its own timeout) must not hold up a worker's exit."""
        closer = threading.Thread(target=self._provider.shutdown, name="modelport-tracing", daemon=True)
        closer.start()
        closer.join(timeout)
