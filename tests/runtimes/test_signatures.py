"""Mixed numeric/text features, missing values and regressors through registration and serving."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from modelport.errors import InputMismatch
from modelport.registry.service import Registry
from modelport.runtimes.equivalence import compare
from modelport.signature import Signature
from tests.conftest import FEATURES


def _mixed_frame(rows: int = 500, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "income": rng.lognormal(10, 0.5, rows),
            "age": rng.integers(18, 80, rows).astype("int64"),
            "region": rng.choice(["north", "south", "east", "west"], rows),
        }
    )
    frame["label"] = np.where((frame["income"] > 25_000) ^ (frame["region"] == "south"), "approve", "decline")
    return frame


def test_mixed_features_get_one_onnx_input_per_column(sqlite_registry: Registry) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = _mixed_frame()
    model = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("num", StandardScaler(), ["income", "age"]),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["region"]),
                    ]
                ),
            ),
            ("clf", LogisticRegression(max_iter=500)),
        ]
    ).fit(frame.drop(columns=["label"]), frame["label"])
    version = sqlite_registry.register(model, name="mixed", sample=frame, target="label")
    inputs = {f["name"]: f for f in version.signature["inputs"]}
    assert inputs["region"]["dtype"] == "string"
    assert inputs["region"]["categories"] == ["east", "north", "south", "west"]
    assert inputs["age"]["dtype"] == "int64" and inputs["age"]["minimum"] >= 18
    assert version.serving_format == "onnx", version.conversion
    rows = Signature.from_dict(version.signature).random_rows(2_000, seed=9)
    report = compare(
        sqlite_registry.load(version, role="native").predict(rows),
        sqlite_registry.load(version).predict(rows),
        1e-5,
    )
    assert report.equivalent, report.summary()
    with pytest.raises(InputMismatch, match="'income' must be numeric"):
        sqlite_registry.predict("mixed@1", frame.drop(columns=["label"]).assign(income="lots"))


def test_missing_values_are_profiled_and_replayed(sqlite_registry: Registry, data: pd.DataFrame) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    holey = data.copy()
    holey.loc[holey.index[::10], "f3"] = np.nan
    model = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(holey[FEATURES], holey["label"])
    version = sqlite_registry.register(model, name="holey", sample=holey, target="label")
    f3 = next(f for f in version.signature["inputs"] if f["name"] == "f3")
    assert f3["missing_rate"] == pytest.approx(0.1)
    assert any(row[3] is None for row in version.golden["rows"])
    golden = pd.DataFrame(version.golden["rows"], columns=version.golden["columns"])
    replay = sqlite_registry.load(version, role="native").predict(golden)
    assert [str(v) for v in replay.labels] == version.golden["outputs"]["labels"]  # type: ignore[union-attr]


def test_regressor_twin(sqlite_registry: Registry, data: pd.DataFrame) -> None:
    from sklearn.ensemble import GradientBoostingRegressor

    target = data["f0"] * 3 - data["f1"] ** 2
    model = GradientBoostingRegressor(n_estimators=30, random_state=0).fit(data[FEATURES], target)
    version = sqlite_registry.register(model, name="reg", sample=data[FEATURES])
    assert version.signature["outputs"] == {"task": "regression", "classes": []}
    assert version.serving_format == "onnx", version.conversion
    out = sqlite_registry.predict("reg", data[FEATURES].head(5))
    np.testing.assert_allclose(out["prediction"], model.predict(data[FEATURES].head(5)), rtol=1e-5, atol=1e-5)


def test_prediction_input_must_match_the_signature(
    sqlite_registry: Registry, sklearn_model: object, data: pd.DataFrame
) -> None:
    sqlite_registry.register(sklearn_model, name="m", sample=data, target="label")
    with pytest.raises(InputMismatch, match="missing feature"):
        sqlite_registry.predict("m", data[FEATURES[:3]])
    with pytest.raises(InputMismatch, match="unexpected column"):
        sqlite_registry.predict("m", data)
    reordered = data[FEATURES[::-1]].head(3)
    assert len(sqlite_registry.predict("m", reordered)) == 3
