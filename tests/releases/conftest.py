"""A registry with one model in three versions that answer differently, for release tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from modelport.app import open_registry
from modelport.settings import Settings
from tests.conftest import FEATURES

INFER = {
    "inputs": [
        {"name": "input", "datatype": "FP64", "shape": [1, 6], "data": [[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]]}
    ]
}


@pytest.fixture(scope="module")
def base_home(tmp_path_factory: pytest.TempPathFactory, data: pd.DataFrame, sklearn_model: object) -> Path:
    """``credit`` v1 (production), v2 and v3 (other regularisation), registered once per module."""
    from sklearn.linear_model import LogisticRegression

    home = tmp_path_factory.mktemp("releases") / "home"
    registry = open_registry(Settings(home=home, equivalence_rows=300), create=True)
    try:
        registry.register(sklearn_model, name="credit", sample=data, target="label", alias="production")
        for c in (0.01, 0.001):
            other = LogisticRegression(C=c, max_iter=500).fit(data[FEATURES], data["label"])
            registry.register(other, name="credit", sample=data, target="label")
    finally:
        registry.close()
    return home


@pytest.fixture
def home(base_home: Path, tmp_path: Path) -> Path:
    """A fresh copy of the module's registry for one test."""
    copy = tmp_path / "home"
    shutil.copytree(base_home, copy)
    return copy
