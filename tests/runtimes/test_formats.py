"""Every accepted format, the ONNX twin and its proof, on real models and real files."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import skops.io

from modelport.app import open_registry
from modelport.errors import ConversionFailed, FileMissing, SampleMismatch, UnknownFormat, UnsafeFormat
from modelport.registry.service import Registry
from modelport.runtimes.equivalence import compare
from modelport.settings import Settings
from modelport.signature import Signature
from tests.conftest import FEATURES

ROWS = 10_000


def _random_rows(version_signature: dict, n: int = ROWS) -> pd.DataFrame:  # type: ignore[type-arg]
    return Signature.from_dict(version_signature).random_rows(n, seed=123)


def _assert_twin_matches_native(registry: Registry, ref: str) -> None:
    """Serve from the ONNX twin and compare with the native runtime on 10,000 random rows."""
    version = registry.get(ref)
    assert version.serving_format == "onnx", version.conversion
    rows = _random_rows(version.signature)
    served = registry.load(version)
    native = registry.load(version, role="native")
    assert served.runtime.format == "onnx"
    report = compare(native.predict(rows), served.predict(rows), tolerance=1e-5)
    assert report.rows == ROWS
    assert report.equivalent, report.summary()
    assert report.max_abs_diff < 1e-5


@pytest.fixture(scope="module")
def xgb_model(data: pd.DataFrame):  # type: ignore[no-untyped-def]
    import xgboost as xgb

    labels = data["label"].map({"c0": 0, "c1": 1, "c2": 2})
    return xgb.XGBClassifier(n_estimators=40, max_depth=4, n_jobs=1).fit(data[FEATURES], labels)


@pytest.fixture(scope="module")
def lgbm_model(data: pd.DataFrame):  # type: ignore[no-untyped-def]
    import lightgbm as lgb

    return lgb.LGBMClassifier(n_estimators=40, n_jobs=1, verbose=-1).fit(data[FEATURES], data["label"])


@pytest.fixture(scope="module")
def registered(
    tmp_path_factory: pytest.TempPathFactory,
    sklearn_model: Any,
    xgb_model: Any,
    lgbm_model: Any,
    data: pd.DataFrame,
) -> Iterator[Registry]:
    """``sk``, ``xgb`` and ``lgbm`` v1, registered once for the tests that read them."""
    home = tmp_path_factory.mktemp("formats") / "home"
    registry = open_registry(Settings(home=home, equivalence_rows=500), create=True)
    for name, model in (("sk", sklearn_model), ("xgb", xgb_model), ("lgbm", lgbm_model)):
        registry.register(model, name=name, sample=data, target="label")
    yield registry
    registry.close()


def test_sklearn_served_from_onnx_matches_on_10k_rows(registered: Registry) -> None:
    _assert_twin_matches_native(registered, "sk@1")


def test_sklearn_gradient_boosting_served_from_onnx(sqlite_registry: Registry, data: pd.DataFrame) -> None:
    from sklearn.ensemble import GradientBoostingClassifier

    model = GradientBoostingClassifier(n_estimators=30, random_state=0).fit(data[FEATURES], data["label"])
    sqlite_registry.register(model, name="gb", sample=data, target="label")
    _assert_twin_matches_native(sqlite_registry, "gb@1")


def test_xgboost_served_from_onnx_matches_on_10k_rows(registered: Registry) -> None:
    version = registered.get("xgb@1")
    assert version.formats == ("xgboost-json", "onnx") or set(version.formats) == {"xgboost-json", "onnx"}
    _assert_twin_matches_native(registered, "xgb@1")


def test_lightgbm_served_from_onnx_matches_on_10k_rows(registered: Registry) -> None:
    version = registered.get("lgbm@1")
    assert set(version.formats) == {"lightgbm-text", "onnx"}
    assert version.signature["outputs"]["classes"] == ["c0", "c1", "c2"]
    _assert_twin_matches_native(registered, "lgbm@1")


def test_native_predictions_equal_the_in_process_model(
    registered: Registry, sklearn_model: Any, xgb_model: Any, lgbm_model: Any, data: pd.DataFrame
) -> None:
    rows = data[FEATURES].head(200)
    for name, model in (("sk", sklearn_model), ("xgb", xgb_model), ("lgbm", lgbm_model)):
        native = registered.load(f"{name}@1", role="native").predict(rows)
        assert native.probabilities is not None
        np.testing.assert_allclose(native.probabilities, model.predict_proba(rows), atol=1e-12)


def test_files_in_every_format_register(
    tmp_path: Path,
    sqlite_registry: Registry,
    registered: Registry,
    sklearn_model: Any,
    xgb_model: Any,
    lgbm_model: Any,
    data: pd.DataFrame,
) -> None:
    sample = tmp_path / "sample.csv"
    data.to_csv(sample, index=False)
    skops.io.dump(sklearn_model, tmp_path / "m.skops")
    xgb_model.save_model(tmp_path / "m.json")
    xgb_model.save_model(tmp_path / "m.ubj")
    lgbm_model.booster_.save_model(tmp_path / "m.txt")
    # the ONNX twin modelport made of the same scikit-learn model
    (tmp_path / "m.onnx").write_bytes(registered.read_artifact(registered.get("sk@1"), "onnx"))
    cases = {
        "m.skops": ("skops", "onnx"),
        "m.json": ("xgboost-json", "onnx"),
        "m.ubj": ("xgboost-ubj", "onnx"),
        "m.txt": ("lightgbm-text", "onnx"),
        "m.onnx": ("onnx", "onnx"),
    }

    def register(file: str) -> int:
        """As another client would (its own registry): each file's preflight child runs beside the others."""
        registry = open_registry(sqlite_registry.settings)
        try:
            return registry.register(name="files", path=tmp_path / file, sample=sample, target="label").number
        finally:
            registry.close()

    with ThreadPoolExecutor(max_workers=len(cases)) as pool:
        numbers = dict(zip(cases, pool.map(register, cases), strict=True))
    assert sorted(numbers.values()) == [1, 2, 3, 4, 5]
    for file, (native_format, serving) in cases.items():
        version = sqlite_registry.get(f"files@{numbers[file]}")
        assert native_format in version.formats, (file, version.formats)
        assert version.serving_format == serving, (file, version.conversion)
        predictions = sqlite_registry.predict(f"files@{version.number}", data[FEATURES].head(5))
        assert len(predictions) == 5
    onnx_version = sqlite_registry.get(f"files@{numbers['m.onnx']}")
    assert onnx_version.conversion["status"] == "not_needed"
    assert onnx_version.signature["outputs"]["classes"] == ["c0", "c1", "c2"]


def test_pickle_needs_trust_and_is_never_stored(
    tmp_path: Path, sqlite_registry: Registry, sklearn_model: object, data: pd.DataFrame
) -> None:
    import joblib

    path = tmp_path / "m.joblib"
    joblib.dump(sklearn_model, path)
    with pytest.raises(UnsafeFormat, match="--trust-pickle"):
        sqlite_registry.register(name="p", path=path, sample=data, target="label")
    version = sqlite_registry.register(name="p", path=path, sample=data, target="label", trust_pickle=True)
    assert set(version.formats) == {"skops", "onnx"}
    assert version.lineage["source"] == "file:pickle"


def test_conversion_failure_is_reported_and_native_runtime_serves(
    sqlite_registry: Registry, data: pd.DataFrame
) -> None:
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.linear_model import LinearRegression

    model = TransformedTargetRegressor(
        regressor=LinearRegression(), func=np.log1p, inverse_func=np.expm1, check_inverse=False
    ).fit(data[FEATURES], np.abs(data["f0"]) + 1)
    frame = data[FEATURES]
    version = sqlite_registry.register(model, name="reg", sample=frame)
    assert version.conversion["status"] == "failed"
    assert "TransformedTargetRegressor" in version.conversion["reason"]
    assert version.serving_format == "skops" and version.formats == ("skops",)
    served = sqlite_registry.predict("reg@1", frame.head(3))
    np.testing.assert_allclose(served["prediction"], model.predict(frame.head(3)))
    with pytest.raises(ConversionFailed, match="ONNX conversion required"):
        sqlite_registry.register(model, name="reg", sample=frame, require_onnx=True)
    assert [v.number for v in sqlite_registry.versions("reg")] == [1]


def test_bad_inputs_are_refused_with_precise_messages(
    tmp_path: Path, sqlite_registry: Registry, sklearn_model: object, data: pd.DataFrame
) -> None:
    weird = tmp_path / "model.bin"
    weird.write_bytes(b"\x00\x01")
    with pytest.raises(UnknownFormat, match="cannot tell the format"):
        sqlite_registry.register(name="m", path=weird, sample=data)
    with pytest.raises(UnknownFormat, match="unknown format 'tensorflow'"):
        sqlite_registry.register(name="m", path=weird, sample=data, format="tensorflow")
    corrupt = tmp_path / "model.onnx"
    corrupt.write_bytes(b"not onnx at all")
    with pytest.raises(UnknownFormat, match="not a readable onnx model"):
        sqlite_registry.register(name="m", path=corrupt, sample=data)
    with pytest.raises(FileMissing, match="does not exist"):
        sqlite_registry.register(name="m", path=tmp_path / "absent.skops", sample=data)
    with pytest.raises(FileMissing, match="does not exist"):
        sqlite_registry.register(sklearn_model, name="m", sample=tmp_path / "absent.csv")
    with pytest.raises(SampleMismatch, match="lacks feature"):
        sqlite_registry.register(sklearn_model, name="m", sample=data.drop(columns=["f2"]), target="label")
    with pytest.raises(SampleMismatch, match="does not use: label"):
        sqlite_registry.register(sklearn_model, name="m", sample=data)
    with pytest.raises(SampleMismatch, match="target column 'y'"):
        sqlite_registry.register(sklearn_model, name="m", sample=data, target="y")
    with pytest.raises(SampleMismatch, match="no rows"):
        sqlite_registry.register(sklearn_model, name="m", sample=data.head(0), target="label")
    assert sqlite_registry.models() == []
    blobs = sqlite_registry.settings.home / "artifacts" / "blobs"
    assert not [p for p in blobs.rglob("*") if p.is_file()]
