"""A sample too small for trustworthy value ranges is warned about, with the share of normal rows its
ranges will flag and the sample size that brings it under 1 % (registry/registration.py sample_check):
the numbers against the order-statistics formula and against rows actually flagged, then a real
registration from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest

from modelport.registry.registration import FLAG_RATE_THRESHOLD, sample_check
from modelport.signature import Signature
from tests.conftest import FEATURES, make_data
from tests.conftest import invoke_cli as cli


def _checked(frame: pd.DataFrame) -> dict[str, object]:
    return sample_check(frame, Signature.infer_features(frame))


@pytest.mark.parametrize("rows", [20, 100, 600])
def test_continuous_features_follow_the_order_statistics(rows: int) -> None:
    # 6 continuous features: each range end is passed by 1 new value in n+1
    found = _checked(make_data(rows)[FEATURES])
    expected = 1 - (1 - 2 / (rows + 1)) ** len(FEATURES)
    assert found["expected_flag_rate"] == round(expected, 4)
    needed = found["rows_for_threshold"]
    assert isinstance(needed, int)
    assert 1 - (1 - 2 / (needed + 1)) ** len(FEATURES) <= FLAG_RATE_THRESHOLD
    assert 1 - (1 - 2 / needed) ** len(FEATURES) > FLAG_RATE_THRESHOLD  # the smallest such size
    assert f"at least {needed:,} rows" in str(found["warning"])


def test_the_expected_rate_is_what_new_rows_get() -> None:
    # Over many 20-row samples, the share of new rows outside the learned ranges averages the formula.
    rng = np.random.default_rng(7)
    flagged = []
    for _ in range(300):
        sample = pd.DataFrame(rng.normal(size=(20, 6)), columns=FEATURES)
        signature = Signature.infer_features(sample)
        low = np.array([f.minimum for f in signature])
        high = np.array([f.maximum for f in signature])
        new = rng.normal(size=(400, 6))
        flagged.append(float(((new < low) | (new > high)).any(axis=1).mean()))
    expected = _checked(pd.DataFrame(rng.normal(size=(20, 6)), columns=FEATURES))["expected_flag_rate"]
    assert expected == pytest.approx(0.4515, abs=1e-4)
    assert float(np.mean(flagged)) == pytest.approx(expected, abs=0.02)


def test_a_large_sample_and_features_that_cannot_leave_their_range_are_not_warned_about() -> None:
    assert "warning" not in _checked(make_data(5000)[FEATURES])
    rng = np.random.default_rng(0)
    discrete = pd.DataFrame(
        {
            "flag": rng.integers(0, 2, 30).astype(bool),  # a boolean's range is 0..1 whatever it saw
            "grade": rng.integers(1, 4, 30),  # 1, 2, 3, each seen often: no new value passes them
            "sector": rng.choice(["a", "b", "c"], 30),  # every category seen more than once
        }
    )
    assert _checked(discrete) == {"expected_flag_rate": 0.0, "flag_rate_threshold": FLAG_RATE_THRESHOLD}


def test_a_20_row_sample_registers_with_a_warning_on_stderr(tmp_path: Path, sklearn_model: object) -> None:
    home = tmp_path / "home"
    assert cli(home, "init").returncode == 0
    model, sample = tmp_path / "model.joblib", tmp_path / "sample.csv"
    joblib.dump(sklearn_model, model)
    make_data(20, seed=3).to_csv(sample, index=False)
    done = cli(
        home,
        "register",
        "credit",
        str(model),
        "--trust-pickle",
        "--sample",
        str(sample),
        "--target",
        "label",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    assert "warning: the sample's 20 rows give value ranges that flag about 45.1% of new rows" in done.stderr
    assert "a sample of at least 1,194 rows brings that under 1%" in done.stderr
    checked = json.loads(done.stdout)["lineage"]["sample"]  # the Python API's record has it too
    assert checked["rows"] == 20 and checked["expected_flag_rate"] == 0.4515
    assert checked["rows_for_threshold"] == 1194 and checked["warning"] in done.stderr.replace("\n", " ")
