"""The runtime interface: the loader table, the fake runtime, and load failures as clear errors."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest

from modelport.errors import RuntimeFailure, UnknownFormat
from modelport.runtimes import LOADERS, load_runtime
from modelport.runtimes.base import BUILTIN_MODULES
from modelport.signature import Feature, Outputs, Signature

SIGNATURE = Signature(
    [Feature("a", "float64"), Feature("b", "float64")], Outputs("classification", ["no", "yes"])
)


def test_builtin_formats_register_like_plugins() -> None:
    for fmt in BUILTIN_MODULES:
        importlib.import_module(BUILTIN_MODULES[fmt])
    assert set(BUILTIN_MODULES) <= set(LOADERS)


def test_fake_runtime_is_deterministic() -> None:
    runtime = load_runtime("fake", json.dumps({"weights": [2.0, -1.0]}).encode(), {}, SIGNATURE)
    batch = {"a": np.array([1.0, -1.0]), "b": np.array([0.0, 0.0])}
    first, second = runtime.predict(batch), runtime.predict(batch)
    assert first.labels is not None and list(first.labels) == ["yes", "no"]
    assert first.probabilities is not None and second.probabilities is not None
    np.testing.assert_array_equal(first.probabilities, second.probabilities)
    np.testing.assert_allclose(first.probabilities.sum(axis=1), 1.0)


def test_unknown_format() -> None:
    with pytest.raises(UnknownFormat, match="no runtime for format 'pmml'"):
        load_runtime("pmml", b"", {}, SIGNATURE)


@pytest.mark.parametrize("fmt", ["onnx", "skops", "xgboost-json", "lightgbm-text"])
def test_garbage_blob_is_a_runtime_failure(fmt: str) -> None:
    with pytest.raises(RuntimeFailure, match=f"the {fmt} runtime could not load the artifact"):
        load_runtime(fmt, b"\x00garbage\xff", {}, SIGNATURE)
