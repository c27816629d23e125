"""Many models per worker (serving/pool.py): every registered version answers, the loaded set stays
within the bound on *measured* memory, a cold load is loaded once however many requests wait for it
and does not stall requests for loaded models, and ``modelport_requests_in_flight`` counts what is in
flight on every protocol (summed over workers).

The models are ONNX files registered directly (no conversion): ``tiny-N`` are small linear classifiers
(a 300-byte file, ~200 kB once loaded), ``forest`` is a 2,000-tree ensemble whose session takes about a
second to build — the slow cold load the ordering tests need. Timings never decide a test: the cold
load's length only gives the other requests time to be seen.
"""

from __future__ import annotations

import concurrent.futures
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from onnx import TensorProto, helper
from prometheus_client.parser import text_string_to_metric_families

from modelport.app import open_registry
from modelport.errors import IntegrityFailure
from modelport.monitoring.metrics import render
from modelport.registry.artifacts import LocalArtifactStore
from modelport.registry.service import Registry
from modelport.serving.pool import ModelPool
from modelport.settings import Settings
from tests.conftest import FEATURES, until
from tests.serving.conftest import (
    free_port,
    new_connection_each,
    serve_in_process,
    start_server,
    stop_server,
)

TINY = 8
CLASSES = 3
ROW = [0.1, -0.2, 0.3, 0.5, -1.0, 2.0]
DEADLINE = 60.0


def _model(node: Any) -> bytes:
    graph = helper.make_graph(
        [node],
        "m",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, len(FEATURES)])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, CLASSES]),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    )
    model.ir_version = 8
    return bytes(model.SerializeToString())


def tiny_onnx(seed: int) -> bytes:
    """A linear classifier with its own coefficients: each ``tiny-N`` answers differently."""
    rng = np.random.default_rng(seed)
    return _model(
        helper.make_node(
            "LinearClassifier",
            ["X"],
            ["label", "probabilities"],
            domain="ai.onnx.ml",
            coefficients=rng.normal(size=CLASSES * len(FEATURES)).tolist(),
            intercepts=[0.0] * CLASSES,
            classlabels_ints=list(range(CLASSES)),
            post_transform="SOFTMAX",
        )
    )


def forest_onnx(trees: int = 2000, depth: int = 7) -> bytes:
    """Full binary trees of random splits: ~510,000 nodes, ~23 MB, a session that takes about a
    second to build (1,000 trees: 0.5 s on an idle core, 1.2 s on a busy two-core machine)."""
    rng = np.random.default_rng(7)
    inner, per = 2**depth - 1, 2 ** (depth + 1) - 1
    nodes: dict[str, list[Any]] = {k: [] for k in ("tree", "id", "feature", "mode", "value", "yes", "no")}
    leaves: dict[str, list[Any]] = {k: [] for k in ("tree", "id", "class", "weight")}
    for tree in range(trees):
        for node in range(per):
            branch = node < inner
            nodes["tree"].append(tree)
            nodes["id"].append(node)
            nodes["feature"].append(int(rng.integers(len(FEATURES))) if branch else 0)
            nodes["mode"].append("BRANCH_LEQ" if branch else "LEAF")
            nodes["value"].append(float(rng.normal()) if branch else 0.0)
            nodes["yes"].append(2 * node + 1 if branch else 0)
            nodes["no"].append(2 * node + 2 if branch else 0)
            if not branch:
                for label in range(CLASSES):
                    leaves["tree"].append(tree)
                    leaves["id"].append(node)
                    leaves["class"].append(label)
                    leaves["weight"].append(float(rng.normal()) / trees)
    return _model(
        helper.make_node(
            "TreeEnsembleClassifier",
            ["X"],
            ["label", "probabilities"],
            domain="ai.onnx.ml",
            nodes_treeids=nodes["tree"],
            nodes_nodeids=nodes["id"],
            nodes_featureids=nodes["feature"],
            nodes_modes=nodes["mode"],
            nodes_values=nodes["value"],
            nodes_truenodeids=nodes["yes"],
            nodes_falsenodeids=nodes["no"],
            class_treeids=leaves["tree"],
            class_nodeids=leaves["id"],
            class_ids=leaves["class"],
            class_weights=leaves["weight"],
            classlabels_int64s=list(range(CLASSES)),
            post_transform="SOFTMAX",
        )
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, data: pd.DataFrame) -> Path:
    """``tiny-0`` … ``tiny-7`` and ``forest``, registered once for the module (each test copies it)."""
    root = tmp_path_factory.mktemp("density")
    home = root / "home"
    registry = open_registry(Settings(home=home, golden_rows=10), create=True)
    files = [(f"tiny-{i}", tiny_onnx(i)) for i in range(TINY)] + [("forest", forest_onnx())]
    sample = data[FEATURES].head(200)

    def register(item: tuple[str, bytes]) -> None:
        path = root / f"{item[0]}.onnx"
        path.write_bytes(item[1])
        registry.register(path=path, name=item[0], sample=sample, alias="production")

    try:  # two at a time: each registration reads the file in a child process first
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            list(pool.map(register, files))
    finally:
        registry.close()
    return home


@pytest.fixture
def home(built: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(built, tmp_path / "home"))


@pytest.fixture
def registry(home: Path) -> Iterator[Registry]:
    opened = open_registry(Settings(home=home))
    yield opened
    opened.close()


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def memory_series(text: str) -> dict[tuple[str, int], float]:
    """The ``tiny-*``/``forest`` series of modelport_model_memory_bytes that are not 0."""
    found = {}
    for labels, value in samples(text, "modelport_model_memory_bytes").items():
        named = dict(labels)
        if (named["model"].startswith("tiny-") or named["model"] == "forest") and value:
            found[(named["model"], int(named["version"]))] = value
    return found


def loads_of(text: str, model: str) -> float:
    return samples(text, "modelport_model_load_seconds_count").get((("model", model), ("version", "1")), 0.0)


def body(row: list[float] = ROW) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 6], "data": row}]}


# -- the bound on measured memory ---------------------------------------------------------------------


def test_memory_is_measured_and_bounds_the_loaded_set(registry: Registry) -> None:
    pool = ModelPool(registry)
    pool.get("tiny-0", 1)  # onnxruntime's one-time set-up (~1.6 MB) is charged to a process's first
    pool.unload("tiny-0")  # session: this process may not have built one yet
    first = pool.get("tiny-0", 1)
    size = pool.memory()[("tiny-0", 1)]
    artifact = first.version.artifact("onnx")
    assert artifact is not None
    # An onnxruntime session of a 300-byte model keeps ~100 kB: artifact bytes would be no bound.
    assert size > 20 * artifact.size, (size, artifact.size)
    pool.max_bytes = int(size * 3.5)
    for i in range(1, TINY):
        pool.get(f"tiny-{i}", 1)
        assert pool.used_bytes <= pool.max_bytes
        assert pool.used_bytes == sum(pool.memory().values())
        assert set(pool.memory()) == set(pool.loaded())
    # identical models measure alike (no request runs meanwhile): the bound holds three of them
    assert 2 <= len(pool.loaded()) <= 4, pool.memory()
    assert pool.loaded()[-1] == (f"tiny-{TINY - 1}", 1)  # the newest stays; the oldest went first
    text = render().decode()
    assert memory_series(text) == {key: float(value) for key, value in pool.memory().items()}
    assert samples(text, "modelport_loaded_model_bytes")[()] == pool.used_bytes
    assert samples(text, "modelport_loaded_models")[()] == len(pool.loaded())
    pool.unload("tiny-7")
    assert ("tiny-7", 1) not in memory_series(render().decode())  # removed with the version


def test_a_version_larger_than_the_bound_still_serves_alone(registry: Registry) -> None:
    pool = ModelPool(registry, max_bytes=1)
    for i in range(3):
        loaded = pool.get(f"tiny-{i}", 1)
        assert pool.loaded() == [(f"tiny-{i}", 1)]
        assert loaded.predict(pd.DataFrame([ROW], columns=FEATURES)).labels is not None


def test_every_registered_model_answers_with_a_bound_that_holds_a_few(home: Path) -> None:
    size = 0
    with serve_in_process(home, max_loaded_bytes=1) as app, app.client() as client:
        # one model's measured size, to set a bound of one or two of them
        assert client.post("/v2/models/tiny-0/infer", json=body()).status_code == 200
        size = int(max(memory_series(client.get("/metrics").text).values()))
    bound = int(size * 1.5)
    with serve_in_process(home, max_loaded_bytes=bound) as app, app.client() as client:

        def ask(i: int) -> dict[str, Any]:
            answer = client.post(f"/v2/models/tiny-{i}/infer", json=body())
            assert answer.status_code == 200, answer.text
            return dict(answer.json())

        answers = [ask(i) for i in range(TINY)]
        with concurrent.futures.ThreadPoolExecutor(TINY) as threads:  # all cold at once, twice over
            answers += list(threads.map(ask, [*range(TINY), *range(TINY)]))
        assert {a["model_name"] for a in answers} == {f"tiny-{i}" for i in range(TINY)}
        scores = {a["model_name"]: tuple(a["outputs"][1]["data"]) for a in answers}
        assert len(set(scores.values())) == TINY  # each model answered with its own coefficients
        text = client.get("/metrics").text
        # Loads measured while other requests run here (the test's own client threads are in this
        # process too) vary more than alone; the sum stays within the bound whatever they measured.
        assert samples(text, "modelport_loaded_models")[()] < TINY
        assert samples(text, "modelport_loaded_model_bytes")[()] <= bound
        assert len(memory_series(text)) == samples(text, "modelport_loaded_models")[()]


# -- cold loads ---------------------------------------------------------------------------------------


def test_concurrent_requests_share_one_load(registry: Registry) -> None:
    pool = ModelPool(registry)
    before = loads_of(render().decode(), "forest")
    first = pool.load("forest", 1)
    assert not first.cancel()  # a waiter that gives up does not cancel the load for the others
    with concurrent.futures.ThreadPoolExecutor(4) as threads:
        got = list(threads.map(lambda _: pool.get("forest", 1), range(4)))
    assert pool.load("forest", 1).result() is first.result()
    assert all(loaded is first.result() for loaded in got)
    assert loads_of(render().decode(), "forest") == before + 1


def test_a_failed_load_fails_every_waiter_and_is_tried_again(registry: Registry, home: Path) -> None:
    version = registry.get("tiny-1@1")
    artifact = version.artifact("onnx")
    assert artifact is not None
    blob = LocalArtifactStore(home / "artifacts").path_for(artifact.digest)
    good = blob.read_bytes()
    blob.chmod(0o600)
    blob.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # one flipped bit
    pool = ModelPool(registry)
    failures = samples(render().decode(), "modelport_model_load_failures_total")
    labels = (("model", "tiny-1"), ("version", "1"))
    waiting = [pool.load("tiny-1", 1) for _ in range(3)]
    for future in waiting:
        with pytest.raises(IntegrityFailure):
            future.result()
    assert pool.loaded() == [] and pool.used_bytes == 0
    assert "digest" in pool.failures["tiny-1@1"].reason  # the repository index says why
    after = samples(render().decode(), "modelport_model_load_failures_total")
    assert after[labels] == failures.get(labels, 0) + 1  # one load failed, not three
    blob.write_bytes(good)
    assert pool.load("tiny-1", 1) is not waiting[0]  # a new load, not the failed one handed out again
    assert pool.get("tiny-1", 1).version.number == 1


def _in_flight(client: httpx.Client) -> float:
    return samples(client.get("/metrics").text, "modelport_requests_in_flight")[()]


def test_requests_for_loaded_models_are_answered_during_a_cold_load(home: Path) -> None:
    with serve_in_process(home) as app, app.client() as client:
        assert client.post("/v2/models/tiny-0/infer", json=body()).status_code == 200  # loaded
        cold = _in_thread(lambda: client.post("/v2/models/forest/infer", json=body()).status_code)
        until(lambda: _in_flight(client) == 1, timeout=DEADLINE, interval=0.005)
        hot = 0
        while not cold.done():
            assert client.post("/v2/models/tiny-0/infer", json=body()).status_code == 200
            hot += 1
        assert cold.result() == 200
    # The forest's session takes about a second to build; a request for tiny-0 takes about a
    # millisecond. Ten answered meanwhile show the load does not hold what they need.
    assert hot >= 10, hot


def test_a_slow_load_does_not_hold_back_other_cold_models(home: Path) -> None:
    with serve_in_process(home) as app, app.client() as client:
        forest = _in_thread(lambda: client.post("/v2/models/forest/infer", json=body()).status_code)
        until(lambda: _in_flight(client) == 1, timeout=DEADLINE, interval=0.005)
        # tiny-1 is cold too: its load starts once the forest's has run SLOW_LOAD_SECONDS (0.2 s)
        assert client.post("/v2/models/tiny-1/infer", json=body()).status_code == 200
        assert not forest.done(), "the forest loaded before tiny-1 was answered"
        assert forest.result(timeout=DEADLINE) == 200


def _in_thread(call: Any) -> concurrent.futures.Future[Any]:
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def run() -> None:
        try:
            future.set_result(call())
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    return future


# -- the in-flight gauge ------------------------------------------------------------------------------


def _grpc_infer(port: int, model: str) -> int:
    import tritonclient.grpc as triton

    with triton.InferenceServerClient(url=f"127.0.0.1:{port}") as grpc_client:
        tensor = triton.InferInput("input", [1, 6], "FP64")
        tensor.set_data_from_numpy(np.array([ROW]))
        grpc_client.infer(model, [tensor])
    return 200


def test_in_flight_counts_every_protocol(home: Path) -> None:
    """One slow cold load holds a request of each protocol for it (all four wait for the same load)."""
    port = free_port()
    server = start_server(home, "--grpc-port", str(port))
    binary = np.array([ROW], dtype=np.float64).tobytes()
    header = (
        b'{"inputs":[{"name":"input","datatype":"FP64","shape":[1,6],"parameters":{"binary_data_size":48}}]}'
    )
    try:
        with server.client() as client, new_connection_each(base_url=server.url, timeout=60) as other:
            assert _in_flight(client) == 0
            requests = [
                _in_thread(lambda: other.post("/v2/models/forest/infer", json=body()).status_code),
            ]
            until(lambda: _in_flight(client) == 1, timeout=DEADLINE, interval=0.005)
            requests += [
                _in_thread(
                    lambda: (
                        other.post(
                            "/v2/models/forest/infer",
                            content=header + binary,
                            headers={
                                "content-type": "application/octet-stream",
                                "inference-header-content-length": str(len(header)),
                            },
                        ).status_code
                    )
                ),
                _in_thread(
                    lambda: (
                        other.post(
                            "/endpoints/forest/invocations",
                            json={"dataframe_split": {"columns": FEATURES, "data": [ROW]}},
                        ).status_code
                    )
                ),
                _in_thread(lambda: _grpc_infer(port, "forest")),
            ]
            seen: list[float] = []

            def four_or_loaded() -> bool:
                seen.append(_in_flight(client))
                return seen[-1] == 4 or requests[0].done()

            until(four_or_loaded, timeout=DEADLINE, interval=0.005)
            assert seen[-1] == 4, f"the forest loaded before all four were seen in flight: {seen[-5:]}"
            assert [r.result(timeout=DEADLINE) for r in requests] == [200] * 4
            until(lambda: _in_flight(client) == 0, timeout=DEADLINE)
            assert loads_of(client.get("/metrics").text, "forest") == 1  # one load for four protocols
    finally:
        stop_server(server)


def test_in_flight_is_summed_over_workers(home: Path) -> None:
    server = start_server(home, "--workers", "2")
    try:
        with server.client() as client, new_connection_each(base_url=server.url, timeout=60) as other:
            # every scrape, whichever worker answers it, reads every worker's value (livesum)
            assert _in_flight(client) == 0
            cold = _in_thread(lambda: other.post("/v2/models/forest/infer", json=body()).status_code)
            until(lambda: _in_flight(client) == 1, timeout=DEADLINE, interval=0.005)
            assert cold.result(timeout=DEADLINE) == 200
            until(lambda: _in_flight(client) == 0, timeout=DEADLINE)
    finally:
        stop_server(server)
