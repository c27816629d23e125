"""`modelport export REF -o model.onnx` (docs/formats.md, "Exporting the twin"): the proven ONNX twin
runs in plain onnxruntime and answers as the registry does for the golden rows; its signature and card
are written beside it; a version without a twin, an existing file and a missing folder are refused."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from modelport.app import open_registry
from modelport.settings import Settings
from tests.conftest import FEATURES, invoke_cli
from tests.serving.conftest import registered_home


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, data: pd.DataFrame, sklearn_model: object) -> Path:
    """``credit`` v1 (production) and v2 (staging), plus ``reg`` v1 whose conversion failed."""
    home = registered_home(
        "served", tmp_path_factory.mktemp("export") / "home", tmp_path_factory, data, sklearn_model
    )
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.linear_model import LinearRegression

    model = TransformedTargetRegressor(
        regressor=LinearRegression(), func=np.log1p, inverse_func=np.expm1, check_inverse=False
    ).fit(data[FEATURES], np.abs(data["f0"]) + 1)
    registry = open_registry(Settings(home=home))
    try:
        assert registry.register(model, name="reg", sample=data[FEATURES]).conversion["status"] == "failed"
    finally:
        registry.close()
    return home


def _golden(home: Path, ref: str) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, object]]:
    registry = open_registry(Settings(home=home))
    try:
        version = registry.get(ref)
        rows = pd.DataFrame(version.golden["rows"], columns=version.golden["columns"])
        return rows, registry.predict(ref, rows), version.signature
    finally:
        registry.close()


def test_export_runs_in_onnxruntime_and_answers_as_the_registry(served: Path, tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    done = invoke_cli(served, "export", "credit@production", "-o", str(target), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ref"] == "credit@1"
    blob = target.read_bytes()
    assert hashlib.sha256(blob).hexdigest() == report["sha256"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "model.card.md",
        "model.onnx",
        "model.signature.json",
    ]

    rows, expected, signature = _golden(served, "credit@1")
    assert json.loads((tmp_path / "model.signature.json").read_text()) == signature
    session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    (matrix,) = session.get_inputs()  # every feature numeric: one 2-D input in signature order
    dtype = np.float32 if matrix.type == "tensor(float)" else np.float64
    labels, scores = session.run(None, {matrix.name: rows[FEATURES].to_numpy(dtype=dtype)})
    classes = signature["outputs"]["classes"]  # type: ignore[index]
    if isinstance(scores, list):  # ZipMap
        scores = np.array([[row[c] for c in classes] for row in scores])
    assert list(labels) == list(expected["label"])
    np.testing.assert_allclose(scores, expected[[f"p_{c}" for c in classes]].to_numpy(), atol=1e-5)

    card = (tmp_path / "model.card.md").read_text()
    assert card.startswith("# credit version 1")
    for fact in (
        report["sha256"],
        "## Inputs",
        "## Equivalence proof",
        "equivalent",
        "## Golden cases",
        "f5",
    ):
        assert fact in card, fact
    inputs = card.split("## Inputs", 1)[1].split("## Equivalence proof", 1)[0]
    assert [
        line.split("|")[1].strip() for line in inputs.splitlines()[4:] if line.startswith("|")
    ] == FEATURES


def test_refusals(served: Path, tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    no_twin = invoke_cli(served, "export", "reg@1", "-o", str(target))
    assert no_twin.returncode == 1
    assert "no proven ONNX twin" in no_twin.stderr and "failed" in no_twin.stderr
    assert not any(tmp_path.iterdir())

    assert invoke_cli(served, "export", "credit@1", "-o", str(target)).returncode == 0
    before = target.read_bytes()
    again = invoke_cli(served, "export", "credit@2", "-o", str(target))
    assert again.returncode == 1 and "--force" in again.stderr
    assert target.read_bytes() == before
    forced = invoke_cli(served, "export", "credit@2", "-o", str(target), "--force")
    assert forced.returncode == 0, forced.stderr
    assert target.read_bytes() != before
    assert "# credit version 2" in (tmp_path / "model.card.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "model.card.md",
        "model.onnx",
        "model.signature.json",
    ]

    missing = invoke_cli(served, "export", "credit@1", "-o", str(tmp_path / "nowhere" / "m.onnx"))
    assert missing.returncode != 0 and "does not exist" in missing.stderr
    folder = invoke_cli(served, "export", "credit@1", "-o", str(tmp_path))
    assert folder.returncode != 0 and "is a folder" in folder.stderr
    unknown = invoke_cli(served, "export", "nothing@1", "-o", str(tmp_path / "x.onnx"))
    assert unknown.returncode != 0


def test_a_symlink_is_replaced_not_followed(served: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    exports = tmp_path / "exports"
    exports.mkdir()
    (exports / "model.onnx").symlink_to(outside)
    assert invoke_cli(served, "export", "credit@1", "-o", str(exports / "model.onnx")).returncode == 1
    done = invoke_cli(served, "export", "credit@1", "-o", str(exports / "model.onnx"), "--force")
    assert done.returncode == 0, done.stderr
    assert outside.read_text() == "keep me"
    assert not (exports / "model.onnx").is_symlink()
    assert sorted(os.listdir(exports)) == ["model.card.md", "model.onnx", "model.signature.json"]


def test_a_tampered_artifact_is_refused(served: Path, tmp_path: Path) -> None:
    home = shutil.copytree(served, tmp_path / "home")
    registry = open_registry(Settings(home=home))
    try:
        digest = registry.get("credit@1").artifact("onnx").digest  # type: ignore[union-attr]
    finally:
        registry.close()
    (blob,) = home.rglob(digest)
    blob.chmod(0o600)
    blob.write_bytes(blob.read_bytes() + b"x")
    done = invoke_cli(home, "export", "credit@1", "-o", str(tmp_path / "m.onnx"))
    assert done.returncode != 0 and "digest" in done.stderr
    assert not (tmp_path / "m.onnx").exists()
