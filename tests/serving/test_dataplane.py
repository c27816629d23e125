"""The data plane in-process: eviction really frees versions (no batcher keeps them alive)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from modelport.app import open_registry
from modelport.registry.service import Registry
from modelport.serving.dataplane import DataPlane, TensorPayload, edge_ref
from modelport.serving.pool import ModelPool
from modelport.serving.tensors import Tensor
from modelport.settings import Settings
from tests.conftest import FEATURES
from tests.serving.conftest import registered_home


@pytest.fixture
def releases_registry(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, data: pd.DataFrame, sklearn_model: object
) -> Iterator[Registry]:
    """A copy of a registry with ``credit`` v1 (production), v2 and v3."""
    home = registered_home("releases", tmp_path / "home", tmp_path_factory, data, sklearn_model)
    registry = open_registry(Settings(home=home))
    yield registry
    registry.close()


def test_evicted_versions_leave_the_data_plane(releases_registry: Registry, data: pd.DataFrame) -> None:
    plane = DataPlane(ModelPool(releases_registry, max_models=1))
    row = Tensor("input", "FP64", [1, 6], data[FEATURES].iloc[:1].to_numpy())

    async def score(version: str) -> int:
        return (await plane.infer(edge_ref("credit", version), TensorPayload([row]))).version

    for version in ("1", "2", "3", "1"):
        assert asyncio.run(score(version)) == int(version)
        assert len(plane.pool.loaded()) == 1
        assert plane.batcher_keys() <= set(plane.pool.loaded())
    result = asyncio.run(plane.infer(edge_ref("credit", "1"), TensorPayload([row])))
    assert np.asarray(result.outputs()[1].data).shape == (1, 3)


def test_golden_rows_convert_like_the_table_path(releases_registry: Registry) -> None:
    """Warm-up converts stored golden rows without pandas; it must read them as a table would."""
    from modelport.signature import Feature, Signature

    version = releases_registry.get("credit@1")
    golden = version.golden
    signature = Signature.from_dict(version.signature)
    frame_batch = signature.batch(pd.DataFrame(golden["rows"], columns=golden["columns"]))
    rows_batch = signature.rows_batch(golden["columns"], golden["rows"])
    assert list(rows_batch) == list(frame_batch)
    for name in rows_batch:
        np.testing.assert_array_equal(rows_batch[name], frame_batch[name])
    rows: list[list[Any]] = [[1.5, "a"], [None, None], [float("nan"), "b"]]
    two = Signature(
        [
            Feature("x", "float64", 0.0, 2.0, None, 0.5),
            Feature("grade", "string", None, None, ["a", "b"], 0.5),
        ],
        signature.outputs,
    )
    got = two.rows_batch(["grade", "x"], [[r[1], r[0]] for r in rows])
    want = two.batch(pd.DataFrame({"grade": [r[1] for r in rows], "x": [r[0] for r in rows]}))
    np.testing.assert_array_equal(got["x"], want["x"])
    assert got["grade"].tolist() == want["grade"].tolist() == ["a", None, "b"]


def test_a_serving_process_imports_neither_pandas_nor_onnx(releases_registry: Registry) -> None:
    """What `modelport serve` imports, plus loading and warming a version: no pandas (≈80 MB with
    pyarrow), no onnx (≈20 MB), no converters. A stray top-level import fails this test."""
    import subprocess
    import sys

    home = str(releases_registry.settings.home)
    script = (
        "import asyncio, sys\n"
        "import modelport.cli.main\n"
        "from modelport.app import create_app\n"
        "from modelport.settings import Settings\n"
        f"app = create_app(Settings(home={home!r}))\n"
        "from modelport.registry.names import ModelRef\nasyncio.run(app.plane.loaded(ModelRef('credit')))\n"
        "heavy = ('pandas', 'pyarrow', 'onnx', 'skl2onnx', 'sklearn', 'onnxmltools', 'skops')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
