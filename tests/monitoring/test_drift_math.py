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


def _samples(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    """A 20,000-row reference and live windows of 5,000 rows, from calm to far moved."""
    if kind == "discrete":  # a rating 0-4 and its moves; a value the reference never had
        shares = [0.1, 0.2, 0.4, 0.2, 0.1]
        reference = rng.choice(5, 20_000, p=shares).astype(np.float64)
        lives = [
            rng.choice(5, 5_000, p=p)
            for p in (shares, [0.15, 0.2, 0.35, 0.2, 0.1], [0.4, 0.3, 0.2, 0.1, 0.0])
        ]
        lives.append(rng.choice(6, 5_000))
        return reference, [live.astype(np.float64) for live in lives]
    if kind == "continuous":
        return rng.normal(size=20_000), [rng.normal(loc=shift, size=5_000) for shift in (0.0, 0.1, 0.5, 2.0)]

    # mixed: zero-inflated amounts (40 % exactly 0, the rest continuous), and a discrete reference met
    # by continuous live values
    def amounts(zeros: float, scale: float, n: int) -> np.ndarray:
        return np.where(rng.random(n) < zeros, 0.0, rng.lognormal(sigma=scale, size=n))

    lives = [amounts(0.4, 1.0, 5_000), amounts(0.5, 1.0, 5_000), amounts(0.3, 1.5, 5_000)]
    return amounts(0.4, 1.0, 20_000), lives


@pytest.mark.parametrize("kind", ["discrete", "continuous", "mixed"])
def test_ks_agrees_with_scipy(kind: str) -> None:
    """Within 0.01 of scipy's two-sample KS on the same rows. Interpolating between quantiles read a
    discrete feature's calm window as 0.2 where scipy reads 0.016: the profile keeps value counts."""
    rng = np.random.default_rng(0)
    reference, lives = _samples(kind, rng)
    profile = build_profile({"x": reference}, {"x": True}, np.zeros(len(reference)), True)
    feature = profile["features"]["x"]
    assert ("values" in feature) == (kind == "discrete")  # counts only for few distinct values
    if kind == "mixed":
        ratings = rng.integers(1, 6, 20_000).astype(np.float64)
        rated = build_profile({"x": ratings}, {"x": True}, np.zeros(20_000), True)["features"]["x"]
        noisy = [ratings[:5_000] + rng.normal(scale=s, size=5_000) for s in (0.01, 0.3)]
        for live in noisy:
            assert ks_statistic(rated, live) == pytest.approx(ks_2samp(ratings, live).statistic, abs=0.01)
    for live in lives:
        ours = ks_statistic(feature, live)
        assert ours == pytest.approx(ks_2samp(reference, live).statistic, abs=0.01), kind
        if kind == "discrete":  # from counts the statistic is exact
            assert ours == pytest.approx(ks_2samp(reference, live).statistic, abs=1e-12)
    drifts, _ = compare(profile, {"x": lives[-1]}, None)
    assert drifts[0].ks == round(ks_statistic(feature, lives[-1]), 6)


def test_profiles_made_before_value_counts_are_still_read() -> None:
    """A stored profile from before value counts (101 quantiles, no counts) is read from its
    quantiles: within one quantile step (1/100) plus one row's share of scipy, and drift still runs."""
    rng = np.random.default_rng(3)
    for kind in ("discrete", "continuous", "mixed"):
        reference, lives = _samples(kind, rng)
        present = reference[~np.isnan(reference)]
        old = {
            **build_profile({"x": reference}, {"x": True}, np.zeros(len(reference)), True)["features"]["x"],
            "quantiles": [float(q) for q in np.quantile(present, np.linspace(0, 1, 101))],
        }
        old.pop("values", None)
        old.pop("counts", None)
        for live in lives:
            bound = 0.01 + 1 / len(reference)
            assert abs(ks_statistic(old, live) - ks_2samp(reference, live).statistic) <= bound, kind
        profile = {"rows": len(reference), "features": {"x": old}, "prediction": old}
        features, _ = compare(profile, {"x": lives[0]}, lives[0])
        assert features[0].ks is not None and features[0].psi is not None


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
