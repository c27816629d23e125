"""Batch scoring tests: registries copied from the session's registered homes, inputs generated here.

``credit`` v1 (production) and v2 (staging) score six numeric features ``f0..f5`` into classes
``c0..c2`` (tests/serving/conftest.py). Inputs carry a text key ``id`` with leading zeros and a
``branch`` column, so that pass-through is seen to keep values verbatim.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from tests.conftest import FEATURES, make_data
from tests.serving.conftest import registered_home


def book(rows: int, seed: int = 1) -> pd.DataFrame:
    """``rows`` loans: an ``id`` (text, zero-padded), a ``branch`` and the six features."""
    frame = make_data(rows, seed=seed)[FEATURES]
    frame.insert(0, "id", [f"{i:08d}" for i in range(rows)])
    frame.insert(1, "branch", [("north", "south", "east")[i % 3] for i in range(rows)])
    return frame


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


def read_csv(
    path: Path, text: tuple[str, ...] = ("id", "branch", "label", "flags", "model", "job_id")
) -> pa.Table:
    """An output CSV as pyarrow reads it (floats correctly rounded), keys as text."""
    present = pacsv.read_csv(path, read_options=pacsv.ReadOptions(use_threads=False)).column_names
    types = {name: pa.string() for name in text if name in present}
    return pacsv.read_csv(
        path, convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=False)
    )


@pytest.fixture
def home(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, data: pd.DataFrame, sklearn_model: object
) -> Path:
    """A fresh copy of the ``served`` registry for one test."""
    return registered_home("served", tmp_path / "home", tmp_path_factory, data, sklearn_model)


def leftovers(folder: Path) -> list[str]:
    """Hidden files or folders a job may leave beside its output (temporary files, work folders)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))
