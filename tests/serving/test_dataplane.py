"""The data plane in-process: eviction really frees versions (no batcher keeps them alive)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pandas as pd

from modelport.registry.service import Registry
from modelport.serving.dataplane import DataPlane
from modelport.serving.pool import ModelPool
from modelport.serving.tensors import Tensor
from tests.conftest import FEATURES


def test_evicted_versions_leave_the_data_plane(
    sqlite_registry: Registry, sklearn_model: object, data: pd.DataFrame
) -> None:
    for _ in range(3):
        sqlite_registry.register(sklearn_model, name="m", sample=data, target="label")
    plane = DataPlane(ModelPool(sqlite_registry, max_models=1))
    row = Tensor("input", "FP64", [1, 6], data[FEATURES].iloc[:1].to_numpy())

    async def score(version: str) -> int:
        return (await plane.infer("m", version, [row])).version

    for version in ("1", "2", "3", "1"):
        assert asyncio.run(score(version)) == int(version)
        assert len(plane.pool.loaded()) == 1
        assert set(plane._batchers) <= set(plane.pool.loaded())
    result = asyncio.run(plane.infer("m", "1", [row]))
    assert np.asarray(result.outputs[1].data).shape == (1, 3)


def test_golden_rows_convert_like_the_table_path(
    sqlite_registry: Registry, sklearn_model: object, data: pd.DataFrame
) -> None:
    """Warm-up converts stored golden rows without pandas; it must read them as a table would."""
    from modelport.signature import Feature, Signature

    version = sqlite_registry.register(sklearn_model, name="m", sample=data, target="label")
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


def test_a_serving_process_imports_neither_pandas_nor_onnx(
    sqlite_settings: object, sqlite_registry: Registry, sklearn_model: object, data: pd.DataFrame
) -> None:
    """What `modelport serve` imports, plus loading and warming a version: no pandas (≈80 MB with
    pyarrow), no onnx (≈20 MB), no converters. A stray top-level import fails this test."""
    import subprocess
    import sys

    sqlite_registry.register(sklearn_model, name="m", sample=data, target="label")
    home = str(sqlite_settings.home)  # type: ignore[attr-defined]
    script = (
        "import asyncio, sys\n"
        "import modelport.cli.main\n"
        "from modelport.app import create_app\n"
        "from modelport.settings import Settings\n"
        f"app = create_app(Settings(home={home!r}))\n"
        "asyncio.run(app.plane.loaded('m', None))\n"
        "heavy = ('pandas', 'pyarrow', 'onnx', 'skl2onnx', 'sklearn', 'onnxmltools', 'skops')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
