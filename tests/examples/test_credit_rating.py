"""The credit-rating example end to end (smaller than `make demo`, same code path)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import modelport

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "credit_rating"
sys.path.insert(0, str(EXAMPLE))

from generate import FEATURES, RATINGS, make_dataset  # noqa: E402
from train import train_and_register  # noqa: E402


def test_generator_is_deterministic_and_monotone() -> None:
    first, second = make_dataset(3_000, seed=7), make_dataset(3_000, seed=7)
    assert first.equals(second)
    assert list(first.columns) == [*FEATURES, "rating"] and len(FEATURES) == 12
    assert set(first["rating"]) == set(RATINGS)
    by_rating = first.groupby("rating")[["leverage", "interest_coverage"]].mean().loc[RATINGS]
    assert by_rating["leverage"].is_monotonic_increasing
    assert by_rating["interest_coverage"].is_monotonic_decreasing
    holey = make_dataset(3_000, seed=7, missing_rate=0.1)
    assert holey["quick_ratio"].isna().mean() == pytest.approx(0.1, abs=0.02)


def test_example_trains_registers_and_serves_from_its_onnx_twin(tmp_path: Path) -> None:
    settings = modelport.Settings(home=tmp_path / "home", equivalence_rows=1_000)
    modelport.open_registry(settings, create=True).close()  # what `modelport init` does
    version = train_and_register(rows=2_000, n_estimators=10, out=tmp_path / "out", settings=settings)
    assert version.ref == "credit-rating@1" and version.aliases == ("production",)
    assert version.serving_format == "onnx", version.conversion
    assert set(version.signature["outputs"]["classes"]) == set(RATINGS)
    assert version.lineage["training_data"]["sha256"]
    assert version.lineage["params"]["impute__missing_values"] == "nan"
    assert 0 < version.lineage["metrics"]["accuracy"] <= 1
    registry = modelport.open_registry(settings)
    try:
        firms = make_dataset(50, seed=99)[FEATURES]
        served = registry.predict("credit-rating@production", firms)
        probabilities = served[[f"p_{c}" for c in version.signature["outputs"]["classes"]]].to_numpy()
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
        assert set(served["label"]) <= set(RATINGS)
    finally:
        registry.close()
