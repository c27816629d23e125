"""Structured JSON logs from a real keyed server: one line per request with the request id (echoed),
key id, model, version, status and latency; never a key; probes not logged."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from modelport.app import open_registry
from modelport.security.store import KeyStore
from modelport.settings import Settings
from tests.serving.conftest import start_server, stop_server

ROW = {
    "inputs": [
        {"name": "input", "datatype": "FP64", "shape": [1, 6], "data": [[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]]}
    ]
}


def test_request_logs(served_home: Path, tmp_path: Path) -> None:
    registry = open_registry(Settings(home=served_home))
    try:
        created = KeyStore(registry.store).create(name="logs", role="consumer", actor="local:test")
    finally:
        registry.close()
    assert created is not None
    record, token = created
    log = tmp_path / "server.log"
    server = start_server(served_home, insecure_dev=False, log_file=log)
    try:
        headers = {"Authorization": f"Bearer {token}"}
        traced = httpx.post(
            f"{server.url}/v2/models/credit/infer", json=ROW, headers={**headers, "X-Request-ID": "trace-42"}
        )
        assert traced.status_code == 200 and traced.headers["x-request-id"] == "trace-42"
        fresh = httpx.post(f"{server.url}/v2/models/credit/infer", json=ROW, headers=headers)
        made = fresh.headers["x-request-id"]
        assert len(made) == 16 and made != "trace-42"
        hostile = httpx.post(
            f"{server.url}/v2/models/credit/infer", json=ROW, headers={**headers, "X-Request-ID": "x" * 500}
        )
        assert len(hostile.headers["x-request-id"]) == 16
        assert httpx.post(f"{server.url}/v2/models/credit/infer", json=ROW).status_code == 401
        for _ in range(5):
            httpx.get(f"{server.url}/v2/health/ready")
        time.sleep(0.5)
    finally:
        stop_server(server)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("event") == "request"]
    by_id = {line["request_id"]: line for line in requests}
    first = by_id["trace-42"]
    assert first["key_id"] == record.id and first["model"] == "credit" and first["version"] == 1
    assert first["status"] == 200 and first["latency_ms"] > 0 and first["rows"] == 1
    assert by_id[made]["status"] == 200
    assert any(line["status"] == 401 and "key_id" not in line for line in requests)
    assert not any(line["path"].startswith("/v2/health") for line in requests)
    assert len(requests) == 4
    assert token.split("_", 2)[2] not in log.read_text()
