"""modelport installed from its wheel into a fresh venv (docs/install.md), proven rather than assumed:

- the core alone creates a registry, registers an ONNX file, serves it behind an API key and predicts;
- a job whose extra is missing fails with the command that installs it, never with a traceback;
- ``[sklearn]`` registers a scikit-learn pipeline (ONNX twin proven equivalent);
- ``[validate]`` validates a version, Locust load test included;
- ``[grpc]`` beside the newest ``tritonclient[grpc]`` in the same venv serves a Triton gRPC call — and
  a protobuf older than the generated code is named with the command that fixes it.

The venv grows in that order (tests/install/conftest.py); each test installs what it needs, so any one
of them also runs alone.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.conftest import FEATURES, until
from tests.install.conftest import FreshVenv
from tests.serving.conftest import free_port

pytestmark = pytest.mark.slow

# What the core install must not hold: each belongs to an extra (pyproject.toml).
NOT_IN_CORE = (
    "scikit-learn",
    "scipy",
    "skops",
    "skl2onnx",
    "onnxmltools",
    "joblib",
    "xgboost",
    "xgboost-cpu",
    "lightgbm",
    "matplotlib",
    "locust",
    "hypothesis",
    "grpcio",
    "redis",
    "psycopg",
    "opentelemetry-sdk",
)
CLASSES = ["c0", "c1", "c2"]


@dataclass(frozen=True)
class Files:
    onnx: Path  # the conftest pipeline, converted by modelport's own converter
    skops: Path  # the same pipeline, saved with skops
    sample: Path  # the training data, label column included
    rows: Path  # five rows to score


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, data: pd.DataFrame, sklearn_model: object) -> Files:
    import skops.io as sio

    from modelport.runtimes.convert import to_onnx
    from modelport.signature import Outputs, Signature

    folder = tmp_path_factory.mktemp("install-files")
    signature = Signature(Signature.infer_features(data[FEATURES]), Outputs("classification", CLASSES))
    made = Files(folder / "credit.onnx", folder / "credit.skops", folder / "sample.csv", folder / "rows.csv")
    made.onnx.write_bytes(to_onnx("sklearn", sklearn_model, signature))
    made.skops.write_bytes(sio.dumps(sklearn_model))
    data.to_csv(made.sample, index=False)
    data[FEATURES].head(5).to_csv(made.rows, index=False)
    return made


@pytest.fixture(scope="module")
def token(fresh: FreshVenv, files: Files) -> str:
    """`init` in the fresh venv (its admin key), then `credit` v1 registered from the ONNX file."""
    init = fresh.modelport("init", "--json")
    assert init.returncode == 0, init.stderr
    secret = str(json.loads(init.stdout)["admin_key"]["token"])
    registered = fresh.modelport(
        *("register", "credit", str(files.onnx), "--sample", str(files.sample), "--target", "label"),
        *("--alias", "production", "--json"),
    )
    assert registered.returncode == 0, registered.stderr
    assert json.loads(registered.stdout)["number"] == 1
    return secret


@dataclass
class Running:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


@pytest.fixture
def serve(fresh: FreshVenv) -> Iterator[list[Running]]:
    """Start `modelport serve` from the venv with ``start(*args)``; every server is stopped after."""
    started: list[Running] = []
    yield started
    for running in started:
        running.process.terminate()
        try:
            running.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            running.process.kill()
            running.process.wait()


def launch(fresh: FreshVenv, started: list[Running], *args: str) -> Running:
    """Start `modelport serve` from the venv; :func:`wait_ready` waits for it (other work may run
    meanwhile)."""
    port = free_port()
    log = fresh.work / f"serve-{port}.log"
    with log.open("w") as stderr:  # the child keeps its own copy
        process = subprocess.Popen(
            [str(fresh.bin / "modelport"), "serve", "--port", str(port), *args],
            cwd=fresh.work,
            env=fresh.env(MODELPORT_DRAIN_SECONDS="0"),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    running = Running(f"http://127.0.0.1:{port}", process, log)
    started.append(running)
    return running


def wait_ready(running: Running) -> Running:
    def ready() -> bool:
        assert running.process.poll() is None, f"serve exited: {running.log.read_text()[-2000:]}"
        try:
            return probe.get(f"{running.url}/v2/health/ready").status_code == 200
        except httpx.TransportError:
            return False

    with httpx.Client(timeout=1) as probe:  # one client: each new one loads the CA bundle
        until(ready, timeout=120, interval=0.02)
    return running


def start(fresh: FreshVenv, started: list[Running], *args: str) -> Running:
    return wait_ready(launch(fresh, started, *args))


def failure(done: subprocess.CompletedProcess[str]) -> str:
    """What a failed command said, checked to be a message: status 1, one `error:` line, no traceback."""
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and "unexpected" not in done.stderr, done.stderr
    return done.stderr


def test_the_core_install_registers_serves_and_predicts_an_onnx_model(
    fresh: FreshVenv, files: Files, token: str, serve: list[Running]
) -> None:
    installed = fresh.installed()
    assert not [name for name in NOT_IN_CORE if name in installed], installed
    server = launch(fresh, serve)  # while it starts, the commands that need no server
    where = fresh.python("import modelport; print(modelport.__file__)")
    assert where.stdout.startswith(str(fresh.root)), where  # the wheel's code, not the checkout's
    predicted = fresh.modelport("predict", "credit", "--input", str(files.rows))
    assert predicted.returncode == 0, predicted.stderr
    assert [row["label"] in CLASSES for row in json.loads(predicted.stdout)] == [True] * 5
    scored = fresh.modelport(
        "score", "credit", str(files.rows), "-o", str(fresh.root / "scores.parquet"), "--json"
    )
    assert scored.returncode == 0, scored.stderr  # batch scoring needs no extra
    assert json.loads(scored.stdout)["scored"] == 5

    wait_ready(server)
    body = {"inputs": [{"name": "input", "shape": [2, 6], "datatype": "FP64", "data": [0.5] * 12}]}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        path = "/v2/models/credit/infer"
        assert client.post(path, json=body).status_code == 401  # closed by default
        answer = client.post(path, json=body, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    assert {o["name"] for o in answer.json()["outputs"]} == {"label", "probabilities"}

    # the console is in the wheel: templates, stylesheet and htmx, no Node.js, no extra
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        form = browser.get("/ui/login")
        assert form.status_code == 200, form.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf, form.text[:500]
        signed_in = browser.post("/ui/login", data={"csrf": csrf.group(1), "key": token})
        assert signed_in.status_code == 303, signed_in.text
        models = browser.get("/ui/models")
        assert models.status_code == 200 and ">credit</a>" in models.text
        for asset in ("console.css", "htmx-2.0.11.min.js"):
            assert browser.get(f"/ui/static/{asset}").status_code == 200, asset

    # registration over HTTP needs nothing beyond the core install either (python-multipart, httpx)
    with httpx.Client(base_url=server.url, timeout=120, headers={"Authorization": f"Bearer {token}"}) as api:
        uploaded = api.post(
            "/api/v1/models/uploaded/versions",
            files={
                "model": ("credit.onnx", files.onnx.read_bytes()),
                "sample": ("s.csv", files.sample.read_bytes()),
            },
            data={"target": "label"},
        )
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json()["number"] == 1


def test_a_missing_extra_fails_with_the_command_that_installs_it(
    fresh: FreshVenv, files: Files, token: str
) -> None:
    assert not fresh.extras, "runs on the core install"
    with ThreadPoolExecutor(5) as pool:  # five commands at once: each fails without changing anything
        skops = pool.submit(
            fresh.modelport, "register", "credit", str(files.skops), "--sample", str(files.sample)
        )
        validate = pool.submit(fresh.modelport, "validate", "credit@1")
        dask = pool.submit(
            fresh.modelport,
            "score",
            "credit",
            str(files.rows),
            "-o",
            str(fresh.root / "d.parquet"),
            "--engine",
            "dask",
        )
        grpc = pool.submit(
            fresh.modelport, "serve", "--port", str(free_port()), "--grpc-port", str(free_port())
        )
        # "check its form" was the answer to a well-formed PostgreSQL URL without its driver
        postgres = pool.submit(
            fresh.modelport, "models", MODELPORT_DATABASE_URL="postgresql://modelport@127.0.0.1:1/registry"
        )
    assert "pip install 'modelport[sklearn]'" in failure(skops.result())
    assert "pip install 'modelport[validate]'" in failure(validate.result())
    assert "pip install 'modelport[dask]'" in failure(dask.result())
    assert "pip install 'modelport[grpc]'" in failure(grpc.result())
    assert "pip install 'modelport[postgres]'" in failure(postgres.result())


def test_the_sklearn_extra_registers_a_pipeline(fresh: FreshVenv, files: Files, token: str) -> None:
    fresh.install("sklearn")
    registered = fresh.modelport(
        *("register", "credit", str(files.skops), "--sample", str(files.sample), "--target", "label"),
        "--json",
        MODELPORT_EQUIVALENCE_ROWS="300",
    )
    assert registered.returncode == 0, registered.stderr
    version = json.loads(registered.stdout)
    assert version["serving_format"] == "onnx" and version["conversion"]["status"] == "equivalent", version


def test_the_validate_extra_validates_with_a_load_test(fresh: FreshVenv, token: str, tmp_path: Path) -> None:
    fresh.install("validate")
    assert "locust" in fresh.installed()
    report = tmp_path / "report.md"
    # a one-second load test: what is proven is that Locust runs from the extra (p99 is the slowest
    # request either way, at 40 requests/s for 1 or 2 s)
    validated = fresh.modelport("validate", "credit@1", "--load", "40:2", "--report", str(report), "--json")
    assert validated.returncode == 0, validated.stdout[-3000:] + validated.stderr
    checks = {c["name"]: c["passed"] for c in json.loads(validated.stdout)["checks"]}
    assert checks["load"] and all(checks.values()), checks
    assert "## Load (Locust" in report.read_text()


TRITON_CALL = """
import sys
import numpy as np
import tritonclient.grpc as triton

url, token = sys.argv[1:]
with triton.InferenceServerClient(url=url) as client:
    tensor = triton.InferInput("input", [3, 6], "FP64")
    tensor.set_data_from_numpy(np.full((3, 6), 0.5))
    result = client.infer("credit", [tensor], headers={"authorization": f"Bearer {token}"})
    print(" ".join(label.decode() for label in result.as_numpy("label")))
"""


def test_the_grpc_extra_serves_the_newest_tritonclient_in_the_same_venv(
    fresh: FreshVenv, token: str, serve: list[Running]
) -> None:
    fresh.install("grpc", also=("tritonclient[grpc]",))
    installed = fresh.installed()
    # the newest: 2.73 needs protobuf < 7; the generated gRPC code used to need protobuf 7 (issue 14)
    assert tuple(int(p) for p in installed["tritonclient"].split(".")[:2]) >= (2, 73), installed
    port = free_port()
    start(fresh, serve, "--grpc-port", str(port))
    called = fresh.python(TRITON_CALL, f"127.0.0.1:{port}", token)
    assert called.returncode == 0, called.stderr
    assert all(label in CLASSES for label in called.stdout.split()) and len(called.stdout.split()) == 3

    # A protobuf older than the generated code (6.30): named, with the command that fixes it.
    fresh.install(also=("protobuf==5.29.5",))
    began = time.monotonic()
    old = fresh.modelport("serve", "--port", str(free_port()), "--grpc-port", str(free_port()))
    message = failure(old)
    assert "needs protobuf>=6.30.0 and grpcio>=1.72.1, found protobuf 5.29.5" in message, message
    assert "pip install --upgrade 'modelport[grpc]'" in message, message
    assert time.monotonic() - began < 60
