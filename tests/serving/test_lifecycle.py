"""Drain on SIGTERM: readiness goes false first while requests are still served, then a clean exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd

from tests.conftest import FEATURES
from tests.serving.conftest import free_port, serve_in_process, start_server


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


def test_serve_takes_its_address_and_workers_from_the_settings(served_home: Path) -> None:
    """A container or a Kubernetes ConfigMap configures `serve` through MODELPORT_* variables alone;
    an option on the command line still wins over them."""
    port, ignored = free_port(), free_port()
    environment = {
        **os.environ,
        "MODELPORT_HOME": str(served_home),
        "MODELPORT_DRAIN_SECONDS": "0",
        "MODELPORT_PORT": str(port),
        "MODELPORT_WORKERS": "2",
        "MODELPORT_INSECURE_DEV": "true",
    }
    exe = str(Path(sys.executable).with_name("modelport"))
    process = subprocess.Popen(
        [exe, "serve"], env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(timeout=1) as http:
            while True:
                assert process.poll() is None, "server exited during start-up"
                assert time.monotonic() < deadline, "not serving on MODELPORT_PORT within 60 s"
                try:
                    if http.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.05)
        assert process.stderr is not None
        banner = process.stderr.readline().decode()
        assert f"127.0.0.1:{port}" in banner and "(2 worker(s))" in banner, banner
    finally:
        process.terminate()
        process.communicate(timeout=30)  # reaps it and closes the pipe
    # the command line wins over the variables
    overridden = subprocess.run(
        [exe, "serve", "--port", str(ignored), "--host", "0.0.0.0"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert overridden.returncode != 0 and "127.0.0.1 only, not 0.0.0.0" in overridden.stderr
