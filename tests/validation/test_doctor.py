"""`modelport doctor`: every artifact of every version replayed in this environment; a production
version that drifts or fails gives a non-zero exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
from sqlalchemy import update

from modelport.app import open_registry
from modelport.registry.schema import model_versions
from modelport.settings import Settings


def _doctor(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MODELPORT_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "modelport.cli.main", "doctor", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _tamper(home: Path, number: int, *, golden: bool = False, environment: bool = False) -> None:
    registry = open_registry(Settings(home=home))
    try:
        version = registry.get(f"credit@{number}")
        values: dict[str, object] = {}
        if golden:
            record = dict(version.golden)
            outputs = dict(record["outputs"])
            outputs["probabilities"] = [list(reversed(row)) for row in outputs["probabilities"]]
            record["outputs"] = outputs
            values["golden"] = record
        if environment:
            recorded = dict(version.environment)
            recorded["packages"] = {**recorded["packages"], "scikit-learn": "1.7.2"}
            values["environment"] = recorded
        with registry.store.db.engine.begin() as conn:
            conn.execute(update(model_versions).where(model_versions.c.uuid == version.uuid).values(**values))
    finally:
        registry.close()


def test_doctor(tmp_path: Path, sklearn_model: object, data: pd.DataFrame) -> None:
    home = tmp_path / "home"
    registry = open_registry(Settings(home=home, equivalence_rows=300), create=True)
    try:
        registry.register(sklearn_model, name="credit", sample=data, target="label", alias="production")
        registry.register(sklearn_model, name="credit", sample=data, target="label", alias="staging")
    finally:
        registry.close()
    healthy = _doctor(home, "--json")
    assert healthy.returncode == 0, healthy.stderr
    rows = json.loads(healthy.stdout)["versions"]
    assert {(r["ref"], r["role"], r["verdict"]) for r in rows} == {
        ("credit@1", "onnx", "ok"),
        ("credit@1", "native", "ok"),
        ("credit@2", "onnx", "ok"),
        ("credit@2", "native", "ok"),
    }
    assert all(r["max_deviation"] < 1e-4 and r["recorded"] == "" for r in rows)

    _tamper(home, 2, golden=True, environment=True)  # staging drifts: reported, exit still 0
    staging = _doctor(home, "--json")
    assert staging.returncode == 0
    drifted = [r for r in json.loads(staging.stdout)["versions"] if r["ref"] == "credit@2"]
    assert {r["verdict"] for r in drifted} == {"drift"}
    assert all("scikit-learn 1.7.2 → " in r["recorded"] for r in drifted)

    _tamper(home, 1, golden=True)  # production drifts: exit 1, named
    failing = _doctor(home)
    assert failing.returncode == 1
    assert "credit@1" in failing.stderr and "drift" in failing.stdout and "Traceback" not in failing.stderr
    assert json.loads(_doctor(home, "--json").stdout)["failing_production"] == ["credit@1"]
    missing = _doctor(home, "nosuch")
    assert missing.returncode == 3 and "no model named" in missing.stderr
