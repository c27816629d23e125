"""OpenTelemetry traces from a real keyed server (REST and gRPC) to a real OTLP/HTTP receiver: one
``modelport.infer`` span per inference request with parse, validate, queue, infer and serialise under it
in order, a caller's ``traceparent`` continued, no key secret or input value anywhere; off by default
without importing OpenTelemetry; an unreachable collector fails nothing; a missing extra fails start-up."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from modelport.app import open_registry
from modelport.security.store import KeyStore
from modelport.settings import Settings
from tests.conftest import until
from tests.serving.conftest import free_port, start_server, stop_server

# Distinctive inputs: none of them may show up in a span.
VALUES = [0.1234567, -2.7182818, 3.1415926, 1.4142135, -0.5772156, 2.2360679]
ROW = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 6], "data": [VALUES]}]}
CALLER_TRACE, CALLER_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
GRPC_TRACE, GRPC_SPAN = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
PHASES = ["parse", "validate", "queue", "infer", "serialise"]


@dataclass
class Received:
    span: Span
    resource: dict[str, Any]

    @property
    def attributes(self) -> dict[str, Any]:
        return _attributes(self.span.attributes)


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs if isinstance(pair, KeyValue)}


class Collector:
    """A small OTLP/HTTP receiver on 127.0.0.1: keeps every POST /v1/traces body."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                found = self.path == "/v1/traces"
                if found:
                    with collector.lock:
                        collector.bodies.append(body)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if found else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"

    def spans(self) -> list[Received]:
        with self.lock:
            bodies = list(self.bodies)
        received = []
        for body in bodies:
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            for resource_spans in request.resource_spans:
                resource = _attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    received += [Received(span, resource) for span in scope_spans.spans]
        return received

    def wait_for(self, done: Callable[[list[Received]], bool], timeout: float = 20) -> list[Received]:
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans()
            if done(spans) or time.monotonic() > deadline:
                return spans
            time.sleep(0.05)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector() -> Iterator[Collector]:
    running = Collector()
    yield running
    running.close()


def _children(spans: list[Received], parent: Span) -> dict[str, Span]:
    found = {s.span.name: s.span for s in spans if s.span.parent_span_id == parent.span_id}
    assert all(s.trace_id == parent.trace_id for s in found.values())
    return found


def _servers(spans: list[Received]) -> list[Received]:
    return [s for s in spans if s.span.name == "modelport.infer"]


def _key(home: Path) -> tuple[str, str]:
    registry = open_registry(Settings(home=home))
    try:
        created = KeyStore(registry.store).create(name="tracing", role="consumer", actor="local:test")
    finally:
        registry.close()
    assert created is not None
    return created[0].id, created[1]


def test_spans_for_rest_and_grpc_requests(served_home: Path, collector: Collector) -> None:
    key_id, token = _key(served_home)
    grpc_port = free_port()
    server = start_server(
        served_home,
        "--grpc-port",
        str(grpc_port),
        insecure_dev=False,
        env={
            "MODELPORT_TRACING": "true",
            "MODELPORT_TRACING_ENDPOINT": collector.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        },
    )
    auth = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.Client(base_url=server.url, headers=auth, timeout=30) as http:
            plain = http.post("/v2/models/credit/infer", json=ROW, headers={"X-Request-ID": "r-plain"})
            continued = http.post(
                "/v2/models/credit/versions/staging/infer",
                json=ROW,
                headers={"X-Request-ID": "r-caller", "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
            )
            bad_row = {
                "inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 5], "data": [VALUES[:5]]}]
            }
            invalid = http.post("/v2/models/credit/infer", json=bad_row, headers={"X-Request-ID": "r-bad"})
            mlflow = http.post(
                "/endpoints/credit@production/invocations",
                json={"inputs": [VALUES]},
                headers={"X-Request-ID": "r-mlflow"},
            )
            assert http.get("/v2/health/ready").status_code == 200  # not an inference request: no span
        assert [plain.status_code, continued.status_code, invalid.status_code] == [200, 200, 400]
        assert mlflow.status_code == 200, mlflow.text
        tensor = triton.InferInput("input", [2, 6], "FP64")
        tensor.set_data_from_numpy(np.array([VALUES, VALUES]))
        with triton.InferenceServerClient(url=f"127.0.0.1:{grpc_port}") as client:
            result = client.infer(
                "credit",
                [tensor],
                model_version="staging",
                request_id="g-caller",
                headers={"x-api-key": token, "traceparent": f"00-{GRPC_TRACE}-{GRPC_SPAN}-01"},
            )
        assert result.as_numpy("label").shape == (2,)
        # exported while the server runs: 5 server spans; 5 children each for v2, gRPC and MLflow
        # (one pipeline, the same phases), 2 for the refused request
        expected = 5 + 5 + 5 + 5 + 5 + 2
        spans = collector.wait_for(lambda spans: len(spans) >= expected)
        assert len(spans) == expected
    finally:
        assert stop_server(server) in (0, -15)  # uvicorn re-raises the SIGTERM it handled
    servers = {s.attributes["modelport.request_id"]: s for s in _servers(spans)}
    assert sorted(servers) == ["g-caller", "r-bad", "r-caller", "r-mlflow", "r-plain"]

    for received in servers.values():
        assert received.resource["service.name"] == "modelport"
        assert received.resource["process.pid"] == server.process.pid
        assert received.span.kind == Span.SPAN_KIND_SERVER
        attributes = received.attributes
        assert attributes["modelport.model"] == "credit" and attributes["modelport.key_id"] == key_id

    def check_ok(received: Received, protocol: str, version: int, rows: int, phases: list[str]) -> None:
        attributes = received.attributes
        assert attributes["modelport.protocol"] == protocol
        assert attributes["modelport.version"] == version and attributes["modelport.rows"] == rows
        assert attributes["modelport.outcome"] == "ok"
        server_span = received.span
        children = _children(spans, server_span)
        assert sorted(children) == sorted(phases)
        # sane, ordered times: inside the request, one phase after the other
        times = [server_span.start_time_unix_nano]
        for name in phases:
            child = children[name]
            assert child.status.code != Status.STATUS_CODE_ERROR
            assert child.start_time_unix_nano <= child.end_time_unix_nano
            times += [child.start_time_unix_nano, child.end_time_unix_nano]
        times.append(server_span.end_time_unix_nano)
        assert times == sorted(times), f"{protocol}: phases out of order"
        assert server_span.end_time_unix_nano - server_span.start_time_unix_nano < 10e9

    check_ok(servers["r-plain"], "v2", 1, 1, PHASES)
    check_ok(servers["r-caller"], "v2", 2, 1, PHASES)
    check_ok(servers["g-caller"], "grpc", 2, 2, PHASES)
    check_ok(servers["r-mlflow"], "mlflow", 1, 1, PHASES)  # the MLflow table is decoded in "validate"
    assert servers["r-plain"].attributes["http.response.status_code"] == 200
    assert servers["g-caller"].attributes["rpc.grpc.status_code"] == 0
    infer = _children(spans, servers["g-caller"].span)["infer"]
    assert _attributes(infer.attributes)["modelport.batch_rows"] == 2

    # the callers' traces are continued; the others start their own
    assert servers["r-caller"].span.trace_id.hex() == CALLER_TRACE
    assert servers["r-caller"].span.parent_span_id.hex() == CALLER_SPAN
    assert servers["g-caller"].span.trace_id.hex() == GRPC_TRACE
    assert servers["g-caller"].span.parent_span_id.hex() == GRPC_SPAN
    assert servers["r-plain"].span.trace_id.hex() not in (CALLER_TRACE, GRPC_TRACE)
    assert not servers["r-plain"].span.parent_span_id

    # a refused request: the phase it failed in is marked, nothing after it ran
    bad = servers["r-bad"]
    assert bad.attributes["modelport.outcome"] == "invalid"
    assert bad.attributes["http.response.status_code"] == 400
    assert "modelport.rows" in bad.attributes and bad.attributes["modelport.rows"] == 0
    bad_children = _children(spans, bad.span)
    assert sorted(bad_children) == ["parse", "validate"]
    assert bad_children["validate"].status.code == Status.STATUS_CODE_ERROR
    assert bad.span.status.code != Status.STATUS_CODE_ERROR  # a client error is not a server error

    # no secret and no input value anywhere: not in an attribute, not in what was sent
    secret = token.split("_", 2)[2]
    values: list[Any] = []
    for received in spans:
        values += received.attributes.values()
        values += received.resource.values()
        for event in received.span.events:
            values += _attributes(event.attributes).values()
    for value in values:
        assert not (isinstance(value, float) and any(abs(value - v) < 1e-6 for v in VALUES))
        assert not (isinstance(value, str) and (secret in value or "0.123456" in value or "3.14159" in value))
    assert not any(secret.encode() in body or token.encode() in body for body in collector.bodies)


def test_off_by_default_never_imports_opentelemetry(served_home: Path) -> None:
    script = f"""
import asyncio, json, sys
import httpx
from modelport.app import create_app
from modelport.settings import Settings

app = create_app(Settings(home={str(served_home)!r}, insecure_dev=True))
assert app.worker.tracer is None

async def main():
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        response = await client.post("/v2/models/credit/infer", json={ROW!r})
        return response.status_code

status = asyncio.run(main())
print(json.dumps({{"status": status, "loaded": sorted(m for m in sys.modules if m.startswith("opentelemetry"))}}))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELPORT_", "OTEL_"))}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome == {"status": 200, "loaded": []}


def test_unreachable_collector_fails_no_request(served_home: Path, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    nowhere = f"http://127.0.0.1:{free_port()}/v1/traces"  # nothing listens there
    server = start_server(
        served_home,
        env={
            "MODELPORT_TRACING": "true",
            "MODELPORT_TRACING_ENDPOINT": nowhere,
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            # the exporter gives a batch up after half a second (its default: 10 s of retries, of which
            # the worker's exit waits up to 5): the stop below need not wait for that
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "0.5",
        },
        log_file=log,
    )
    try:
        with server.client() as http:
            statuses = [http.post("/v2/models/credit/infer", json=ROW).status_code for _ in range(5)]
            # an export has been tried, and has failed
            until(lambda: '"logger":"opentelemetry.exporter' in log.read_text(), interval=0.02)
            statuses += [http.post("/v2/models/credit/infer", json=ROW).status_code for _ in range(5)]
        assert statuses == [200] * 10
    finally:
        stopping = time.monotonic()
        assert stop_server(server) in (0, -15)  # uvicorn re-raises the SIGTERM it handled
    assert time.monotonic() - stopping < 15  # the queued spans are given up, not waited on forever
    # the exporter's complaints are JSON lines like every other log line
    lines = [line for line in log.read_text().splitlines() if "opentelemetry" in line]
    assert lines and all(json.loads(line)["logger"].startswith("opentelemetry") for line in lines)


def test_missing_extra_fails_start_up_naming_it(served_home: Path) -> None:
    script = f"""
import sys
sys.modules["opentelemetry"] = None  # as if the tracing extra were not installed
from modelport.app import create_app
from modelport.errors import MissingExtra
from modelport.settings import Settings
try:
    create_app(Settings(home={str(served_home)!r}, insecure_dev=True, tracing=True))
except MissingExtra as exc:
    print(exc)
else:
    raise SystemExit("started without OpenTelemetry")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "modelport[tracing]" in done.stdout and "MODELPORT_TRACING" in done.stdout


def test_sample_rate_follows_the_callers_decision(collector: Collector) -> None:
    from modelport.monitoring.tracing import Timeline, Tracer

    tracer = Tracer(collector.endpoint, sample_rate=0.0)
    fields: dict[str, Any] = {
        "protocol": "v2",
        "model": "credit",
        "version": 1,
        "rows": 1,
        "outcome": "ok",
        "status": 200,
        "key_id": "k",
    }
    for request_id, traceparent in (
        ("new", None),
        ("kept", f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"),
        ("dropped", f"00-{GRPC_TRACE}-{GRPC_SPAN}-00"),
    ):
        timeline = Timeline(time.perf_counter_ns(), traceparent)
        timeline.parsed = time.perf_counter_ns()
        tracer.finish(timeline, request_id=request_id, **fields)
    tracer.shutdown()
    spans = collector.spans()
    assert [s.attributes["modelport.request_id"] for s in _servers(spans)] == ["kept"]
    assert [s.span.name for s in spans if s.span.parent_span_id == _servers(spans)[0].span.span_id] == [
        "parse"
    ]
