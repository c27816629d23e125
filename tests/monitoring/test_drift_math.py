"""The drift statistics against independent computations: PSI by its textbook formula, KS against
scipy's two-sample test, categories and missing values in their own bins, accuracy and log-loss against
scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ks_2samp
from sklearn.metrics import accuracy_score, log_loss

from modelport.monitoring.drift import build_profile, compare, ks_statistic, psi
from modelport.monitoring.live import class_index, scores


def test_psi_matches_the_formula_and_is_zero_for_equal_shares() -> None:
    reference = np.array([0.25, 0.25, 0.5])
    live = np.array([0.5, 0.25, 0.25])
    expected = sum((b - a) * np.log(b / a) for a, b in zip(reference, live, strict=True))
    assert psi(reference, live) == pytest.approx(expected)
    assert psi(reference, reference) == 0.0
    assert psi(np.array([1.0, 0.0]), np.array([0.5, 0.5])) > 2  # an empty reference bin is rare, not infinite


def test_ks_agrees_with_scipy() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(size=20_000)
    profile = build_profile({"x": reference}, {"x": True}, np.zeros(20_000), True)
    for shift in (0.0, 0.1, 0.5, 2.0):
        live = rng.normal(loc=shift, size=5_000)
        ours = ks_statistic(profile["features"]["x"]["quantiles"], live)
        assert ours == pytest.approx(ks_2samp(reference, live).statistic, abs=0.015), shift


def test_bins_categories_and_missing_values() -> None:
    rng = np.random.default_rng(1)
    numbers = rng.uniform(0, 1, 10_000)
    numbers[:500] = np.nan
    colours = np.asarray(rng.choice(["red", "green", "blue"], 10_000), dtype=object)
    profile = build_profile(
        {"x": numbers, "colour": colours}, {"x": True, "colour": False}, np.asarray(["a"] * 10_000), False
    )
    x = profile["features"]["x"]
    assert x["missing"] == pytest.approx(0.05) and len(x["shares"]) == 10
    same, _ = compare(profile, {"x": numbers, "colour": colours}, np.asarray(["a"] * 10_000))
    assert all(f.psi is not None and f.psi < 1e-9 and not f.drifting for f in same)
    more_missing = numbers.copy()
    more_missing[:3000] = np.nan
    new_colour = colours.copy()
    new_colour[:3000] = "purple"  # never seen: counted in the reference's "other" bin
    moved, prediction = compare(
        profile, {"x": more_missing, "colour": new_colour}, np.asarray(["b"] * 10_000)
    )
    assert [f.drifting for f in moved] == [True, True] and prediction.drifting
    few, _ = compare(profile, {"x": numbers[:50], "colour": colours[:50]}, None, min_rows=100)
    assert [f.note for f in few] == ["fewer than 100 rows"] * 2 and all(f.psi is None for f in few)
    hidden, _ = compare(profile, {"x": numbers}, None, pseudonymised=("colour",))
    assert hidden[1].note == "not comparable (pseudonymised)" and hidden[1].psi is None
    absent, _ = compare(profile, {}, None)
    assert absent[0].note == "not logged (redacted)"


def test_scores_match_scikit_learn() -> None:
    rng = np.random.default_rng(2)
    classes = ["AAA", "BB", "D"]
    probabilities = rng.dirichlet([1, 1, 1], size=500)
    predicted = [classes[i] for i in probabilities.argmax(axis=1)]
    truth = [classes[i] for i in rng.integers(0, 3, 500)]
    result = scores(truth, predicted, probabilities, classes)
    assert result["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
    assert result["log_loss"] == pytest.approx(log_loss(truth, probabilities, labels=classes))
    recall = sum(t == p == "D" for t, p in zip(truth, predicted, strict=True)) / truth.count("D")
    assert result["classes"]["D"]["recall"] == pytest.approx(recall)
    assert class_index([0, 1]) == {"0": 0, "0.0": 0, "1": 1, "1.0": 1}
    regression = scores(["1.0", "3.0"], None, None, [], values=np.array([2.0, 3.0]))
    assert regression == {"rows": 2, "mae": 0.5, "rmse": pytest.approx(np.sqrt(0.5))}
