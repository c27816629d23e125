"""A registry with one model in three versions that answer differently, for release tests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.serving.conftest import registered_home

INFER = {
    "inputs": [
        {"name": "input", "datatype": "FP64", "shape": [1, 6], "data": [[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]]}
    ]
}


@pytest.fixture
def home(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, data: pd.DataFrame, sklearn_model: object
) -> Path:
    """``credit`` v1 (production), v2 and v3 (other regularisations): a fresh copy for one test."""
    return registered_home("releases", tmp_path / "home", tmp_path_factory, data, sklearn_model)


def register_without_f5(home: Path, data: pd.DataFrame) -> int:
    """Register in ``home`` a ``credit`` version trained without ``f5``: a signature with one input
    fewer, which cannot take the traffic of the versions with six. Returns its number."""
    from sklearn.linear_model import LogisticRegression

    from modelport.app import open_registry
    from modelport.settings import Settings
    from tests.conftest import FEATURES

    model = LogisticRegression(max_iter=500).fit(data[FEATURES[:5]], data["label"])
    registry = open_registry(Settings(home=home, equivalence_rows=100))
    try:
        return registry.register(
            model, name="credit", sample=data.drop(columns=["f5"]), target="label"
        ).number
    finally:
        registry.close()


def five_features_home(
    to: Path, tmp_path_factory: pytest.TempPathFactory, data: pd.DataFrame, sklearn_model: object
) -> Path:
    """A copy, at ``to``, of ``credit`` v1 (production), v2, v3 and v4 trained without ``f5`` (a
    signature with one input fewer): built once per test session, for every module's guard-rail tests."""
    import shutil

    built = tmp_path_factory.getbasetemp() / "registered" / "five-features"
    if not built.exists():
        partial = built.with_name("five-features.partial")
        shutil.rmtree(partial, ignore_errors=True)
        registered_home("releases", partial, tmp_path_factory, data, sklearn_model)
        assert register_without_f5(partial, data) == 4
        partial.rename(built)
    shutil.copytree(built, to)
    return to


def audited(home: Path, action: str) -> list[dict[str, object]]:
    """The ``after`` of every audit record of ``action`` in ``home``, oldest first."""
    from modelport.app import open_registry
    from modelport.settings import Settings

    registry = open_registry(Settings(home=home))
    try:
        return [r.after for r in registry.store.audit_records() if r.action == action]
    finally:
        registry.close()
