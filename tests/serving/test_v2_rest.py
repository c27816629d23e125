"""The Open Inference Protocol over REST, driven by the real tritonclient[http] and raw HTTP."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from modelport.app import open_registry
from modelport.settings import Settings
from tests.conftest import FEATURES
from tests.serving.conftest import Server


@pytest.fixture
def client(server: Server) -> Iterator[triton.InferenceServerClient]:
    # closed here, in this thread: left to the collector, its gevent pool may be closed in another
    # thread (one of a later test's), which gevent refuses (an unraisable error fails that test)
    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    yield client
    client.close()


def _expected(server: Server, ref: str, rows: pd.DataFrame) -> pd.DataFrame:
    registry = open_registry(Settings(home=server.home))
    try:
        return registry.predict(ref, rows)
    finally:
        registry.close()


def test_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "modelport" and "binary_tensor_data" in meta["extensions"]
    assert client.is_model_ready("credit")
    assert client.is_model_ready("credit", "2") and client.is_model_ready("credit", "staging")
    model = client.get_model_metadata("credit")
    assert model["parameters"]["version"] == 1 and model["parameters"]["aliases"] == ["production"]
    assert model["parameters"]["classes"] == ["c0", "c1", "c2"]
    assert {o["name"] for o in model["outputs"]} == {"label", "probabilities"}
    assert client.get_model_metadata("credit", "staging")["parameters"]["version"] == 2


@pytest.mark.parametrize("binary", [True, False])
def test_infer_matrix_binary_and_json(
    client: triton.InferenceServerClient, server: Server, data: pd.DataFrame, binary: bool
) -> None:
    rows = data[FEATURES].head(7)
    tensor = triton.InferInput("input", [7, len(FEATURES)], "FP64")
    tensor.set_data_from_numpy(rows.to_numpy(), binary_data=binary)
    outputs = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("label", "probabilities")]
    result = client.infer("credit", [tensor], model_version="production", outputs=outputs, request_id="req-7")
    expected = _expected(server, "credit@production", rows)
    assert [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")] == list(
        expected["label"]
    )
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), expected[["p_c0", "p_c1", "p_c2"]].to_numpy(), atol=1e-6
    )
    response = result.get_response()
    assert response["id"] == "req-7" and response["model_version"] == "1"


def test_infer_one_input_per_feature_fp32_and_requested_outputs(
    client: triton.InferenceServerClient, data: pd.DataFrame
) -> None:
    rows = data[FEATURES].head(3)
    inputs = []
    for name in FEATURES:
        tensor = triton.InferInput(name, [3], "FP32")
        tensor.set_data_from_numpy(rows[name].to_numpy(np.float32))
        inputs.append(tensor)
    result = client.infer(
        "credit", inputs, model_version="2", outputs=[triton.InferRequestedOutput("probabilities")]
    )
    assert result.as_numpy("label") is None
    assert result.as_numpy("probabilities").shape == (3, 3)
    assert result.get_response()["model_version"] == "2"


def test_version_header_and_default_route(server: Server, data: pd.DataFrame) -> None:
    body = {
        "inputs": [
            {"name": "input", "datatype": "FP64", "shape": [1, 6], "data": data[FEATURES].iloc[0].tolist()}
        ]
    }
    with server.client() as http:
        default = http.post("/v2/models/credit/infer", json=body)
        assert default.status_code == 200 and default.headers["x-model-version"] == "1"
        staging = http.post("/v2/models/credit/versions/staging/infer", content=json.dumps(body))
        assert (
            staging.headers["x-model-version"] == "2" and staging.json()["parameters"]["model_version"] == 2
        )


def test_bytes_binary_output_has_length_prefixes(server: Server, data: pd.DataFrame) -> None:
    body = {
        "inputs": [
            {
                "name": "input",
                "datatype": "FP64",
                "shape": [2, 6],
                "data": data[FEATURES].head(2).to_numpy().tolist(),
            }
        ],
        "outputs": [{"name": "label", "parameters": {"binary_data": True}}],
    }
    with server.client() as http:
        response = http.post("/v2/models/credit/infer", json=body)
    length = int(response.headers["inference-header-content-length"])
    header, blob = json.loads(response.content[:length]), response.content[length:]
    assert header["outputs"][0]["parameters"]["binary_data_size"] == len(blob)
    first = struct.unpack_from("<I", blob)[0]
    assert blob[4 : 4 + first].decode() in {"c0", "c1", "c2"}


@pytest.mark.parametrize(
    ("model", "version", "status", "message"),
    [
        ("nope", "", 404, "no model named 'nope'"),
        ("credit", "9", 404, "no version 9"),
        ("credit", "canary", 404, "no alias 'canary'"),
    ],
)
def test_unknown_models_and_versions(
    client: triton.InferenceServerClient, model: str, version: str, status: int, message: str
) -> None:
    tensor = triton.InferInput("input", [1, 6], "FP64")
    tensor.set_data_from_numpy(np.zeros((1, 6)))
    with pytest.raises(InferenceServerException) as caught:
        client.infer(model, [tensor], model_version=version)
    assert caught.value.status() == str(status) and message in caught.value.message()


def test_repository_and_statistics(client: triton.InferenceServerClient) -> None:
    index = client.get_model_repository_index()
    assert {(m["name"], m["version"]) for m in index} >= {("credit", "1"), ("credit", "2")}
    client.unload_model("credit")
    client.load_model("credit")
    assert client.is_model_ready("credit")
    stats = client.get_inference_statistics("credit")
    assert stats["model_stats"][0]["name"] == "credit"
    everything = client.get_inference_statistics()
    assert all(s["name"] == "credit" for s in everything["model_stats"])
    assert sum(s["inference_stats"]["success"]["count"] for s in everything["model_stats"]) > 0
