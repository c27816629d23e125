"""Prometheus metrics from a real `--workers 2` server: exact counts per model, version, alias and
outcome, summed over both workers; bounded labels; the route needs a key unless made public."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.serving.conftest import Server, free_port, start_server, stop_server

ROW = {
    "inputs": [
        {"name": "input", "datatype": "FP64", "shape": [1, 6], "data": [[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]]}
    ]
}
TWO_ROWS = {
    "inputs": [{"name": "input", "datatype": "FP64", "shape": [2, 6], "data": [[0.1] * 6, [0.2] * 6]}]
}


GRPC_PORT = free_port()


@pytest.fixture(scope="module")
def server(served_home: Path) -> Iterator[Server]:
    running = start_server(served_home, "--workers", "2", "--grpc-port", str(GRPC_PORT))
    yield running
    stop_server(running)


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def key(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def test_exact_counts_over_two_workers(server: Server) -> None:
    def post(path: str, body: object) -> int:
        # a fresh connection each time: the kernel spreads them over both workers
        return httpx.post(f"{server.url}{path}", json=body, timeout=30).status_code

    assert [post("/v2/models/credit/infer", ROW) for _ in range(30)] == [200] * 30
    assert [post("/v2/models/credit/versions/2/infer", TWO_ROWS) for _ in range(10)] == [200] * 10
    assert [post("/v2/models/credit/versions/staging/infer", ROW) for _ in range(7)] == [200] * 7
    assert [post("/v2/models/credit/infer", {"inputs": []}) for _ in range(5)] == [400] * 5
    assert [post(f"/v2/models/nosuch{i}/infer", ROW) for i in range(3)] == [404] * 3
    import numpy as np
    import tritonclient.grpc as triton

    with triton.InferenceServerClient(f"127.0.0.1:{GRPC_PORT}") as client:
        tensor = triton.InferInput("input", [1, 6], "FP64")
        tensor.set_data_from_numpy(np.zeros((1, 6)))
        for _ in range(4):
            client.infer("credit", [tensor], model_version="staging")
    time.sleep(0.6)  # each worker folds its counts into the shared metrics four times a second
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    requests = samples(text, "modelport_requests_total")
    assert requests[key(model="credit", version="1", alias="default", protocol="v2", outcome="ok")] == 30
    assert requests[key(model="credit", version="2", alias="", protocol="v2", outcome="ok")] == 10
    assert requests[key(model="credit", version="2", alias="staging", protocol="v2", outcome="ok")] == 7
    assert requests[key(model="credit", version="1", alias="default", protocol="v2", outcome="invalid")] == 5
    assert requests[key(model="", version="", alias="default", protocol="v2", outcome="not_found")] == 3
    assert requests[key(model="credit", version="2", alias="staging", protocol="grpc", outcome="ok")] == 4
    assert "nosuch0" not in text  # unknown names never become label values
    rows = samples(text, "modelport_rows_scored_total")
    assert rows[key(model="credit", version="1")] == 30
    assert rows[key(model="credit", version="2")] == 20 + 7 + 4
    latency = samples(text, "modelport_request_duration_seconds_count")
    assert latency[key(model="credit", version="1", protocol="v2")] == 35
    batches = samples(text, "modelport_batch_rows_sum")
    assert batches[key(model="credit", version="2")] == 31
    assert samples(text, "modelport_model_load_seconds_count")[key(model="credit", version="1")] >= 1
    assert samples(text, "modelport_loaded_models")[()] >= 2
    for name in {s for family in text_string_to_metric_families(text) for s in [family.name]}:
        assert name.startswith("modelport_"), name
