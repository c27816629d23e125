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
