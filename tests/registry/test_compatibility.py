"""Whether a version can take an alias's traffic (registry/compatibility.py): each rule of
docs/releases.md "Compatible signatures" on signatures built by hand, then the rail on a real registry —
an alias move to a version with another signature is refused naming the differences, the override is
audited, and `register --alias` cannot slip one through."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from modelport.app import open_registry
from modelport.errors import PromotionRefused
from modelport.registry.compatibility import compare
from modelport.settings import Settings
from modelport.signature import Feature, Outputs, Signature
from tests.conftest import FEATURES
from tests.conftest import invoke_cli as cli
from tests.releases.conftest import audited, five_features_home

CLASSES = ["c0", "c1", "c2"]


def _signature(
    *features: Feature, task: str = "classification", classes: list[object] | None = None
) -> Signature:
    return Signature(list(features), Outputs(task, CLASSES if classes is None else classes))  # type: ignore[arg-type]


def _number(name: str, lo: float = 0.0, hi: float = 1.0, missing: float = 0.0) -> Feature:
    return Feature(name, "float64", lo, hi, None, missing)


def _text(name: str, categories: list[str] | None) -> Feature:
    return Feature(name, "string", None, None, categories, 0.0)


TODAY = _signature(_number("a"), _number("b", missing=0.1), _text("c", ["x", "y"]))


def test_the_same_form_of_request_and_answer_can_take_the_traffic() -> None:
    retrained = _signature(
        Feature("a", "int64", -5.0, 5.0), _number("b", missing=0.2), _text("c", ["x", "y", "z"])
    )
    found = compare(TODAY, retrained)
    assert found.compatible and found.breaking == () and found.narrower == ()
    assert compare(TODAY, TODAY).compatible


@pytest.mark.parametrize(
    ("candidate", "phrase"),
    [
        (_signature(_number("a"), _text("c", ["x", "y"])), "requests send b, which it does not take"),
        (
            _signature(_number("a"), _number("b"), _text("c", None), _number("d")),
            "it requires d, which requests do not send (every input is required)",
        ),
        (
            _signature(_number("b"), _number("a"), _text("c", ["x", "y"])),
            "it takes the inputs in another order (b, a, c)",
        ),
        (_signature(_number("a"), _number("b"), _number("c")), "'c' is text today and numeric in it"),
        (
            _signature(_number("a"), _number("b"), _text("c", None), task="regression", classes=[]),
            "it answers regression (a number per row) where clients read classification",
        ),
        (
            _signature(_number("a"), _number("b"), _text("c", None), classes=["c0", "c1"]),
            'its classes are "c0", "c1" where clients read "c0", "c1", "c2"',
        ),
        (
            _signature(_number("a"), _number("b"), _text("c", None), classes=["c1", "c0", "c2"]),
            'its classes are "c1", "c0", "c2"',
        ),
        (
            _signature(_number("a"), _number("b"), _text("c", None), classes=[0, 1, 2]),
            "its classes are 0, 1, 2",
        ),
    ],
)
def test_each_difference_in_the_form_of_requests_or_answers_breaks_it(
    candidate: Signature, phrase: str
) -> None:
    found = compare(TODAY, candidate)
    assert not found.compatible
    assert any(phrase in difference for difference in found.breaking), found.breaking


def test_narrower_bounds_are_reported_never_a_refusal_on_their_own() -> None:
    narrow = _signature(_number("a", 0.2, 0.9), _number("b", missing=0.0), _text("c", ["x"]))
    found = compare(TODAY, narrow)
    assert found.compatible
    assert found.narrower == ("'a' below 0.2", "'a' above 0.9", "'b' missing", "'c' categories y")


# -- the rail on a real registry -------------------------------------------------------------------------


@pytest.fixture
def home(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, data: pd.DataFrame, sklearn_model: object
) -> Path:
    return five_features_home(tmp_path / "home", tmp_path_factory, data, sklearn_model)


def test_an_alias_move_to_a_version_that_cannot_take_its_traffic_is_refused_then_overridden(
    home: Path,
) -> None:
    refused = cli(home, "alias", "set", "credit@4", "production")
    assert refused.returncode == 6, (refused.stdout, refused.stderr)
    assert "version 4 cannot take the traffic of credit@production (version 1)" in refused.stderr
    assert "requests send f5, which it does not take" in refused.stderr
    assert "--allow-incompatible" in refused.stderr
    shown = json.loads(cli(home, "show", "credit@production", "--json").stdout)
    assert shown["number"] == 1  # nothing moved
    assert audited(home, "alias.refused")[-1]["version"] == 4

    # an alias nobody calls yet has no traffic to break
    assert cli(home, "alias", "set", "credit@4", "experiment").returncode == 0

    moved = cli(home, "alias", "set", "credit@4", "production", "--allow-incompatible", "--json")
    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout)["version"] == 4
    record = audited(home, "alias.set")[-1]
    assert record["version"] == 4
    assert record["allow_incompatible"] == {"alias": ["requests send f5, which it does not take"]}


def test_register_with_an_alias_cannot_slip_an_incompatible_version_through(
    home: Path, data: pd.DataFrame
) -> None:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=500).fit(data[FEATURES[:5]], data["label"])
    registry = open_registry(Settings(home=home, equivalence_rows=100))
    try:
        with pytest.raises(PromotionRefused, match="requests send f5") as refused:
            registry.register(
                model, name="credit", sample=data.drop(columns=["f5"]), target="label", alias="production"
            )
        assert "Register without --alias" in str(refused.value)
        assert [v.number for v in registry.versions("credit")] == [1, 2, 3, 4]  # nothing stored
        assert registry.model("credit").aliases["production"] == 1
    finally:
        registry.close()
