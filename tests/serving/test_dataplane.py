"""The data plane in-process: eviction really frees versions (no batcher keeps them alive)."""

from __future__ import annotations

import asyncio

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
