"""Label lag in :func:`accuracy_report`: per version, the median and 90th percentile of the time from a
logged prediction to its label's arrival, and when the latest label came — read from a real prediction
log and the registry's feedback table (no server)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from modelport.app import open_registry
from modelport.monitoring.monitor import accuracy_report, logged
from modelport.monitoring.predictions import LogPolicy, PredictionLog
from modelport.registry.service import Registry
from modelport.runtimes.base import Prediction
from modelport.settings import Settings
from tests.conftest import FEATURES, until


@pytest.fixture
def registry(served_home: Path) -> Iterator[Registry]:
    opened = open_registry(Settings(home=served_home))
    try:
        yield opened
    finally:
        opened.close()


def _log(home: Path, version: int, request_id: str, rows: int) -> None:
    log = PredictionLog(home)
    batch = {name: np.full(rows, 0.5) for name in FEATURES}
    prediction = Prediction(
        labels=np.array(["c0"] * rows, dtype=object), probabilities=np.full((rows, 3), 1 / 3)
    )
    log.offer(
        LogPolicy(sample_rate=1.0),
        "credit",
        version,
        batch,
        prediction,
        request_id=request_id,
        key_id="k",
        latency_ms=0.1,
        flags={},
    )
    log.write(log.take())


def test_label_lag_per_version(served_home: Path, registry: Registry) -> None:
    _log(served_home, 1, "lag-1", 2)
    _log(served_home, 1, "lag-2", 1)
    _log(served_home, 2, "lag-3", 1)  # never labelled: v2 has no accuracy and no lag
    monitoring = registry.store.monitoring
    monitoring.add_feedback("credit", [("lag-1", 0, "c0"), ("lag-1", 1, "c1")], actor="local:test")
    first = monitoring.feedback_received("credit")[("lag-1", 0)]
    until(lambda: datetime.now(first.tzinfo) > first, interval=0.001)  # a later arrival, however fast
    monitoring.add_feedback("credit", [("lag-2", 0, "c0"), ("unlogged", 0, "c2")], actor="local:test")

    report = accuracy_report(served_home, registry, "credit")

    (entry,) = report["versions"]
    assert entry["version"] == 1 and entry["rows"] == 3 and entry["accuracy"] == pytest.approx(2 / 3)
    received = monitoring.feedback_received("credit")
    assert set(received) == {("lag-1", 0), ("lag-1", 1), ("lag-2", 0), ("unlogged", 0)}
    assert received[("lag-2", 0)] > received[("lag-1", 0)]
    columns = logged(served_home, "credit", 0, time.time() + 1, inputs=False)
    assert columns is not None
    lags = [
        received[(rid, int(row))].timestamp() - ts
        for rid, row, ts in zip(columns["request_id"], columns["row"], columns["ts"], strict=True)
        if rid != "lag-3"
    ]
    median, p90 = np.percentile(lags, [50, 90])
    lag = entry["label_lag"]
    assert lag["rows"] == 3
    assert lag["median_seconds"] == pytest.approx(median, abs=1e-6)
    assert lag["p90_seconds"] == pytest.approx(p90, abs=1e-6)
    assert 0 < lag["median_seconds"] <= lag["p90_seconds"] < 60
    assert lag["latest_label_at"] == received[("lag-2", 0)].isoformat()
    # the labels themselves read as before
    assert monitoring.feedback_labels("credit")[("lag-1", 1)] == "c1"
