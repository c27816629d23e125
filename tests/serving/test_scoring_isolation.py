"""A runaway model costs a request its timeout, never the worker (serving/scoring.py, serving/isolated.py).

Two real models that run away on request: an ONNX graph whose ``Loop`` trip count is the request's
first feature (stopped through onnxruntime's ``terminate``), and a scikit-learn pipeline that cannot be
converted to ONNX — so it is served natively, in the scoring process — and takes seconds on a large
batch (the process is killed at the deadline and replaced). Meanwhile the probes and the other models
of the same single worker answer at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import psutil
import pytest
import tritonclient.grpc as triton
from onnx import TensorProto, helper
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from tritonclient.utils import InferenceServerException

from modelport.app import open_registry
from modelport.settings import Settings
from tests.conftest import FEATURES
from tests.serving.conftest import Server, free_port, start_server, stop_server

TIMEOUT = 1.0  # every runaway call below costs it: lower than the default, well above any real answer


def _runaway_onnx(path: Path) -> None:
    """``y = f0 + f1 + n`` where ``n`` counts a Loop of ``int(f0)`` iterations: instant for the
    registration sample (0 ≤ f0 < 5), endless for f0 = 3e18."""
    body = helper.make_graph(
        [
            helper.make_node("Add", ["acc_in", "one"], ["acc_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, []),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, []),
        ],
        [helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])],
    )
    nodes = [
        helper.make_node(
            "Constant", [], ["zero"], value=helper.make_tensor("z", TensorProto.FLOAT, [], [0.0])
        ),
        helper.make_node(
            "Constant", [], ["true"], value=helper.make_tensor("t", TensorProto.BOOL, [], [True])
        ),
        helper.make_node(
            "Constant", [], ["at"], value=helper.make_tensor("a", TensorProto.INT64, [2], [0, 0])
        ),
        helper.make_node(
            "Constant", [], ["axes"], value=helper.make_tensor("x", TensorProto.INT64, [1], [1])
        ),
        helper.make_node("GatherND", ["input", "at"], ["first"]),
        helper.make_node("Cast", ["first"], ["trips"], to=TensorProto.INT64),
        helper.make_node("Loop", ["trips", "true", "zero"], ["count"], body=body),
        helper.make_node("ReduceSum", ["input", "axes"], ["total"], keepdims=0),
        helper.make_node("Add", ["total", "count"], ["variable"]),
    ]
    graph = helper.make_graph(
        nodes,
        "runaway",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.write_bytes(model.SerializeToString())


@pytest.fixture(scope="module")
def runaway_home(tmp_path_factory: pytest.TempPathFactory, data: pd.DataFrame, sklearn_model: object) -> Path:
    root = tmp_path_factory.mktemp("runaway")
    home = root / "home"
    rng = np.random.default_rng(0)
    sample = pd.DataFrame(rng.uniform(0, 5, (40, 2)), columns=["f0", "f1"])
    _runaway_onnx(root / "runaway.onnx")
    # FunctionTransformer(np.abs) has no ONNX converter: served natively (skops), in the scoring process
    train = pd.DataFrame(rng.normal(size=(200_000, 6)), columns=FEATURES)
    slow = Pipeline(
        [("abs", FunctionTransformer(np.abs)), ("knn", KNeighborsRegressor(n_neighbors=3, algorithm="brute"))]
    ).fit(train, train["f0"])
    registry = open_registry(Settings(home=home, equivalence_rows=50), create=True)
    try:
        registry.register(path=root / "runaway.onnx", name="runaway", sample=sample)
        registry.register(slow, name="slow", sample=train.head(30))
        registry.register(sklearn_model, name="credit", sample=data, target="label", alias="production")
    finally:
        registry.close()
    assert registry.store is not None
    return home


def _until_ready(url: str, model: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, timeout=30) as http:
        while http.get(f"/v2/models/{model}/ready").status_code != 200 and time.monotonic() < deadline:
            pass  # each probe waits for the load up to the request timeout


@pytest.fixture(scope="module")
def server(runaway_home: Path) -> Iterator[tuple[Server, int]]:
    grpc_port = free_port()
    env = {
        "MODELPORT_REQUEST_TIMEOUT_SECONDS": str(TIMEOUT),
        "MODELPORT_SCORING_HANG_LIMIT": "5",
        "MODELPORT_SCORING_REST_SECONDS": "600",
    }
    running = start_server(runaway_home, "--grpc-port", str(grpc_port), env=env)
    # Asking whether the native model is ready starts its scoring process and loads it (seconds): in
    # the background, while the runaway tests wait for their timeouts. The native test waits for it.
    warming = threading.Thread(target=_until_ready, args=(running.url, "slow"), daemon=True)
    warming.start()
    try:
        yield running, grpc_port
    finally:
        warming.join(30)
        stop_server(running)


def _runaway_row(f0: float) -> dict[str, object]:
    return {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 2], "data": [f0, 1.0]}]}


class Probe:
    """Liveness and another model, asked every 50 ms from another thread while a request runs away."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.worst = 0.0
        self.answers = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        row = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 6], "data": [0.1] * 6}]}
        with httpx.Client(base_url=self.url, timeout=10) as http:
            while not self._stop.is_set():
                started = time.monotonic()
                live = http.get("/v2/health/live")
                between = time.monotonic()
                other = http.post("/v2/models/credit/infer", json=row)
                self.worst = max(self.worst, between - started, time.monotonic() - between)
                self.answers += 1
                if live.status_code != 200 or other.status_code != 200:
                    self.failures.append(f"{live.status_code}/{other.status_code}")
                self._stop.wait(0.05)


def test_a_runaway_onnx_call_is_stopped_at_the_timeout(server: tuple[Server, int]) -> None:
    running, _ = server
    with httpx.Client(base_url=running.url, timeout=30) as http:
        assert http.post("/v2/models/runaway/infer", json=_runaway_row(3.0)).status_code == 200
        with Probe(running.url) as probe:
            started = time.monotonic()
            response = http.post("/v2/models/runaway/infer", json=_runaway_row(3e18))
            took = time.monotonic() - started
        assert response.status_code == 504, response.text
        assert f"within {TIMEOUT:g} s" in response.json()["error"]
        assert took < TIMEOUT + 3
        # both probes (live, another model) answered in under half a second each, throughout
        assert probe.answers >= 5 and not probe.failures and probe.worst < 0.5, (probe.worst, probe.failures)
        # the version still answers what it can
        assert http.post("/v2/models/runaway/infer", json=_runaway_row(2.0)).json()["outputs"][0]["data"] == [
            5.0
        ]


def test_mlflow_binary_and_grpc_take_the_same_guarded_path(server: tuple[Server, int]) -> None:
    running, grpc_port = server
    with httpx.Client(base_url=running.url, timeout=30) as http:
        header = b'{"inputs":[{"name":"input","datatype":"FP64","shape":[1,2],"parameters":{"binary_data_size":16}}]}'
        binary = http.post(
            "/v2/models/runaway/infer",
            content=header + np.array([3e18, 1.0], dtype="<f8").tobytes(),
            headers={"Inference-Header-Content-Length": str(len(header))},
        )
        assert binary.status_code == 504 and f"within {TIMEOUT:g} s" in binary.json()["error"], binary.text
        response = http.post(
            "/endpoints/runaway@1/invocations",
            json={"dataframe_split": {"columns": ["f0", "f1"], "data": [[3e18, 1.0]]}},
        )
        assert response.status_code == 504 and response.json()["error_code"] == "DEADLINE_EXCEEDED", (
            response.text
        )
    with triton.InferenceServerClient(url=f"127.0.0.1:{grpc_port}") as client:
        tensor = triton.InferInput("input", [1, 2], "FP64")
        tensor.set_data_from_numpy(np.array([[3e18, 1.0]]))
        with pytest.raises(InferenceServerException) as raised:
            client.infer("runaway", [tensor], model_version="1")
        assert (
            "DEADLINE_EXCEEDED" in str(raised.value.status()) and "did not answer" in raised.value.message()
        )


def _scoring_processes(server: Server) -> list[int]:
    """The pids of the worker's scoring processes (children running ``modelport.serving.isolated``)."""
    found = []
    for process in psutil.Process(server.process.pid).children(recursive=True):
        try:
            if "modelport.serving.isolated" in " ".join(process.cmdline()):
                found.append(process.pid)
        except psutil.NoSuchProcess:  # it exited between the listing and the look: gone is gone
            continue
    return found


def test_a_native_model_runs_in_a_scoring_process_that_is_replaced(server: tuple[Server, int]) -> None:
    running, _ = server
    # 60,000 rows × 200,000 neighbours to compare: tens of seconds of work, far past the timeout
    rows = np.random.default_rng(1).normal(size=(60_000, 6))
    big = {
        "inputs": [
            {"name": "input", "datatype": "FP64", "shape": list(rows.shape), "data": rows.ravel().tolist()}
        ]
    }
    one = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 6], "data": rows[0].tolist()}]}
    with httpx.Client(base_url=running.url, timeout=30) as http:
        # ready = loaded where it scores (the scoring process starts and loads it: seconds, not counted
        # against any request's timeout)
        deadline = time.monotonic() + 60
        while http.get("/v2/models/slow/ready").status_code != 200:  # 504 while it loads (the timeout)
            assert time.monotonic() < deadline, "the native model never became ready"
        first = http.post("/v2/models/slow/infer", json=one)
        assert first.status_code == 200, first.text
        scoring = _scoring_processes(running)
        assert len(scoring) == 1, scoring
        with Probe(running.url) as probe:
            started = time.monotonic()
            response = http.post("/v2/models/slow/infer", json=big)
            took = time.monotonic() - started
        assert response.status_code == 504, response.text
        assert took < TIMEOUT + 3
        assert probe.answers >= 5 and not probe.failures and probe.worst < 0.5, (probe.worst, probe.failures)
        # the killed scoring process was replaced (started again at once, the model reloaded into it)
        deadline = time.monotonic() + 60
        while http.get("/v2/models/slow/ready").status_code != 200:
            assert time.monotonic() < deadline, "the scoring process was not replaced"
        again = http.post("/v2/models/slow/infer", json=one)
        assert (
            again.status_code == 200
            and again.json()["outputs"][0]["data"] == first.json()["outputs"][0]["data"]
        )
        replaced = _scoring_processes(running)
        assert len(replaced) == 1 and replaced != scoring, (scoring, replaced)


def test_repeated_hangs_mark_the_version_failing(server: tuple[Server, int]) -> None:
    """Runs after the tests above (four misses so far: REST JSON, REST binary, MLflow, gRPC): the fifth
    (the fixture's limit) marks ``runaway@1`` failing, and it answers 503 at once."""
    running, _ = server
    with httpx.Client(base_url=running.url, timeout=30) as http:
        for _ in range(3):
            response = http.post("/v2/models/runaway/infer", json=_runaway_row(3e18))
            if response.status_code == 503:
                break
            assert response.status_code == 504
        started = time.monotonic()
        response = http.post("/v2/models/runaway/infer", json=_runaway_row(1.0))
        assert response.status_code == 503 and time.monotonic() - started < 1.0
        assert "is failing" in response.json()["error"]
        index = http.post("/v2/repository/index").json()
        assert any(e["name"] == "runaway" and "is failing" in e["reason"] for e in index)
        # the other models of the worker are untouched
        assert (
            http.post(
                "/v2/models/credit/infer",
                json={"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 6], "data": [0.1] * 6}]},
            ).status_code
            == 200
        )


def test_the_worker_runs_in_an_empty_directory(server: tuple[Server, int], runaway_home: Path) -> None:
    """A path a model file names (ONNX external data is resolved against the working directory) finds
    nothing of the host's: the worker's working directory is an empty one under the home."""
    running, _ = server
    cwd = Path(f"/proc/{running.process.pid}/cwd").readlink()
    assert cwd == (runaway_home / "run" / "cwd").resolve()
    assert list(cwd.iterdir()) == []
    assert cwd.stat().st_mode & 0o777 == 0o700
