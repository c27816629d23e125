"""One serving pipeline for every protocol (docs/serving.md, "One pipeline"), tested the way users run
it: `modelport serve` with ONE worker, keys on, real third-party clients — tritonclient over V2 REST
JSON, the V2 binary extension and gRPC, and MLflow's JSON over `/endpoints/{REF}/invocations`.

Every protocol gets the same value checks with the model's policy (flag, then reject), the same
prediction log, the same release counts and shadow copies; the same admission order (rate before role
and scope); a large MLflow table is scored without stalling the worker's probes."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from modelport.app import open_registry
from modelport.monitoring.predictions import query
from modelport.releases.manager import ReleaseManager
from modelport.security.store import KeyStore
from modelport.settings import Settings
from tests.conftest import FEATURES, run_cli, until
from tests.serving.conftest import Server, free_port, start_server, stop_server

IN_RANGE = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
OUT_OF_RANGE = [1e6, 0.2, 0.3, 0.4, 0.5, 0.6]  # f0 far above anything in the sample
PROTOCOLS = ("v2-json", "v2-binary", "grpc", "mlflow")


@dataclass
class Answer:
    ok: bool
    code: str  # HTTP status as text, or the gRPC status code's name
    error_code: str = ""  # MLflow's error_code
    flags: dict[str, Any] | None = None
    version: int | None = None


@dataclass
class Running:
    server: Server
    grpc_port: int
    token: str
    home: Path


def _key(home: Path, role: str, models: list[str] | None = None, **limits: Any) -> str:
    registry = open_registry(Settings(home=home))
    try:
        created = KeyStore(registry.store).create(
            name=f"pipeline {role}", role=role, models=models, actor="local:test", **limits
        )
    finally:
        registry.close()
    assert created is not None
    return created[1]


@pytest.fixture(scope="module")
def running(served_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    home = tmp_path_factory.mktemp("pipeline") / "home"
    shutil.copytree(served_home, home)  # credit v1 (production) and v2 (staging), registered once
    registry = open_registry(Settings(home=home))
    try:
        ReleaseManager(registry).start("credit", "production", actor="local:test", shadow=2)
    finally:
        registry.close()
    logged = run_cli(home, "log-policy", "credit", "--sample", "1")
    assert logged.returncode == 0, logged.stderr
    token = _key(home, "consumer", ["credit*"])
    grpc_port = free_port()
    server = start_server(
        home,
        "--grpc-port",
        str(grpc_port),
        insecure_dev=False,  # the defaults: keys on, one worker
        env={
            "MODELPORT_PREDICTION_LOG_FLUSH_SECONDS": "0.2",
            "MODELPORT_RELEASE_FLUSH_SECONDS": "0.2",
        },
    )
    yield Running(server, grpc_port, token, home)
    stop_server(server)


def _call(running: Running, protocol: str, row: list[float], request_id: str = "") -> Answer:
    """One request with ``row`` through ``protocol``, with a real client of that protocol."""
    headers = {"Authorization": f"Bearer {running.token}"}
    if protocol in ("v2-json", "v2-binary"):
        # JSON, or the binary tensor extension exactly as tritonclient.http frames it (that client's
        # gevent pool cannot be closed from another thread, which the large-table test uses)
        tensor: dict[str, Any] = {"name": "input", "datatype": "FP64", "shape": [1, 6]}
        content: bytes
        extra: dict[str, str] = {"Content-Type": "application/json"}
        if protocol == "v2-binary":
            raw = np.array([row], dtype="<f8").tobytes()
            header = json.dumps(
                {"id": request_id, "inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}]}
            ).encode()
            content = header + raw
            extra = {
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(len(header)),
            }
        else:
            content = json.dumps({"id": request_id, "inputs": [{**tensor, "data": [row]}]}).encode()
        answer = httpx.post(
            f"{running.server.url}/v2/models/credit/infer",
            content=content,
            headers={**headers, **extra},
            timeout=30,
        )
        if answer.status_code != 200:
            return Answer(False, str(answer.status_code))
        document = answer.json()
        parameters = document.get("parameters", {})
        outputs = {o["name"]: o for o in document["outputs"]}
        assert outputs["probabilities"]["shape"] == [1, 3]
        return Answer(True, "200", flags=parameters.get("flags"), version=parameters["model_version"])
    if protocol == "grpc":
        import grpc
        import tritonclient.grpc as triton_grpc
        from tritonclient.utils import InferenceServerException

        grpc_input = triton_grpc.InferInput("input", [1, 6], "FP64")
        grpc_input.set_data_from_numpy(np.array([row]))
        with triton_grpc.InferenceServerClient(f"127.0.0.1:{running.grpc_port}") as client:
            try:
                result = client.infer(
                    "credit",
                    [grpc_input],
                    request_id=request_id,
                    headers={"authorization": headers["Authorization"]},  # gRPC: lower-case keys
                )
            except InferenceServerException as exc:
                return Answer(False, str(exc.status()).removeprefix("StatusCode."))
        response = result.get_response()
        flags = response.parameters["flags"].string_param if "flags" in response.parameters else ""
        assert result.as_numpy("probabilities").shape == (1, 3)
        del grpc
        return Answer(
            True, "OK", flags=json.loads(flags) if flags else None, version=int(response.model_version)
        )
    assert protocol == "mlflow"
    body = {"dataframe_split": {"columns": FEATURES, "data": [row]}}
    answer = httpx.post(
        f"{running.server.url}/endpoints/credit/invocations",
        json=body,
        headers={**headers, "X-Request-ID": request_id} if request_id else headers,
        timeout=30,
    )
    document = answer.json()
    if answer.status_code != 200:
        return Answer(False, str(answer.status_code), document.get("error_code", ""))
    assert len(document["predictions"]) == 1
    return Answer(True, "200", flags=document.get("flags"), version=int(answer.headers["x-model-version"]))


def _arms(home: Path) -> dict[str, dict[str, Any]]:
    registry = open_registry(Settings(home=home))
    try:
        status = ReleaseManager(registry).status("credit", "production", accuracy=lambda name: {})
    finally:
        registry.close()
    return dict(status["release"]["arms"])


def test_every_protocol_flags_logs_counts_and_mirrors(running: Running) -> None:
    """The flag policy (the default): an out-of-range row is answered with its flags on every
    protocol; every request reaches the prediction log (sampling 1), the release's primary-arm counts
    and the shadow (version 2), whichever protocol carried it."""
    counted = {"primary": 0, "shadow": 0}
    for protocol in PROTOCOLS:
        before = _arms(running.home)
        answers = [_call(running, protocol, IN_RANGE, f"{protocol}-{i}") for i in range(3)] + [
            _call(running, protocol, OUT_OF_RANGE, f"{protocol}-flagged")
        ]
        assert all(a.ok and a.version == 1 for a in answers), (protocol, answers)
        assert [a.flags for a in answers[:3]] == [None] * 3, protocol
        assert answers[3].flags == {"f0": {"above_range": 1}}, (protocol, answers[3])

        def grown(before: dict[str, dict[str, Any]] = before) -> bool:
            arms = _arms(running.home)
            return all(
                arms.get(arm, {}).get("requests", 0) - before.get(arm, {}).get("requests", 0) == 4
                for arm in ("primary", "shadow")
            )

        until(grown)  # counted by the primary arm and scored by the shadow, for this protocol too
        counted = {arm: n + 4 for arm, n in counted.items()}
    arms = _arms(running.home)
    assert arms["primary"]["requests"] == counted["primary"] == 16 and arms["primary"]["errors"] == 0
    assert arms["shadow"]["requests"] == 16 and arms["shadow"]["errors"] == 0

    wanted = {f"{p}-{i}" for p in PROTOCOLS for i in (0, 1, 2)} | {f"{p}-flagged" for p in PROTOCOLS}
    records = until(
        lambda: (
            (found := query(running.home, "credit", limit=10_000))
            and wanted <= {r["request_id"] for r in found}
            and found
        )
    )
    # the primary's answers (version 1); the shadow's (version 2) are logged too, as they come
    flagged = [r for r in records if r["request_id"].endswith("-flagged") and r["version"] == 1]
    assert len(flagged) == 4 and all(r["inputs"]["f0"] == 1e6 for r in flagged)
    assert until(
        lambda: (
            sum(
                r["request_id"].endswith("-flagged") and r["version"] == 2
                for r in query(running.home, "credit", limit=10_000)
            )
            == 4
        )
    )


def test_mlflow_records_with_unknown_or_missing_keys_are_refused(running: Running) -> None:
    headers = {"Authorization": f"Bearer {running.token}"}
    record = dict(zip(FEATURES, IN_RANGE, strict=True))
    misspelled = {("F0" if k == "f0" else k): v for k, v in record.items()}
    missing = {k: v for k, v in record.items() if k != "f5"}
    for body in ({"dataframe_records": [misspelled]}, {"dataframe_records": [record, missing]}):
        answer = httpx.post(
            f"{running.server.url}/endpoints/credit/invocations", json=body, headers=headers, timeout=30
        )
        assert answer.status_code == 400 and answer.json()["error_code"] == "BAD_REQUEST", answer.text
        assert "column" in answer.json()["message"]
    fine = httpx.post(
        f"{running.server.url}/endpoints/credit/invocations",
        json={"dataframe_records": [record]},
        headers=headers,
        timeout=30,
    )
    assert fine.status_code == 200


def test_metadata_describes_a_request_the_server_accepts(running: Running) -> None:
    """A client that builds its request from the model metadata alone gets an answer — with the
    listed inputs, and with the alternative form described in the parameters."""
    headers = {"Authorization": f"Bearer {running.token}"}
    with httpx.Client(base_url=running.server.url, headers=headers, timeout=30) as http:
        meta = http.get("/v2/models/credit").json()

        def request_for(inputs: list[dict[str, Any]]) -> dict[str, Any]:
            tensors = []
            for spec in inputs:
                shape = [2 if size == -1 else size for size in spec["shape"]]
                assert spec["datatype"] == "FP64"
                tensors.append({**spec, "shape": shape, "data": np.full(shape, 0.25).reshape(-1).tolist()})
            return {"inputs": tensors}

        listed = http.post("/v2/models/credit/infer", json=request_for(meta["inputs"]))
        assert listed.status_code == 200, listed.text
        assert [len(o["data"]) for o in listed.json()["outputs"]] == [2, 6]
        named = http.post("/v2/models/credit/infer", json=request_for(meta["parameters"]["named_inputs"]))
        assert named.status_code == 200, named.text
        assert listed.json()["outputs"] == named.json()["outputs"]


def test_admission_is_rate_then_role_then_scope_on_rest_and_grpc(running: Running) -> None:
    """One admission for every protocol: a key over its rate hears 429 / RESOURCE_EXHAUSTED before
    any decision about its role or its model scope."""
    import tritonclient.grpc as triton_grpc
    from tritonclient.utils import InferenceServerException

    # A rate of one request per 1,000 s: the first request passes the limiter, the rest do not.
    # `outsider` is made last: once the worker knows it, it knows the keys made before it (a reload
    # reads every key of the generation it sees)
    role_probe = _key(running.home, "consumer", ["credit*"], rate=0.001)
    grpc_outsider = _key(running.home, "consumer", ["other*"], rate=0.001)
    outsider = _key(running.home, "consumer", ["other*"], rate=0.001)
    tensor = triton_grpc.InferInput("input", [1, 6], "FP64")
    tensor.set_data_from_numpy(np.array([IN_RANGE]))

    def rest(token: str, method: str, path: str) -> int:
        return httpx.request(
            method,
            f"{running.server.url}{path}",
            headers={"Authorization": f"Bearer {token}"},
            json={} if method == "POST" else None,
            timeout=30,
        ).status_code

    def grpc_call(token: str) -> str:
        with triton_grpc.InferenceServerClient(f"127.0.0.1:{running.grpc_port}") as client:
            try:
                client.infer("credit", [tensor], headers={"authorization": f"Bearer {token}"})
            except InferenceServerException as exc:
                return str(exc.status()).removeprefix("StatusCode.")
        return "OK"

    # the worker picks up new keys within a poll; the outsider's first request meets its scope
    first = until(lambda: (status := rest(outsider, "GET", "/v2/models/credit")) != 401 and status, 5)
    assert first == 404
    # role: a consumer may not load models (403) — once; then its rate answers first
    assert rest(role_probe, "POST", "/v2/repository/models/credit/load") == 403
    assert rest(role_probe, "POST", "/v2/repository/models/credit/load") == 429
    # scope: now 429 on both protocols, never NOT_FOUND — the rate is decided first, by one gate
    assert rest(outsider, "POST", "/v2/models/credit/infer") == 429
    assert grpc_call(outsider) == "RESOURCE_EXHAUSTED"
    assert grpc_call(grpc_outsider) == "NOT_FOUND"
    assert grpc_call(grpc_outsider) == "RESOURCE_EXHAUSTED"
    assert rest(grpc_outsider, "GET", "/v2/models/credit") == 429


@pytest.mark.solo
def test_a_large_mlflow_table_does_not_stall_the_probes(running: Running) -> None:
    """300,000 rows as CSV on MLflow's route: decoding, checking, scoring and encoding run off the
    event loop, so liveness probes on the same (only) worker keep answering."""
    rng = np.random.default_rng(3)
    table = pd.DataFrame(rng.normal(size=(300_000, 6)), columns=FEATURES)
    body = table.to_csv(index=False).encode()
    done = threading.Event()
    answer: dict[str, Any] = {}

    def score() -> None:
        try:
            response = httpx.post(
                f"{running.server.url}/endpoints/credit/invocations",
                content=body,
                headers={"Authorization": f"Bearer {running.token}", "Content-Type": "text/csv"},
                timeout=120,
            )
            answer["response"] = response  # parsed after the probes: 300k records hold this
        finally:  # process's interpreter for ~0.2 s, which would be charged to the probes
            done.set()

    probes: list[float] = []
    with httpx.Client(base_url=running.server.url, timeout=30) as probe:
        probe.get("/v2/health/live")  # the connection is open before the table arrives
        worker = threading.Thread(target=score)
        worker.start()
        while not done.is_set():
            started = time.perf_counter()
            assert probe.get("/v2/health/live").status_code == 200
            probes.append(time.perf_counter() - started)
            time.sleep(0.02)
        worker.join()
    response = answer["response"]
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 300_000
    assert len(probes) >= 10, "the table was scored too quickly to probe anything"
    # Every probe within 100 ms (issue 13). Measured alone on the 2-core machine, this test's own client
    # on the same cores: median ~3 ms, the slowest 53-86 ms in three runs; 176-332 ms when the ONNX
    # labels of the answer were mapped by one np.unique over 300,000 strings (0.2 s holding the
    # interpreter). One probe may be late by a scheduling hiccup of the shared machine, not by a stall.
    probes.sort()
    print(
        f"probes: {len(probes)}, median {probes[len(probes) // 2] * 1000:.1f} ms, max {probes[-1] * 1000:.1f} ms"
    )
    assert probes[-2] < 0.1, f"second-slowest probe {probes[-2] * 1000:.0f} ms of {len(probes)}"
    assert probes[-1] < 0.15, f"slowest probe {probes[-1] * 1000:.0f} ms of {len(probes)}"


def test_every_protocol_refuses_values_under_the_reject_policy(running: Running) -> None:
    """Run last in this module: it switches the model's policy to reject."""
    registry = open_registry(Settings(home=running.home))
    try:
        registry.set_policy("credit", "reject")
    finally:
        registry.close()
    until(lambda: not _call(running, "v2-json", OUT_OF_RANGE).ok, timeout=10)  # the worker re-read it
    refused = {protocol: _call(running, protocol, OUT_OF_RANGE) for protocol in PROTOCOLS}
    assert refused["v2-json"].code == refused["v2-binary"].code == "400"
    assert refused["grpc"].code == "INVALID_ARGUMENT"
    assert (refused["mlflow"].code, refused["mlflow"].error_code) == ("400", "INVALID_PARAMETER_VALUE")
    assert all(_call(running, protocol, IN_RANGE).ok for protocol in PROTOCOLS)
