"""Live alias routing on a real multi-worker server: moves from another process reach every worker,
new versions are warmed before they take traffic, broken versions never do, and SIGTERM drains."""

from __future__ import annotations

import shutil
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pandas as pd
import pytest

from modelport.app import open_registry
from modelport.errors import IntegrityFailure
from modelport.settings import Settings
from tests.conftest import FEATURES
from tests.serving.conftest import Server, registered_home, serve_in_process, start_server, stop_server


@pytest.fixture
def home(served_home: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "home"
    shutil.copytree(served_home, copy)
    return copy


def _body(data: pd.DataFrame) -> dict[str, object]:
    return {
        "inputs": [
            {"name": "input", "datatype": "FP64", "shape": [1, 6], "data": data[FEATURES].iloc[0].tolist()}
        ]
    }


def _load(
    server: Server, body: dict[str, object], seconds: float, stop: threading.Event, results: Counter[str]
) -> None:
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=server.url, timeout=30) as http:
        while time.monotonic() < deadline and not stop.is_set():
            try:
                response = http.post("/v2/models/credit/versions/production/infer", json=body)
            except httpx.TransportError as exc:
                results[f"transport:{type(exc).__name__}"] += 1
                continue
            if response.status_code != 200:
                results[f"status:{response.status_code}"] += 1
            else:
                results[f"version:{response.headers['x-model-version']}"] += 1


FLIP_EVERY = 0.5  # seconds: twice the routes' poll interval (0.25 s), so every flip reaches both workers
SECONDS = 6 * FLIP_EVERY  # six alias flips under load


def test_alias_flips_under_load_with_two_workers(home: Path, data: pd.DataFrame) -> None:
    server = start_server(home, "--workers", "2")
    registry = open_registry(Settings(home=home))
    try:
        stop, results = threading.Event(), Counter[str]()
        threads = [
            threading.Thread(target=_load, args=(server, _body(data), SECONDS, stop, results))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        target = 1
        started = time.monotonic()
        while time.monotonic() - started < SECONDS:
            time.sleep(FLIP_EVERY)  # the pace of the flips, under load all along
            target = 2 if target == 1 else 1
            registry.set_alias("credit", "production", target)
        for thread in threads:
            thread.join(timeout=60)
        total = sum(results.values())
        assert total / SECONDS >= 100, f"only {total} requests in {SECONDS:g} s"
        assert set(results) <= {"version:1", "version:2"}, results
        assert results["version:1"] > 0 and results["version:2"] > 0
    finally:
        registry.close()
        stop_server(server)


def test_alias_move_reaches_the_app_and_broken_versions_never_serve(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, data: pd.DataFrame, sklearn_model: object
) -> None:
    home = registered_home("releases", tmp_path / "home", tmp_path_factory, data, sklearn_model)  # v1-v3
    registry = open_registry(Settings(home=home))
    body = _body(data)
    try:
        with serve_in_process(home) as app, app.client() as http:
            assert http.post("/v2/models/credit/infer", json=body).headers["x-model-version"] == "1"
            registry.set_alias("credit", "production", 2)
            moved = time.monotonic()
            while http.post("/v2/models/credit/infer", json=body).headers["x-model-version"] != "2":
                assert time.monotonic() - moved < 5, "the alias move did not reach the app"
                time.sleep(0.02)
        # v3's ONNX blob is damaged after registration, while nothing serves
        broken = registry.get("credit@3")
        onnx = broken.artifact("onnx")
        assert onnx is not None
        path = registry.artifacts.path_for(onnx.digest)  # type: ignore[attr-defined]
        path.chmod(0o644)
        path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
        with pytest.raises(IntegrityFailure, match="does not match the recorded digest"):
            registry.set_alias("credit", "production", broken.number)  # refused by the registry
        with serve_in_process(home) as app, app.client() as http:
            assert http.post("/v2/models/credit/infer", json=body).headers["x-model-version"] == "2"
            # a writer that skips verification (an older client, a manual change) moves it anyway
            registry.set_alias("credit", "production", broken.number, verify=False)
            moved = time.monotonic()
            while True:  # until the app has seen the move and tried the version
                index = http.post("/v2/repository/index").json()
                if any("does not match the recorded digest" in row["reason"] for row in index):
                    break
                assert time.monotonic() - moved < 5, index
                assert http.post("/v2/models/credit/infer", json=body).headers["x-model-version"] == "2"
                time.sleep(0.02)
            for _ in range(20):
                response = http.post("/v2/models/credit/infer", json=body)
                assert response.status_code == 200 and response.headers["x-model-version"] == "2"
    finally:
        registry.close()


def test_sigterm_lets_every_accepted_request_finish(home: Path, data: pd.DataFrame) -> None:
    """Clients behave like a load balancer: they send while readiness says 200. The server keeps
    serving through the drain period, so every request sent is answered; none is dropped."""
    server = start_server(home, env={"MODELPORT_DRAIN_SECONDS": "1"})
    results: Counter[str] = Counter()
    failures: list[str] = []
    ready = threading.Event()
    ready.set()
    stop = threading.Event()

    def watch_readiness() -> None:
        while not stop.is_set():
            try:
                ok = httpx.get(f"{server.url}/v2/health/ready", timeout=5).status_code == 200
            except httpx.TransportError:
                ok = False
            if not ok:
                ready.clear()
                return
            time.sleep(0.05)

    def client() -> None:
        body = _body(data)
        with httpx.Client(base_url=server.url, timeout=30) as http:
            while not stop.is_set():
                if not ready.is_set():
                    time.sleep(0.01)
                    continue
                try:
                    response = http.post("/v2/models/credit/infer", json=body)
                except httpx.TransportError as exc:
                    failures.append(type(exc).__name__)
                    continue
                results[str(response.status_code)] += 1

    threads = [threading.Thread(target=client) for _ in range(4)] + [threading.Thread(target=watch_readiness)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while sum(results.values()) < 50:  # the clients are sending
        assert time.monotonic() < deadline and not failures, (results, failures)
        time.sleep(0.05)
    before = sum(results.values())
    server.process.send_signal(signal.SIGTERM)
    code = server.process.wait(timeout=60)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    # uvicorn drains, shuts down cleanly, then re-raises the signal it caught (the exit status says SIGTERM)
    assert code in (0, -signal.SIGTERM)
    assert failures == [], failures
    assert set(results) == {"200"} and sum(results.values()) > before > 0, results
