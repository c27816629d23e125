"""Prometheus metrics from a real server with 1, 2 and 4 workers: exact counts per model, version,
alias, protocol and outcome (REST, gRPC, MLflow) summed over the workers, the latency histogram's
buckets, the loaded-models and memory gauges over live workers; bounded labels.

One server per worker count (module-scoped, parametrised), each on its own copy of the registry; the
three start together, so that the later ones start while the first is tested. No fixed sleeps: each
worker folds its counts into the shared metrics within 0.25 s and samples its memory every second, so a
test polls /metrics until the expected values appear, with a deadline."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from prometheus_client.parser import text_string_to_metric_families

from modelport.app import open_registry
from modelport.registry.names import ModelRef
from modelport.settings import Settings
from tests.serving.conftest import Server, free_port, new_connection_each, start_server, stop_server

ROW = {
    "inputs": [
        {"name": "input", "datatype": "FP64", "shape": [1, 6], "data": [[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]]}
    ]
}
TWO_ROWS = {
    "inputs": [{"name": "input", "datatype": "FP64", "shape": [2, 6], "data": [[0.1] * 6, [0.2] * 6]}]
}
DEADLINE = 20.0  # seconds for the metrics to show what was sent (they normally do within 0.25 s)

Labels = tuple[tuple[str, str], ...]


@dataclass
class Served:
    server: Server
    grpc_port: int
    workers: int
    http: httpx.Client  # a fresh connection for each request: the kernel spreads them over the workers

    def scrape(self) -> str:
        response = self.http.get(f"{self.server.url}/metrics")
        assert response.status_code == 200
        return response.text

    def post(self, path: str, body: object) -> int:
        return self.http.post(f"{self.server.url}{path}", json=body).status_code


WORKERS = (1, 2, 4)


@pytest.fixture(scope="module")
def starting(served_home: Path) -> Iterator[dict[int, tuple[Future[Server], int]]]:
    """The servers of every worker count, started at once (each with its copy of the registry):
    worker count -> (its start, its gRPC port)."""
    homes = {n: shutil.copytree(served_home, served_home.with_name(f"home-{n}-workers")) for n in WORKERS}
    ports = {n: free_port() for n in WORKERS}
    with ThreadPoolExecutor(len(WORKERS)) as pool:
        futures = {
            n: pool.submit(start_server, homes[n], "--workers", str(n), "--grpc-port", str(ports[n]))
            for n in WORKERS
        }
        try:
            yield {n: (futures[n], ports[n]) for n in WORKERS}
        finally:
            for future in futures.values():
                if future.exception() is None:
                    stop_server(future.result())


@pytest.fixture(scope="module", params=WORKERS, ids=lambda n: f"{n}-workers")
def served(
    request: pytest.FixtureRequest, starting: dict[int, tuple[Future[Server], int]]
) -> Iterator[Served]:
    workers: int = request.param
    future, grpc_port = starting[workers]
    with new_connection_each(timeout=30) as http:
        yield Served(future.result(), grpc_port, workers, http)


def samples(text: str, name: str) -> dict[Labels, float]:
    found: dict[Labels, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def key(**labels: str) -> Labels:
    return tuple(sorted(labels.items()))


def until(served: Served, check: Callable[[str], object]) -> str:
    """Scrape until ``check(text)`` passes (asserts nothing raised); re-raise its last failure."""
    deadline = time.monotonic() + DEADLINE
    while True:
        text = served.scrape()
        try:
            check(text)
            return text
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def test_exact_counts_and_latency_buckets(served: Served) -> None:
    before = served.scrape()
    assert [served.post("/v2/models/credit/infer", ROW) for _ in range(30)] == [200] * 30
    assert [served.post("/v2/models/credit/versions/2/infer", TWO_ROWS) for _ in range(10)] == [200] * 10
    assert [served.post("/v2/models/credit/versions/staging/infer", ROW) for _ in range(7)] == [200] * 7
    assert [served.post("/v2/models/credit/infer", {"inputs": []}) for _ in range(5)] == [400] * 5
    assert [served.post(f"/v2/models/nosuch{i}/infer", ROW) for i in range(3)] == [404] * 3
    mlflow = {"inputs": [[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]]}
    assert [served.post("/endpoints/credit/invocations", mlflow) for _ in range(6)] == [200] * 6
    with triton.InferenceServerClient(f"127.0.0.1:{served.grpc_port}") as client:
        tensor = triton.InferInput("input", [1, 6], "FP64")
        tensor.set_data_from_numpy(np.zeros((1, 6)))
        for _ in range(4):
            client.infer("credit", [tensor], model_version="staging")

    requests = {
        key(model="credit", version="1", alias="default", protocol="v2", outcome="ok"): 30,
        key(model="credit", version="2", alias="", protocol="v2", outcome="ok"): 10,
        key(model="credit", version="2", alias="staging", protocol="v2", outcome="ok"): 7,
        key(model="credit", version="1", alias="default", protocol="v2", outcome="invalid"): 5,
        key(model="", version="", alias="default", protocol="v2", outcome="not_found"): 3,
        key(model="credit", version="1", alias="default", protocol="mlflow", outcome="ok"): 6,
        key(model="credit", version="2", alias="staging", protocol="grpc", outcome="ok"): 4,
    }
    latency = {
        key(model="credit", version="1", protocol="v2"): 35,
        key(model="credit", version="2", protocol="v2"): 17,
        key(model="credit", version="1", protocol="mlflow"): 6,
        key(model="credit", version="2", protocol="grpc"): 4,
    }
    rows = {key(model="credit", version="1"): 30 + 6, key(model="credit", version="2"): 20 + 7 + 4}

    def added(text: str, name: str) -> dict[Labels, float]:
        old = samples(before, name)
        return {labels: value - old.get(labels, 0) for labels, value in samples(text, name).items()}

    def counted(text: str) -> None:
        got = added(text, "modelport_requests_total")
        assert {labels: got.get(labels) for labels in requests} == requests
        count = added(text, "modelport_request_duration_seconds_count")
        assert {labels: count.get(labels) for labels in latency} == latency
        got_rows = added(text, "modelport_rows_scored_total")
        assert {labels: got_rows.get(labels) for labels in rows} == rows

    text = until(served, counted)
    buckets = added(text, "modelport_request_duration_seconds_bucket")
    for labels, count in latency.items():
        series = sorted(
            (float(dict(b)["le"]), value)
            for b, value in buckets.items()
            if tuple(item for item in b if item[0] != "le") == labels
        )
        assert len(series) == 15 and series[-1] == (float("inf"), count)  # 14 bounds and +Inf
        cumulative = [value for _, value in series]
        assert cumulative == sorted(cumulative) and cumulative[0] >= 0
        assert added(text, "modelport_request_duration_seconds_sum")[labels] > 0
    batches = added(text, "modelport_batch_rows_sum")
    assert batches[key(model="credit", version="2")] == 31
    assert batches[key(model="credit", version="1")] == 36
    assert "nosuch0" not in text  # unknown names never become label values
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("modelport_"), family.name
        assert not family.name.endswith("_created"), family.name


def test_loaded_models_over_live_workers(served: Served) -> None:
    assert served.post("/v2/models/credit/versions/1/infer", ROW) == 200
    assert served.post("/v2/models/credit/versions/2/infer", ROW) == 200
    sizes = served_bytes(served.server.home)

    def loaded(text: str) -> None:
        # Each worker loads a version on its first request for it, once (nothing is evicted here):
        # the versions loaded over all workers are exactly the loads counted, and so are their bytes.
        loads = samples(text, "modelport_model_load_seconds_count")
        per_version = {n: loads.get(key(model="credit", version=str(n)), 0) for n in sizes}
        assert all(1 <= count <= served.workers for count in per_version.values())
        assert samples(text, "modelport_loaded_models")[()] == sum(per_version.values())
        # the bytes are each version's memory as measured at its load (serving/pool.py): at least its
        # artifact's size in every worker that holds it, and the per-version series add up to them
        memory = samples(text, "modelport_model_memory_bytes")
        per_version_bytes = {n: memory.get(key(model="credit", version=str(n)), 0) for n in sizes}
        assert all(per_version_bytes[n] >= count * sizes[n] for n, count in per_version.items())
        assert samples(text, "modelport_loaded_model_bytes")[()] == sum(per_version_bytes.values())

    text = until(served, loaded)
    if served.workers == 1:
        assert samples(text, "modelport_loaded_models")[()] == 2


def test_resident_memory_is_the_whole_server(served: Served) -> None:
    def resident(text: str) -> None:
        reported = samples(text, "modelport_process_resident_memory_bytes")[()]
        actual = tree_resident_bytes(served.server.process.pid)
        assert reported > 0 and abs(reported - actual) <= 0.1 * actual, (reported, actual)

    until(served, resident)


def test_a_dead_workers_gauges_are_dropped(served: Served) -> None:
    if served.workers == 1:
        pytest.skip("one worker is the server process itself")
    parent = served.server.process.pid
    old = set(workers_of(parent))
    os.kill(sorted(old)[0], signal.SIGKILL)

    def replaced(text: str) -> None:
        assert len(set(workers_of(parent)) - old) == 1
        reported = samples(text, "modelport_process_resident_memory_bytes")[()]
        actual = tree_resident_bytes(parent)
        # the dead worker's ~100 MB would still be in the sum if its gauges stayed
        assert abs(reported - actual) <= 0.1 * actual, (reported, actual)

    until(served, replaced)
    assert served.post("/v2/models/credit/infer", ROW) == 200


# -- reading /proc independently of the server's own code -----------------------------------------


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, resident bytes) of every process."""
    page = os.sysconf("SC_PAGE_SIZE")
    found: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            statm = Path(f"/proc/{entry}/statm").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        found[int(entry)] = (parent, int(statm.split()[1]) * page)
    return found


def tree_resident_bytes(root: int) -> int:
    processes = _processes()
    total, pending = 0, [root]
    while pending:
        pid = pending.pop()
        total += processes.get(pid, (0, 0))[1]
        pending.extend(child for child, (parent, _) in processes.items() if parent == pid)
    return total


def workers_of(parent: int) -> list[int]:
    workers = []
    for child, (ppid, _) in _processes().items():
        if ppid == parent and "spawn_main" in Path(f"/proc/{child}/cmdline").read_text(errors="replace"):
            workers.append(child)
    return workers


def served_bytes(home: Path) -> dict[int, int]:
    """Artifact bytes of the served format of credit@1 and credit@2, from the registry."""
    registry = open_registry(Settings(home=home))
    try:
        sizes = {}
        for number in (1, 2):
            version = registry.get(ModelRef("credit", version=number))
            role = "onnx" if version.serving_format == "onnx" else "native"
            artifact = version.artifact(role)
            assert artifact is not None
            sizes[number] = artifact.size
        return sizes
    finally:
        registry.close()
