"""`modelport import mlflow` against a real MLflow tracking server (SQLite backend, file artifacts),
started once for the module: models logged with MLflow's own API, imported through the CLI."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from modelport.app import open_registry
from modelport.settings import Settings
from tests.conftest import invoke_cli, until

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("sklearn")

# Given, so MLflow does not infer them: that runs the model in a child process (~20 s a model).
_REQUIREMENTS = ["scikit-learn"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    log = open(root / "server.log", "wb")  # noqa: SIM115 - closed after the server stops
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--default-artifact-root",
            (root / "artifacts").as_uri(),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        until(lambda: server.poll() is not None or _healthy(url), timeout=120)
        assert server.poll() is None, (root / "server.log").read_text()[-2000:]
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def _data(seed: int) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"income": rng.normal(50, 10, 300), "debt": rng.normal(10, 3, 300)})
    return frame, (frame["income"] - 2 * frame["debt"] > 25).map({True: "good", False: "bad"})


@pytest.fixture(scope="module")
def logged(tracking_uri: str) -> Iterator[dict[str, Any]]:
    """Two versions of `credit` logged and registered with MLflow's API; `champion` → version 1."""
    from mlflow import MlflowClient
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("credit")
    client = MlflowClient(tracking_uri)
    runs = []
    for number, c in enumerate((0.5, 2.0), start=1):
        frame, labels = _data(number)
        model = LogisticRegression(C=c).fit(frame, labels)
        with mlflow.start_run() as run:
            mlflow.log_params({"C": c, "solver": "lbfgs"})
            mlflow.log_metrics({"auc": 0.9 + number / 100, "accuracy": 0.8})
            mlflow.set_tag("team", "risk")
            mlflow.sklearn.log_model(
                model,
                name="model",
                signature=infer_signature(frame, model.predict(frame)),
                input_example=frame.head(25),
                registered_model_name="credit",
                pip_requirements=_REQUIREMENTS,
            )
        runs.append(run.info.run_id)
        client.update_model_version("credit", str(number), description=f"credit model {number}")
        client.set_model_version_tag("credit", str(number), "stage", f"s{number}")
    client.set_registered_model_alias("credit", "champion", "1")
    yield {"runs": runs}
    mlflow.set_tracking_uri(previous)  # MLflow's fluent API is process-global


def _home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    assert invoke_cli(home, "init").returncode == 0
    return home


def test_import_alias_records_lineage_and_predicts_like_mlflow(
    tmp_path: Path, tracking_uri: str, logged: dict[str, Any]
) -> None:
    home = _home(tmp_path)
    args = ("import", "mlflow", "models:/credit@champion", "--name", "credit", "--alias", "champion")
    done = invoke_cli(home, *args, "--tracking-uri", tracking_uri, "--json")
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)
    assert result["status"] == "imported" and result["version"] == 1

    registry = open_registry(Settings(home=home))
    try:
        version = registry.get("credit@champion")
        lineage = version.lineage
        assert lineage["mlflow"]["registered_model"] == "credit"
        assert lineage["mlflow"]["version"] == "1"
        assert lineage["mlflow"]["run_id"] == logged["runs"][0]
        assert lineage["mlflow"]["aliases"] == ["champion"]
        assert lineage["params"] == {"C": "0.5", "solver": "lbfgs"}  # MLflow keeps params as text
        assert lineage["metrics"] == {"auc": pytest.approx(0.91), "accuracy": pytest.approx(0.8)}
        assert version.tags == {"team": "risk", "stage": "s1"}
        assert version.description == "credit model 1"
        assert version.conversion["status"] == "equivalent"
        assert [f["name"] for f in version.signature["inputs"]] == ["income", "debt"]

        example = _data(1)[0].head(25)
        expected = mlflow.pyfunc.load_model("models:/credit/1").predict(example)
        served = registry.load(version).predict(example)
        assert served.labels is not None
        assert [str(v) for v in served.labels] == [str(v) for v in np.asarray(expected)]
    finally:
        registry.close()

    # the same version again is recognised, not imported twice
    again = invoke_cli(home, "import", "mlflow", "models:/credit/1", "--name", "credit", "--json")
    assert json.loads(again.stdout)[0]["status"] == "already imported", again.stderr


def test_import_all_is_idempotent_and_maps_aliases(
    tmp_path: Path, tracking_uri: str, logged: dict[str, Any]
) -> None:
    home = _home(tmp_path)
    first = invoke_cli(home, "import", "mlflow", "--all", "--tracking-uri", tracking_uri, "--json")
    assert first.returncode == 0, first.stderr
    results = json.loads(first.stdout)
    assert [(r["source"], r["status"], r["version"]) for r in results] == [
        ("models:/credit/1", "imported", 1),
        ("models:/credit/2", "imported", 2),
    ]
    assert results[0]["aliases"] == ["champion"]

    second = invoke_cli(home, "import", "mlflow", "--all", "--tracking-uri", tracking_uri)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("already imported") == 2
    assert "imported " not in second.stdout.replace("already imported", "")

    registry = open_registry(Settings(home=home))
    try:
        assert len(registry.versions("credit")) == 2
        assert registry.model("credit").aliases == {"champion": 1}
        assert registry.get("credit@2").lineage["params"]["C"] == "2.0"
    finally:
        registry.close()


def test_a_model_without_example_needs_a_sample(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    frame, labels = _data(3)
    folder = tmp_path / "model"
    model = LogisticRegression().fit(frame, labels)
    mlflow.sklearn.save_model(model, str(folder), pip_requirements=_REQUIREMENTS)
    home = _home(tmp_path)
    refused = invoke_cli(home, "import", "mlflow", str(folder), "--name", "local")
    assert refused.returncode == 2 and "--sample" in refused.stderr
    frame.to_csv(tmp_path / "sample.csv", index=False)
    done = invoke_cli(
        home, "import", "mlflow", str(folder), "--name", "local", "--sample", str(tmp_path / "sample.csv")
    )
    assert done.returncode == 0, done.stderr


def test_pickled_and_pyfunc_models_are_refused(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    frame, labels = _data(4)
    pickled = tmp_path / "pickled"
    mlflow.sklearn.save_model(
        LogisticRegression().fit(frame, labels),
        str(pickled),
        serialization_format="cloudpickle",
        pip_requirements=_REQUIREMENTS,
    )
    home = _home(tmp_path)
    frame.to_csv(tmp_path / "sample.csv", index=False)
    sample = ("--sample", str(tmp_path / "sample.csv"))
    refused = invoke_cli(home, "import", "mlflow", str(pickled), "--name", "p", *sample)
    assert refused.returncode == 2 and "--trust-pickle" in refused.stderr
    trusted = invoke_cli(home, "import", "mlflow", str(pickled), "--name", "p", *sample, "--trust-pickle")
    assert trusted.returncode == 0, trusted.stderr

    class Custom(mlflow.pyfunc.PythonModel):  # type: ignore[misc, name-defined]
        def predict(self, context: Any, model_input: Any) -> Any:
            return model_input

    custom = tmp_path / "custom"
    mlflow.pyfunc.save_model(str(custom), python_model=Custom(), pip_requirements=_REQUIREMENTS)
    refused = invoke_cli(home, "import", "mlflow", str(custom), "--name", "c", *sample)
    assert refused.returncode == 2 and "python_function" in refused.stderr
