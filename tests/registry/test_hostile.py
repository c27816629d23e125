"""Hostile and malformed input: refused with a precise error, nothing executed, nothing left behind."""

from __future__ import annotations

import builtins
import threading
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
import pytest
import skops.io
from onnx import TensorProto, helper
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sqlalchemy import text

from modelport.errors import (
    Conflict,
    InputMismatch,
    InvalidInput,
    InvalidName,
    SampleMismatch,
    StorageFailure,
    UnsafeFormat,
)
from modelport.registry.artifacts import LocalArtifactStore, sha256_bytes
from modelport.registry.database import Database
from modelport.registry.service import Registry
from tests.conftest import FEATURES


def _blobs(registry: Registry) -> list[Path]:
    root = registry.settings.home / "artifacts"
    return [p for p in (root / "blobs").rglob("*") if p.is_file()]


def _code_running_pipeline(marker: Path) -> tuple[Pipeline, pd.DataFrame]:
    """A pipeline whose predict runs Python code — the attack a skops trust list must stop."""
    frame = pd.DataFrame(np.random.default_rng(0).random((20, 2)), columns=["a", "b"])
    payload = f"import pathlib; pathlib.Path({str(marker)!r}).write_text('code ran')"
    steps: list[tuple[str, Any]] = [
        ("fill", FunctionTransformer(np.full_like, kw_args={"fill_value": payload, "dtype": object})),
        ("flat", FunctionTransformer(np.ravel)),
        ("pick", FunctionTransformer(builtins.min)),
        ("run", FunctionTransformer(builtins.exec)),
        ("model", LinearRegression()),
    ]
    for _, step in steps[:-1]:
        step.fit(frame)
    steps[-1][1].fit(frame.to_numpy(), frame.sum(axis=1))
    return Pipeline(steps), frame


def test_skops_file_that_would_run_code_is_refused(tmp_path: Path, sqlite_registry: Registry) -> None:
    marker = tmp_path / "pwned"
    pipeline, frame = _code_running_pipeline(marker)
    with pytest.raises(Exception):
        pipeline.predict(frame)
    assert marker.exists()
    marker.unlink()
    skops.io.dump(pipeline, tmp_path / "evil.skops")
    with pytest.raises(UnsafeFormat, match=r"builtins\.exec"):
        sqlite_registry.register(name="evil", path=tmp_path / "evil.skops", sample=frame)
    with pytest.raises(UnsafeFormat, match=r"numpy\.full_like"):
        sqlite_registry.register(pipeline, name="evil", sample=frame)
    assert not marker.exists()
    assert sqlite_registry.models() == [] and _blobs(sqlite_registry) == []


def test_onnx_with_external_data_is_refused(tmp_path: Path, sqlite_registry: Registry) -> None:
    weights = helper.make_tensor("W", TensorProto.FLOAT, [2], vals=[0.0, 0.0])
    weights.ClearField("float_data")
    weights.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../../etc/passwd"), ("offset", "0"), ("length", "8")):
        entry = weights.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "W"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
        [weights],
    )
    path = tmp_path / "ext.onnx"
    path.write_bytes(
        helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8
        ).SerializeToString()
    )
    sample = pd.DataFrame(np.zeros((20, 2)), columns=["a", "b"])
    with pytest.raises(UnsafeFormat, match="external file"):
        sqlite_registry.register(name="ext", path=path, sample=sample)


def test_onnx_returning_the_wrong_number_of_rows_is_refused(
    tmp_path: Path, sqlite_registry: Registry
) -> None:
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])],
        [helper.make_tensor("shape", TensorProto.INT64, [1], [-1])],
    )
    path = tmp_path / "flat.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    sample = pd.DataFrame(np.ones((20, 2)), columns=["a", "b"])
    with pytest.raises(InvalidInput, match="returns 40 result row"):
        sqlite_registry.register(name="flat", path=path, sample=sample)


def test_failed_commit_leaves_no_blobs(
    sqlite_registry: Registry, sklearn_model: object, data: pd.DataFrame
) -> None:
    """A real database failure at commit time: a trigger aborts the version insert."""
    with sqlite_registry.store.db.engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TRIGGER refuse BEFORE INSERT ON model_versions "
                "BEGIN SELECT RAISE(ABORT, 'refused by trigger'); END"
            )
        )
    with pytest.raises((Conflict, StorageFailure), match="refused by trigger"):
        sqlite_registry.register(sklearn_model, name="m", sample=data, target="label")
    assert _blobs(sqlite_registry) == []
    assert list((sqlite_registry.settings.home / "artifacts" / "staging").glob("*")) == []


def test_corrupt_blob_is_repaired_when_the_same_content_is_registered_again(
    sqlite_registry: Registry, sklearn_model: object, data: pd.DataFrame
) -> None:
    first = sqlite_registry.register(sklearn_model, name="m", sample=data, target="label")
    onnx_artifact = first.artifact("onnx")
    assert onnx_artifact is not None
    path = sqlite_registry.artifacts.path_for(onnx_artifact.digest)  # type: ignore[attr-defined]
    path.chmod(0o644)
    path.write_bytes(b"corrupted")
    second = sqlite_registry.register(sklearn_model, name="m", sample=data, target="label")
    assert second.artifact("onnx") == onnx_artifact
    assert len(sqlite_registry.predict("m@2", data[FEATURES].head(2))) == 2
    assert len(sqlite_registry.predict("m@1", data[FEATURES].head(2))) == 2


def test_recovery_racing_new_sessions_never_deletes_a_live_blob(tmp_path: Path) -> None:
    """Sessions keep putting one shared blob while recovery keeps finding a dead journal that lists
    it; no session may ever see its blob vanish before it closes."""
    store = LocalArtifactStore(tmp_path / "a")
    shared = b"shared"
    digest = sha256_bytes(shared)
    lost: list[int] = []
    stop = threading.Event()

    def sessions(worker: int) -> None:
        for i in range(150):
            with store.staging() as staging:
                staging.put(shared)
                staging.put(f"{worker}-{i}".encode())
                if not store.exists(digest):
                    lost.append(i)

    def recoverer() -> None:
        while not stop.is_set():
            (store.staging_dir / "dead.journal").write_text(digest + "\n")
            store.recover(set)

    store.staging_dir.mkdir(parents=True, exist_ok=True)
    threads = [threading.Thread(target=sessions, args=(w,)) for w in range(3)]
    cleaner = threading.Thread(target=recoverer)
    cleaner.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    stop.set()
    cleaner.join(timeout=30)
    assert lost == []


def test_class_names_only_for_models_that_lack_them(
    sqlite_registry: Registry, sklearn_model: object, data: pd.DataFrame
) -> None:
    with pytest.raises(InvalidInput, match="already names its classes"):
        sqlite_registry.register(
            sklearn_model, name="m", sample=data, target="label", classes=["a", "b", "c"]
        )
    import xgboost as xgb

    codes = data["label"].map({"c0": 0, "c1": 1, "c2": 2})
    booster = xgb.XGBClassifier(n_estimators=5, n_jobs=1).fit(data[FEATURES], codes).get_booster()
    for bad, message in (
        (["a", "a", "b"], "unique"),
        (["a", "", "b"], "non-empty"),
        (["a", "b"], "3 classes"),
    ):
        with pytest.raises(InvalidInput, match=message):
            sqlite_registry.register(booster, name="x", sample=data, target="label", classes=bad)
    version = sqlite_registry.register(
        booster, name="x", sample=data, target="label", classes=["lo", "mid", "hi"]
    )
    assert version.signature["outputs"]["classes"] == ["lo", "mid", "hi"]
    assert set(sqlite_registry.predict("x", data[FEATURES].head(20))["label"]) <= {"lo", "mid", "hi"}


def test_values_the_model_cannot_score_are_refused(
    sqlite_registry: Registry, sklearn_model: object, data: pd.DataFrame
) -> None:
    sqlite_registry.register(sklearn_model, name="m", sample=data, target="label")
    rows = data[FEATURES].head(3).copy()
    holey = rows.copy()
    holey.loc[holey.index[1], "f2"] = np.nan
    with pytest.raises(InputMismatch, match=r"row\(s\) 1: the model cannot handle missing values in f2"):
        sqlite_registry.predict("m", holey)
    with pytest.raises(InputMismatch, match="missing values in f2"):
        sqlite_registry.load("m@1", role="native").predict(holey)
    for huge in (1e308, np.inf, -np.inf):
        big = rows.copy()
        big.loc[big.index[0], "f0"] = huge
        with pytest.raises(InputMismatch, match="'f0' has an infinite value or one beyond"):
            sqlite_registry.predict("m", big)


def test_malformed_registration_arguments(
    sqlite_registry: Registry, sklearn_model: object, data: pd.DataFrame
) -> None:
    with pytest.raises(SampleMismatch, match="at least 10"):
        sqlite_registry.register(sklearn_model, name="m", sample=data.head(1), target="label")
    duplicated = pd.concat([data, data[["f5"]]], axis=1)
    with pytest.raises(SampleMismatch, match="duplicate column"):
        sqlite_registry.register(sklearn_model, name="m", sample=duplicated, target="label")
    with pytest.raises(InvalidInput, match="metric 'auc' must be a number"):
        bad_metrics: Any = {"auc": "high"}
        sqlite_registry.register(sklearn_model, name="m", sample=data, target="label", metrics=bad_metrics)
    with pytest.raises(InvalidInput, match="metric 'auc' must be a finite number"):
        sqlite_registry.register(
            sklearn_model, name="m", sample=data, target="label", metrics={"auc": float("nan")}
        )
    with pytest.raises(InvalidInput, match="param 'fn' must be"):
        sqlite_registry.register(sklearn_model, name="m", sample=data, target="label", params={"fn": print})
    with pytest.raises(InvalidName, match="version numbers run from 1"):
        sqlite_registry.register(sklearn_model, name="m", sample=data, target="label", parent=2**40)
    assert sqlite_registry.models() == [] and _blobs(sqlite_registry) == []
    version = sqlite_registry.register(
        sklearn_model, name="m", sample=data, target="label", params={"C": np.float32(1.5), "n": np.int64(3)}
    )
    assert version.lineage["params"] == {"C": 1.5, "n": 3}
    with pytest.raises(InvalidName, match="version numbers run from 1"):
        sqlite_registry.set_alias("m", "prod", 99999999999999999999)
    with pytest.raises(InvalidName, match="version numbers run from 1"):
        sqlite_registry.get("m@99999999999")
    with pytest.raises(InvalidName, match="not int"):
        sqlite_registry.get(5)  # type: ignore[arg-type]
    with pytest.raises(InputMismatch, match="duplicate column"):
        sqlite_registry.predict("m", pd.concat([data[FEATURES], data[["f5"]]], axis=1))


def test_database_urls_never_leak_credentials() -> None:
    database = Database("postgresql://user:hunter2@127.0.0.1:1/db?password=s3cret&sslmode=disable")
    assert "hunter2" not in database.describe() and "s3cret" not in database.describe()
    with pytest.raises(InvalidInput, match="not a valid SQLAlchemy URL"):
        Database("::::")
    with pytest.raises(InvalidInput, match="unsupported database"):
        Database("mysql://root@localhost/x")
