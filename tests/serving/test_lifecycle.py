"""Drain on SIGTERM: readiness goes false first while requests are still served, then a clean exit."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pandas as pd

from tests.conftest import FEATURES
from tests.serving.conftest import start_server, stop_server


def test_sigterm_reports_not_ready_then_drains(served_home: Path, data: pd.DataFrame) -> None:
    server = start_server(served_home, env={"MODELPORT_DRAIN_SECONDS": "1.5"})
    body = {
        "inputs": [
            {"name": "input", "datatype": "FP64", "shape": [1, 6], "data": data[FEATURES].iloc[0].tolist()}
        ]
    }
    with httpx.Client(base_url=server.url, timeout=10) as http:
        assert http.get("/v2/health/ready").status_code == 200
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        ready = http.get("/v2/health/ready")
        assert ready.status_code == 503 and ready.json() == {"ready": False}
        assert http.post("/v2/models/credit/infer", json=body).status_code == 200  # still serving
    code = server.process.wait(timeout=30)
    assert code in (0, -signal.SIGTERM)


def test_requests_over_the_timeout_get_504_and_the_server_goes_on(
    served_home: Path, data: pd.DataFrame
) -> None:
    server = start_server(
        served_home, env={"MODELPORT_REQUEST_TIMEOUT_SECONDS": "0.000001"}, ready_check=False
    )
    body = {
        "inputs": [
            {"name": "input", "datatype": "FP64", "shape": [1, 6], "data": data[FEATURES].iloc[0].tolist()}
        ]
    }
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            for _ in range(3):
                response = http.post("/v2/models/credit/infer", json=body)
                assert response.status_code == 504
                assert "not answered within" in response.json()["error"]
        assert server.process.poll() is None
    finally:
        stop_server(server)
