"""Drain on SIGTERM: readiness goes false first while requests are still served, then a clean exit."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pandas as pd

from tests.conftest import FEATURES
from tests.serving.conftest import serve_in_process, start_server


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
        deadline = time.monotonic() + 5
        while (ready := http.get("/v2/health/ready")).status_code == 200:  # at once, give or take a signal
            assert time.monotonic() < deadline, "still ready 5 s after SIGTERM"
            time.sleep(0.02)
        assert ready.status_code == 503 and ready.json() == {"ready": False}
        assert http.post("/v2/models/credit/infer", json=body).status_code == 200  # still serving
    code = server.process.wait(timeout=30)
    assert code in (0, -signal.SIGTERM)


def test_requests_over_the_timeout_get_504_and_the_app_goes_on(served_home: Path, data: pd.DataFrame) -> None:
    body = {
        "inputs": [
            {"name": "input", "datatype": "FP64", "shape": [1, 6], "data": data[FEATURES].iloc[0].tolist()}
        ]
    }
    with serve_in_process(served_home, request_timeout_seconds=0.000001) as app, app.client() as http:
        for _ in range(3):
            response = http.post("/v2/models/credit/infer", json=body)
            assert response.status_code == 504
            assert "not answered within" in response.json()["error"]
        assert http.get("/v2/health/live").status_code == 200
