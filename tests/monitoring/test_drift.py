"""Drift and live accuracy end to end, with the example credit-rating model.

The model is trained and registered here (with its target, so the reference profile carries the
reference accuracy); a real `--workers 2` server logs every request, and its monitor publishes PSI/KS
gauges on /metrics. Traffic from the training distribution drifts nowhere; the same traffic with
leverage doubled drifts on leverage alone, and the shipped alert rule's expression, evaluated by
promtool on the scraped values, fires for exactly that feature. Feedback for 1,000 logged rows (ten
requests of 100) gives the accuracy an offline computation on the same rows gives.

One server for the module: the feedback test's labels are for its own requests only.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

import modelport
from modelport.app import open_registry
from modelport.settings import Settings
from tests.conftest import invoke_cli as cli
from tests.serving.conftest import Server, start_server, stop_server

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples" / "credit_rating"))
from generate import FEATURES, make_dataset  # noqa: E402
from train import build_pipeline  # noqa: E402

MODEL = "credit-rating"
WINDOW = 6  # seconds: the drift window of the server under test (> the monitor's lag, ~1-3 s)


@dataclass
class Trained:
    home: Path
    model: Any


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    home = tmp_path_factory.mktemp("drift-home")
    data = make_dataset(3000, seed=7)
    model = build_pipeline(n_estimators=12).fit(data[FEATURES], data["rating"])
    settings = Settings(home=home)
    open_registry(settings, create=True).close()
    modelport.register(model, name=MODEL, sample=data, target="rating", alias="production", settings=settings)
    assert cli(home, "log-policy", MODEL, "--sample", "1").returncode == 0
    return Trained(home, model)


@pytest.fixture(scope="module")
def server(trained: Trained) -> Iterator[Server]:
    running = start_server(
        trained.home,
        "--workers",
        "2",
        env={
            "MODELPORT_MONITOR_INTERVAL": "0.5",
            "MODELPORT_PREDICTION_LOG_FLUSH_SECONDS": "0.3",
            "MODELPORT_DRIFT_WINDOW_SECONDS": str(WINDOW),
        },
    )
    try:
        yield running
    finally:
        stop_server(running)


def _send(client: httpx.Client, url: str, rows: pd.DataFrame, request_id: str) -> dict[str, Any]:
    matrix = rows[FEATURES].to_numpy(dtype=np.float64)
    body = {
        "inputs": [
            {"name": "input", "datatype": "FP64", "shape": list(matrix.shape), "data": matrix.tolist()}
        ]
    }
    response = client.post(f"{url}/v2/models/{MODEL}/infer", json=body, headers={"X-Request-ID": request_id})
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == request_id
    return dict(response.json())


def _gauges(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    text = httpx.get(f"{url}/metrics").text
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def _wait_for(
    url: str, ready: Any, timeout: float = 45.0
) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    deadline = time.monotonic() + timeout
    while True:
        gauges = _gauges(url)
        if ready(gauges):
            return gauges
        assert time.monotonic() < deadline, f"the monitor did not publish in time: {sorted(gauges)}"
        time.sleep(0.3)


def _rows_in_window(expected: int, sent: float) -> Any:
    """Ready when an evaluation that started after ``sent`` (Unix time) has published: one that began
    earlier may still publish the previous traffic's window, with the same row count."""

    def ready(gauges: dict[str, dict[tuple[tuple[str, str], ...], float]]) -> bool:
        rows = gauges.get("modelport_drift_window_rows", {})
        (started,) = gauges.get("modelport_monitor_last_run_timestamp_seconds", {(): 0.0}).values()
        return started >= sent and rows.get((("model", MODEL), ("version", "1"))) == expected

    return ready


def _by_feature(gauges: dict[str, Any], name: str) -> dict[str, float]:
    return {dict(labels)["feature"]: value for labels, value in gauges.get(name, {}).items()}


def test_profile_is_stored_at_registration(trained: Trained) -> None:
    registry = open_registry(Settings(home=trained.home))
    try:
        (profile,) = registry.store.monitoring.profiles(MODEL).values()
    finally:
        registry.close()
    assert set(profile["features"]) == set(FEATURES) and profile["rows"] == 3000
    leverage = profile["features"]["leverage"]
    assert len(leverage["shares"]) == len(leverage["edges"]) + 1 == 10 and len(leverage["quantiles"]) == 201
    assert abs(sum(leverage["shares"]) - 1.0) < 1e-9
    assert set(profile["prediction"]["shares"]) <= {"AAA", "AA", "A", "BBB", "BB", "B", "CCC", "D"}
    data = make_dataset(3000, seed=7)
    assert profile["accuracy"] == pytest.approx(
        float(np.mean(trained.model.predict(data[FEATURES]) == data["rating"]))
    )


def test_shifted_leverage_drifts_alone_and_the_alert_fires(
    trained: Trained, server: Server, tmp_path: Path
) -> None:
    calm = make_dataset(2000, seed=21)
    with httpx.Client() as client:
        for i in range(10):
            _send(client, server.url, calm.iloc[i * 200 : (i + 1) * 200], f"calm-{i}")
    calm_sent = time.time()  # every calm row is logged with the time its request was answered
    calm_gauges = _wait_for(server.url, _rows_in_window(2000, calm_sent))
    calm_psi = _by_feature(calm_gauges, "modelport_feature_drift_psi")
    assert set(calm_psi) == set(FEATURES)
    assert max(calm_psi.values()) < 0.1, calm_psi
    assert set(_by_feature(calm_gauges, "modelport_feature_drifting").values()) == {0.0}
    assert set(_by_feature(calm_gauges, "modelport_feature_drift_ks")) == set(FEATURES)
    assert _promtool_alert_series(calm_gauges, "ModelportFeatureDrift", tmp_path) == []

    # While the calm traffic leaves the window: the import (a second or two) of the charts drawn below.
    import matplotlib.pyplot  # noqa: F401

    time.sleep(max(0.0, calm_sent + WINDOW - time.time()))  # the calm traffic leaves the window
    shifted = make_dataset(2000, seed=22)
    shifted["leverage"] = shifted["leverage"] * 2
    with httpx.Client() as client:
        for i in range(10):
            _send(client, server.url, shifted.iloc[i * 200 : (i + 1) * 200], f"shifted-{i}")
    gauges = _wait_for(server.url, _rows_in_window(2000, time.time()))
    psi = _by_feature(gauges, "modelport_feature_drift_psi")
    drifting = {f for f, v in _by_feature(gauges, "modelport_feature_drifting").items() if v == 1.0}
    assert drifting == {"leverage"}, psi
    assert psi["leverage"] >= 0.2 and max(v for f, v in psi.items() if f != "leverage") < 0.1
    assert _by_feature(gauges, "modelport_feature_drift_ks")["leverage"] > 0.3

    # The shipped alert rule's expression, evaluated by promtool on the scraped values.
    fired = _promtool_alert_series(gauges, "ModelportFeatureDrift", tmp_path)
    assert [(a["alertname"], a["feature"], a["version"]) for a in fired] == [
        ("ModelportFeatureDrift", "leverage", "1")
    ], fired

    # The evaluations ran in a child process: no serving process has loaded pandas (~80 MB).
    assert _loaded_pandas(server.process.pid) == []

    # The CLI sees the same and draws it.
    chart = tmp_path / "drift.png"
    page = tmp_path / "drift.html"
    shown = cli(
        trained.home, "drift", MODEL, "--window", "1h", "--json", "--png", str(chart), "--html", str(page)
    )
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["versions"][0]["windows"][0]["rows"] == 4000  # both phases within the hour
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "data:image/png;base64," in page.read_text()
    strict = cli(trained.home, "drift", MODEL, "--window", f"{WINDOW * 4}s", "--fail-on-drift")
    assert strict.returncode == 7 and "leverage" in strict.stdout


def _loaded_pandas(root: int) -> list[int]:
    """The processes under ``root`` (itself included) that have pandas' compiled modules mapped."""
    pids, found = [root], []
    while pids:
        pid = pids.pop()
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            maps = Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            continue  # it has just exited
        pids += [int(child) for child in children]
        if "/pandas/_libs/" in maps:
            found.append(pid)
    return found


def _promtool_alert_series(gauges: dict[str, Any], alert: str, tmp_path: Path) -> list[dict[str, str]]:
    """The alerts the shipped rule raises when the scraped gauges hold for half an hour, as promtool
    evaluates them: a rule test that expects none, whose failure lists the alerts that did fire."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make test` installs Debian's prometheus package"
    series = []
    for name in (
        "modelport_feature_drift_psi",
        "modelport_feature_drifting",
        "modelport_drift_psi_threshold",
    ):
        for labels, value in gauges.get(name, {}).items():
            selector = ",".join(f'{k}="{v}"' for k, v in labels)
            series.append({"series": f"{name}{{{selector}}}", "values": f"{value}x40"})
    test_file = tmp_path / "drift.test.yml"
    test_file.write_text(
        yaml.safe_dump(
            {
                "rule_files": [str(ROOT / "deploy" / "prometheus" / "alerts.yml")],
                "evaluation_interval": "1m",
                "tests": [
                    {
                        "interval": "1m",
                        "input_series": series,
                        "alert_rule_test": [{"alertname": alert, "eval_time": "30m", "exp_alerts": []}],
                    }
                ],
            }
        )
    )
    result = subprocess.run(
        [promtool, "test", "rules", str(test_file)], capture_output=True, text=True, timeout=60
    )
    output = result.stdout + result.stderr
    if result.returncode == 0:
        return []
    assert "got:" in output, output  # a failure of the test itself, not alerts that fired
    got = output[output.index("got:") :]
    return [
        dict(re.findall(r'(\w+)="([^"]*)"', labels)) for labels in re.findall(r"[Ll]abels:\{([^}]*)\}", got)
    ]


def test_feedback_gives_the_offline_accuracy(trained: Trained, server: Server) -> None:
    rows = make_dataset(1000, seed=31)
    with httpx.Client() as client:
        for i in range(10):  # feedback names each row by its request and its place in it
            _send(client, server.url, rows.iloc[i * 100 : (i + 1) * 100], f"fb-{i}")
        labels = [
            {"request_id": f"fb-{i // 100}", "row": i % 100, "label": rows["rating"].iloc[i]}
            for i in range(1000)
        ]
        stored = client.post(f"{server.url}/api/v1/feedback", json={"model": MODEL, "labels": labels})
        assert stored.status_code == 200 and stored.json() == {"model": MODEL, "stored": 1000}
    offline = float(np.mean(trained.model.predict(rows[FEATURES]) == rows["rating"].to_numpy()))

    def ready(gauges: dict[str, Any]) -> bool:
        labelled = gauges.get("modelport_live_labelled_rows", {})
        return bool(labelled.get((("model", MODEL), ("version", "1"))) == 1000)

    gauges = _wait_for(server.url, ready)
    live = gauges["modelport_live_accuracy"][(("model", MODEL), ("version", "1"))]
    assert live == pytest.approx(offline, abs=1e-12)
    reference = gauges["modelport_reference_accuracy"][(("model", MODEL), ("version", "1"))]
    assert 0.3 < reference <= 1.0
    from sklearn.metrics import log_loss

    offline_loss = log_loss(
        rows["rating"], trained.model.predict_proba(rows[FEATURES]), labels=trained.model.classes_
    )
    assert gauges["modelport_live_log_loss"][(("model", MODEL), ("version", "1"))] == pytest.approx(
        offline_loss, rel=1e-3
    )
    shown = cli(trained.home, "drift", MODEL, "--json")
    report = json.loads(shown.stdout)
    accuracy = report["accuracy"]["versions"][0]
    assert accuracy["rows"] == 1000 and accuracy["accuracy"] == pytest.approx(offline, abs=1e-12)
    window = report["versions"][0]["windows"][-1]["accuracy"]  # the same rows, seen per drift window
    assert window["rows"] == 1000 and window["accuracy"] == pytest.approx(offline, abs=1e-12)
