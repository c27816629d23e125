"""The prediction log end to end: a policy set by the CLI reaches the server, sampled requests land in
Parquet segments with redaction and pseudonymisation applied, `modelport predictions` reads them, and
`modelport privacy erase` removes exactly one subject's records (audited). A full queue drops, never waits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from modelport.app import open_registry
from modelport.monitoring.predictions import LogPolicy, PredictionLog, query
from modelport.runtimes.base import Prediction
from modelport.settings import Settings
from tests.conftest import invoke_cli as cli
from tests.serving.conftest import serve_in_process


def test_prediction_log(served_home: Path) -> None:
    bad = cli(served_home, "log-policy", "credit", "--sample", "1", "--redact", "nosuch")
    assert bad.returncode == 2 and "not features of the model" in bad.stderr
    assert cli(served_home, "log-policy", "credit", "--sample", "2").returncode == 2
    # a policy can be changed, not only set once (the old one goes into the audit record)
    assert cli(served_home, "log-policy", "credit", "--sample", "0.5").returncode == 0
    done = cli(
        served_home,
        "log-policy",
        "credit",
        "--sample",
        "1",
        "--redact",
        "f1",
        "--pseudonymise",
        "f2",
        "--subject",
        "f0",
    )
    assert done.returncode == 0, done.stderr
    # a worker writes what it holds at shutdown (else every 10 s): leaving the block shuts the app down
    with serve_in_process(served_home) as app, app.client() as http:
        for i in range(40):
            subject = 1.0 if i % 2 else 2.0
            row = [subject, 0.5, 0.25 + i, 0.1, 0.2, 0.3]
            body = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 6], "data": [row]}]}
            response = http.post("/v2/models/credit/infer", json=body, headers={"X-Request-ID": f"req-{i}"})
            assert response.status_code == 200
    listed = cli(served_home, "predictions", "credit", "--json", "--limit", "1000")
    assert listed.returncode == 0, listed.stderr
    records = json.loads(listed.stdout)
    assert len(records) == 40 and {r["request_id"] for r in records} == {f"req-{i}" for i in range(40)}
    first = next(r for r in records if r["request_id"] == "req-3")
    assert "f1" not in first["inputs"]  # redacted: never written
    assert first["inputs"]["f0"] == 1.0 and first["inputs"]["f2"] != 3.25 and len(first["inputs"]["f2"]) == 32
    assert first["version"] == 1 and len(first["outputs"]) == 3 and first["key_id"] == "insecure-dev"
    segments = list((served_home / "predictions" / "model=credit").glob("date=*/*.parquet"))
    assert segments and not list((served_home / "predictions").rglob("*.tmp"))

    erased = cli(served_home, "privacy", "erase", "--subject", "1.0")
    assert erased.returncode == 0 and "erased 20 record" in erased.stdout
    left = json.loads(cli(served_home, "predictions", "credit", "--json", "--limit", "1000").stdout)
    assert len(left) == 20 and all(r["inputs"]["f0"] == 2.0 for r in left)
    registry = open_registry(Settings(home=served_home))
    try:
        (record,) = registry.store.audit_records(action="privacy.erase")
        assert record.after == {"model": None, "records_removed": 20}
        assert "1.0" not in record.target  # the subject id itself is not written to the audit log
        assert [r.action for r in registry.store.audit_records(action="log_policy.set")] == [
            "log_policy.set"
        ] * 2
    finally:
        registry.close()
    assert cli(served_home, "privacy", "erase", "--subject", "1.0", "--model", "nosuch").returncode == 3


def test_a_full_queue_drops_and_counts(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, capacity=2)
    policy = LogPolicy(sample_rate=1.0)
    batch = {"x": np.array([1.0])}
    prediction = Prediction(labels=np.array(["a"], dtype=object), probabilities=np.array([[1.0]]))
    for _ in range(5):
        log.offer(policy, "m", 1, batch, prediction, request_id="r", key_id="k", latency_ms=0.1, flags={})
    (taken,) = log.take()
    assert len(taken[2].ts) == 2 and log.dropped == 3
    unsampled = LogPolicy(sample_rate=0.0)
    log.offer(unsampled, "m", 1, batch, prediction, request_id="r", key_id="k", latency_ms=0.1, flags={})
    assert log.take() == []


def _offer(log: PredictionLog, policy: LogPolicy, request_id: str, batch: dict[str, np.ndarray]) -> None:
    rows = len(next(iter(batch.values())))
    prediction = Prediction(labels=np.array(["a"] * rows, dtype=object), probabilities=np.ones((rows, 2)))
    log.offer(policy, "m", 1, batch, prediction, request_id=request_id, key_id="k", latency_ms=0.1, flags={})


def test_nothing_sampled_is_lost(tmp_path: Path) -> None:
    """A policy replaced (any registry change brings new policy objects) still writes what was gathered
    under it; a request unlike the earlier ones of its version is dropped and counted, never raised."""
    log = PredictionLog(tmp_path)
    first, second = LogPolicy(sample_rate=1.0), LogPolicy(sample_rate=1.0, redact=("y",))
    _offer(log, first, "r1", {"x": np.array([1.0, 2.0]), "y": np.array([3.0, 4.0])})
    _offer(log, second, "r2", {"x": np.array([5.0]), "y": np.array([6.0])})
    _offer(log, second, "r3", {"x": np.array([7.0])})  # a feature missing
    _offer(log, second, "r4", {"x": np.array(["text"], dtype=object), "y": np.array([8.0])})  # widened
    assert log.dropped == 1
    assert log.write(log.take()) == 4
    records = query(tmp_path, "m")
    assert [(r["request_id"], r["row"], r["inputs"]) for r in records] == [
        ("r1", 0, {"x": 1.0, "y": 3.0}),
        ("r1", 1, {"x": 2.0, "y": 4.0}),
        ("r2", 0, {"x": "5.0"}),  # a text value came later: the segment's column is text, y redacted
        ("r4", 0, {"x": "text"}),
    ]
    assert records[0]["label"] == "a" and records[0]["outputs"] == [1.0, 1.0]


def test_segments_are_written_without_pandas(tmp_path: Path) -> None:
    """The serving process writes its segments without pyarrow (~60 MB in every worker) and without
    pandas (which `pa.array` would import: half a second, ~80 MB); the first reader compacts the spool
    file into a Parquet segment, and nothing else is left behind."""
    script = f"""
import sys
from pathlib import Path
import numpy as np
from modelport.monitoring.predictions import LogPolicy, PredictionLog
from modelport.runtimes.base import Prediction
log = PredictionLog(Path({str(tmp_path)!r}))
log.prepare()
policy = LogPolicy(1.0, pseudonymise=("t",), subject="t")
batch = {{"x": np.array([1.0]), "t": np.array(["a"], dtype=object)}}
prediction = Prediction(labels=np.array([1]), probabilities=np.ones((1, 2)))
log.offer(policy, "m", 1, batch, prediction, request_id="r", key_id="k", latency_ms=1.0, flags={{}})
assert log.write(log.take()) == 1
assert "pandas" not in sys.modules and "pyarrow" not in sys.modules
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    (spooled,) = (tmp_path / "predictions").rglob("*.spool")
    assert "a" not in spooled.read_bytes().decode("latin-1").split("\x00")  # pseudonymised on disk
    (record,) = query(tmp_path, "m")
    assert record["inputs"]["x"] == 1.0 and len(record["inputs"]["t"]) == 32 and record["subject"]
    segments = [p.name for p in (tmp_path / "predictions").rglob("*") if p.is_file()]
    assert segments == [spooled.with_suffix(".parquet").name]
    assert query(tmp_path, "m") == [record]  # compacting twice changes nothing
