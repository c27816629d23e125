"""gRPC (inference.GRPCInferenceService) driven by the real tritonclient[grpc]."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from modelport.app import open_registry
from modelport.settings import Settings
from tests.conftest import FEATURES
from tests.serving.conftest import Server, free_port, start_server, stop_server


@pytest.fixture(scope="module")
def grpc_server(served_home: Path) -> Iterator[tuple[Server, int]]:
    port = free_port()
    running = start_server(served_home, "--grpc-port", str(port))
    yield running, port
    stop_server(running)


@pytest.fixture
def client(grpc_server: tuple[Server, int]) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(url=f"127.0.0.1:{grpc_server[1]}") as client:
        yield client


def test_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata().name == "modelport"
    assert client.is_model_ready("credit", "staging")
    meta = client.get_model_metadata("credit", "production")
    assert meta.platform.startswith("modelport-") and [o.name for o in meta.outputs] == [
        "label",
        "probabilities",
    ]


def test_infer_raw_matches_local_predictions(
    client: triton.InferenceServerClient, grpc_server: tuple[Server, int], data: pd.DataFrame
) -> None:
    rows = data[FEATURES].head(5)
    tensor = triton.InferInput("input", [5, 6], "FP64")
    tensor.set_data_from_numpy(rows.to_numpy())
    result = client.infer("credit", [tensor], model_version="staging", request_id="g1")
    registry = open_registry(Settings(home=grpc_server[0].home))
    try:
        expected = registry.predict("credit@staging", rows)
    finally:
        registry.close()
    assert [v.decode() for v in result.as_numpy("label")] == list(expected["label"])
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), expected[["p_c0", "p_c1", "p_c2"]].to_numpy(), atol=1e-6
    )
    response = result.get_response()
    assert response.model_version == "2" and response.id == "g1" and len(response.raw_output_contents) == 2


def test_large_message_above_4_mib(client: triton.InferenceServerClient) -> None:
    rows = 100_000  # 100k x 6 float64 = 4.8 MB
    tensor = triton.InferInput("input", [rows, 6], "FP64")
    tensor.set_data_from_numpy(np.random.default_rng(0).normal(size=(rows, 6)))
    result = client.infer("credit", [tensor], outputs=[triton.InferRequestedOutput("probabilities")])
    assert result.as_numpy("probabilities").shape == (rows, 3)


@pytest.mark.parametrize(
    ("model", "version", "shape", "code", "message"),
    [
        ("nope", "", [1, 6], "StatusCode.NOT_FOUND", "no model named 'nope'"),
        ("credit", "7", [1, 6], "StatusCode.NOT_FOUND", "no version 7"),
        ("credit", "", [1, 5], "StatusCode.INVALID_ARGUMENT", "send [rows, 6]"),
    ],
)
def test_errors(
    client: triton.InferenceServerClient, model: str, version: str, shape: list[int], code: str, message: str
) -> None:
    tensor = triton.InferInput("input", shape, "FP64")
    tensor.set_data_from_numpy(np.zeros(shape))
    with pytest.raises(InferenceServerException) as caught:
        client.infer(model, [tensor], model_version=version)
    assert caught.value.status() == code and message in caught.value.message()
    assert client.is_server_ready()


def test_hostile_declared_shape_is_refused_before_allocation(
    client: triton.InferenceServerClient, grpc_server: tuple[Server, int]
) -> None:
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    request = service_pb2.ModelInferRequest(model_name="credit")
    request.inputs.add(name="input", datatype="FP64", shape=[10**12, 10**12])
    request.raw_input_contents.append(b"\x00" * 8)
    with (
        grpc.insecure_channel(f"127.0.0.1:{grpc_server[1]}") as channel,
        pytest.raises(Exception) as caught,
    ):
        service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    assert "over the limit" in str(caught.value)
    assert client.is_server_ready()


def test_every_rpc_of_the_service_is_implemented() -> None:
    """The generated base class answers NotImplementedError; the servicer must override all of it.
    Checked in a fresh interpreter: tritonclient's own `inference` protos, imported here, share
    message names with ours in protobuf's default pool."""
    check = (
        "from modelport.serving.grpc import _Servicer\n"
        "from modelport.serving.protocol import inference_pb2 as pb, inference_pb2_grpc as pb_grpc\n"
        "rpcs = [m.name for m in pb.DESCRIPTOR.services_by_name['GRPCInferenceService'].methods]\n"
        "assert len(rpcs) == 6, rpcs\n"
        "missing = [r for r in rpcs if getattr(_Servicer, r) is getattr(pb_grpc.GRPCInferenceServiceServicer, r)]\n"
        "assert not missing, missing\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
