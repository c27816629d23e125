"""`modelport doctor`: every artifact of every version replayed in this environment; a production
version that drifts or fails gives a non-zero exit."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import update

from modelport.app import open_registry
from modelport.registry.schema import model_versions
from modelport.settings import Settings
from tests.conftest import invoke_cli
from tests.serving.conftest import registered_home


def _doctor(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return invoke_cli(home, "doctor", *args)


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


def test_doctor(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, sklearn_model: object, data: pd.DataFrame
) -> None:
    # credit v1 (production) and v2 (staging)
    home = registered_home("served", tmp_path / "home", tmp_path_factory, data, sklearn_model)
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

    _tamper(home, 2, golden=True, environment=True)  # staging drifts: an alias, so exit 1 too
    staging = _doctor(home, "--json")
    assert staging.returncode == 1 and json.loads(staging.stdout)["failing"] == ["credit@2"]
    drifted = [r for r in json.loads(staging.stdout)["versions"] if r["ref"] == "credit@2"]
    assert {r["verdict"] for r in drifted} == {"drift"}
    assert all("scikit-learn 1.7.2 → " in r["recorded"] for r in drifted)

    _tamper(home, 1, golden=True)  # production drifts: exit 1, named
    failing = _doctor(home)
    assert failing.returncode == 1
    assert "credit@1" in failing.stderr and "drift" in failing.stdout and "Traceback" not in failing.stderr
    assert json.loads(_doctor(home, "--json").stdout)["failing"] == ["credit@1", "credit@2"]
    missing = _doctor(home, "nosuch")
    assert missing.returncode == 3 and "no model named" in missing.stderr


def test_doctor_fails_for_any_alias_that_routes_to_a_failing_version(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, sklearn_model: object, data: pd.DataFrame
) -> None:
    """Issue 14: only an alias literally named `production` failed the run. Now every route counts —
    any alias, `latest`, a release's canary — and a version no name reaches is reported only."""
    from modelport.releases.manager import ReleaseManager

    # credit v1 (production), v2, v3 (latest)
    home = registered_home("releases", tmp_path / "home", tmp_path_factory, data, sklearn_model)
    _tamper(home, 2, golden=True)
    unrouted = _doctor(home, "--json")
    assert unrouted.returncode == 0, unrouted.stderr
    report = json.loads(unrouted.stdout)
    assert report["failing"] == []
    assert {
        (r["ref"], r["verdict"], tuple(r["routes"])) for r in report["versions"] if r["role"] == "onnx"
    } == {
        ("credit@1", "ok", ("production",)),
        ("credit@2", "drift", ()),
        ("credit@3", "ok", ("latest",)),
    }

    # an alias (or a release) moves only to a version that passes its golden cases: restore v2 (reversed
    # twice), point the route at it, then let it drift again as an upgrade would
    _tamper(home, 2, golden=True)
    assert invoke_cli(home, "alias", "set", "credit@2", "live").returncode == 0
    _tamper(home, 2, golden=True)
    live = _doctor(home)
    assert live.returncode == 1, live.stdout
    assert (
        "credit@2 (live)" in live.stderr and "credit@1" not in live.stderr and "Traceback" not in live.stderr
    )
    assert json.loads(_doctor(home, "--json").stdout)["failing"] == ["credit@2"]

    assert invoke_cli(home, "alias", "rm", "credit@live").returncode == 0
    _tamper(home, 2, golden=True)
    registry = open_registry(Settings(home=home))
    try:
        ReleaseManager(registry).start("credit", "production", actor="local:test", canary=2, weight=5)
    finally:
        registry.close()
    _tamper(home, 2, golden=True)
    canary = _doctor(home, "--json")
    assert canary.returncode == 1 and json.loads(canary.stdout)["failing"] == ["credit@2"]
    assert "credit@2 (production (canary))" in _doctor(home).stderr


def test_doctor_fix_remakes_a_drifting_twin_from_the_native_model(
    tmp_path: Path, sklearn_model: object, data: pd.DataFrame
) -> None:
    from sklearn.linear_model import LogisticRegression

    from modelport.registry.schema import artifacts
    from tests.conftest import FEATURES

    home = tmp_path / "home"
    registry = open_registry(Settings(home=home, equivalence_rows=300), create=True)
    try:
        good = registry.register(
            sklearn_model, name="credit", sample=data, target="label", alias="production"
        )
        other = LogisticRegression(C=0.01, max_iter=500).fit(data[FEATURES], data["label"])
        foreign = registry.register(other, name="other", sample=data, target="label")
        foreign_twin = foreign.artifact("onnx")
        assert foreign_twin is not None
        # The twin now computes something else (as an incompatible runtime upgrade might make it).
        version_id = (
            registry.store.db.engine.connect()
            .execute(model_versions.select().where(model_versions.c.uuid == good.uuid))
            .one()
            .id
        )
        with registry.store.db.engine.begin() as conn:
            conn.execute(
                update(artifacts)
                .where(artifacts.c.version_id == version_id, artifacts.c.role == "onnx")
                .values(digest=foreign_twin.digest, size=foreign_twin.size)
            )
    finally:
        registry.close()
    broken = _doctor(home, "credit", "--json")
    assert broken.returncode == 1
    assert {(r["role"], r["verdict"]) for r in json.loads(broken.stdout)["versions"]} == {
        ("onnx", "drift"),
        ("native", "ok"),
    }
    fixed = _doctor(home, "credit", "--fix", "--json")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    report = json.loads(fixed.stdout)
    assert report["fixed"][0]["ref"] == "credit@1" and report["fixed"][0]["outcome"].startswith("fixed")
    assert {r["verdict"] for r in report["versions"]} == {"ok"}
    registry = open_registry(Settings(home=home))
    try:
        version = registry.get("credit@production")
        (migration,) = version.lineage["migrations"]
        assert "re-converted" in migration["action"] and migration["environment"]["packages"]
        assert version.artifact("onnx").digest != foreign_twin.digest  # type: ignore[union-attr]
        assert [r.action for r in registry.store.audit_records(action="version.migrate")] == [
            "version.migrate"
        ]
        assert registry.store.verify_audit().ok
    finally:
        registry.close()
    assert _doctor(home, "credit").returncode == 0


def test_doctor_names_a_version_whose_blob_became_a_directory(
    tmp_path: Path, sklearn_model: object, data: pd.DataFrame
) -> None:
    """Attack from issue 19: a blob file replaced by a directory crashed doctor (IsADirectoryError)."""
    from sklearn.linear_model import LogisticRegression

    from tests.conftest import FEATURES

    home = tmp_path / "home"
    registry = open_registry(Settings(home=home, equivalence_rows=300), create=True)
    try:
        registry.register(sklearn_model, name="credit", sample=data, target="label", alias="production")
        other = LogisticRegression(C=0.01, max_iter=500).fit(data[FEATURES], data["label"])
        damaged = registry.register(other, name="other", sample=data, target="label")
        native = damaged.artifact("native")
        assert native is not None
        blob = registry.artifacts.path_for(native.digest)  # type: ignore[attr-defined]
    finally:
        registry.close()
    blob.unlink()
    blob.mkdir()
    result = _doctor(home, "--json")
    assert "Traceback" not in result.stderr and "IsADirectoryError" not in result.stderr, result.stderr
    rows = {(r["ref"], r["role"]): r for r in json.loads(result.stdout)["versions"]}
    assert rows[("other@1", "native")]["verdict"] == "fails"
    assert native.digest in rows[("other@1", "native")]["reason"]
    assert str(home) not in rows[("other@1", "native")]["reason"]
    assert {rows[key]["verdict"] for key in rows if key != ("other@1", "native")} == {"ok"}
    assert result.returncode == 0  # the production version is healthy
