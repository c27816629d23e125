"""Value-level checks against the signature, with the per-model flag/reject policy, through the app."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from modelport.app import open_registry
from modelport.errors import InvalidInput
from modelport.settings import Settings
from modelport.signature import Signature
from tests.conftest import FEATURES
from tests.serving.conftest import serve_in_process


def test_violations_are_found_per_feature_and_kind(served_home: Path, data: pd.DataFrame) -> None:
    registry = open_registry(Settings(home=served_home))
    try:
        signature = Signature.from_dict(registry.get("credit@1").signature)
    finally:
        registry.close()
    rows = data[FEATURES].head(4).copy()
    assert signature.violations(signature.batch(rows)) == {}
    rows.loc[rows.index[0], "f0"] = 1e6
    rows.loc[rows.index[1], "f0"] = 2e6
    rows.loc[rows.index[2], "f3"] = -1e6
    rows.loc[rows.index[3], "f5"] = float("nan")
    found = signature.violations(signature.batch(rows))
    assert found == {"f0": {"above_range": 2}, "f3": {"below_range": 1}, "f5": {"missing": 1}}
    assert "f0: above range in 2 row(s)" in Signature.describe_violations(found)


def test_flag_then_reject_policy(served_home: Path, tmp_path: Path, data: pd.DataFrame) -> None:
    home = tmp_path / "home"
    shutil.copytree(served_home, home)
    registry = open_registry(Settings(home=home))
    row = data[FEATURES].iloc[0].tolist()
    row[2] = 1e6  # far above anything in the sample
    body = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 6], "data": row}]}
    try:
        with serve_in_process(home) as app, app.client() as http:
            flagged = http.post("/v2/models/credit/infer", json=body)
            assert flagged.status_code == 200
            assert flagged.json()["parameters"]["flags"] == {"f2": {"above_range": 1}}
            assert flagged.json()["parameters"]["flag_count"] == 1
            registry.set_policy("credit", "reject")
            changed = time.monotonic()
            while (response := http.post("/v2/models/credit/infer", json=body)).status_code == 200:
                assert time.monotonic() - changed < 5, "the policy change did not reach the server"
                time.sleep(0.05)
            assert response.status_code == 400
            assert "f2: above range in 1 row(s)" in response.json()["error"]
            clean = {
                "inputs": [
                    {
                        "name": "input",
                        "datatype": "FP64",
                        "shape": [1, 6],
                        "data": data[FEATURES].iloc[0].tolist(),
                    }
                ]
            }
            ok = http.post("/v2/models/credit/infer", json=clean)
            assert ok.status_code == 200 and "flags" not in ok.json()["parameters"]
            stats = http.get("/v2/models/credit/stats").json()["model_stats"][0]
            assert stats["flagged_requests"] >= 1 and stats["rejected_requests"] >= 1
        with pytest.raises(InvalidInput, match="must be one of flag, reject"):
            registry.set_policy("credit", "ignore")
        assert registry.model("credit").on_violation == "reject"
    finally:
        registry.close()
