"""The attack suite: OWASP API Security Top 10 (2023) classes that apply to modelport, path tricks,
pickles, hostile bodies. Every case asserts the safe outcome and that the server still answers a
known-good request afterwards.

    API1 object-level authorisation   models outside a key's scope, other keys' usage (test_roles, here)
    API2 broken authentication        no/bad/expired/revoked/rotated keys, guessing → 429 (test_routes, test_limits)
    API3 object property level        no secret or digest in any answer; no mass assignment (here)
    API4 resource consumption         body, element and shape limits, JSON depth, rate limits (here, test_limits)
    API5 function-level authorisation role escalation, management routes (test_roles, here)
    API6 sensitive business flows     quotas (test_limits)
    API7 server-side request forgery  no route fetches a URL a client supplies (here: URLs are inert)
    API8 security misconfiguration    no CORS, no server banner, HSTS with TLS, no stack traces (here, test_tls)
    API9 inventory management         unknown routes need a key; the OpenAPI document lists every route (test_openapi)
    API10 unsafe consumption of APIs  not applicable: modelport calls no third-party API on a request path
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.security.conftest import INFER, Keyed, Keys
from tests.serving.conftest import InProcess, serve_in_process

INFERENCE_ROUTES = (
    "/v2/models/credit/infer",
    "/v2/models/credit/versions/production/infer",
    "/invocations",
    "/endpoints/credit/invocations",
)


def still_serving(keyed: Keyed, keys: Keys) -> None:
    with keyed.client(keys.consumer) as client:
        response = client.post("/v2/models/credit/infer", json=INFER)
        assert response.status_code == 200, response.text


class Canary:
    """Unpickling this creates the canary file: proof that something unpickled it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.path), "w"))


@pytest.fixture
def canary(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "canary"
    yield path
    assert not path.exists(), "a pickle was unpickled"


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_pickles_are_never_unpickled(keyed: Keyed, keys: Keys, canary: Path, protocol: int) -> None:
    payload = pickle.dumps(Canary(canary), protocol=protocol)
    with keyed.client(keys.admin) as client:
        for path in INFERENCE_ROUTES:
            for content_type in (
                "application/python-pickle",
                "application/x-python-pickle",
                "application/octet-stream",
                "application/json",
                None,
            ):
                headers = {"Content-Type": content_type} if content_type else {}
                response = client.post(path, content=payload, headers=headers)
                assert response.status_code in (400, 415), (path, content_type, response.status_code)
                if (content_type and "pickle" in content_type) or protocol >= 2:
                    assert response.status_code == 415, (path, content_type)
        # as an "upload" to the management API
        response = client.put(
            "/api/v1/models/credit/aliases/x",
            content=payload,
            headers={"Content-Type": "application/python-pickle"},
        )
        assert response.status_code == 415
    still_serving(keyed, keys)


def test_pickle_bytes_inside_tensors_stay_bytes(keyed: Keyed, keys: Keys, canary: Path) -> None:
    import tritonclient.grpc as triton

    payload = pickle.dumps(Canary(canary), protocol=4)
    with triton.InferenceServerClient(f"127.0.0.1:{keyed.grpc_port}") as client:
        tensor = triton.InferInput("input", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([payload], dtype=object))
        with pytest.raises(Exception, match=r"INVALID_ARGUMENT|400|input"):
            client.infer("credit", [tensor], headers={"x-api-key": keys.consumer})
    still_serving(keyed, keys)


TRAVERSALS = [
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%252e%252e%252fetc%252fpasswd",
    "..%5C..%5Cwindows%5Cwin.ini",
    "%2Fetc%2Fpasswd",
    "credit%3B%20rm%20-rf",
    "credit%23fragment",
    "credit%3Fversion%3D1",
    "%00credit",
    "%2E%2E",
    "credit%2F..%2Ffraud",
]


@pytest.mark.parametrize("name", TRAVERSALS)
def test_path_tricks_in_model_names(keyed: Keyed, keys: Keys, name: str) -> None:
    with keyed.client(keys.admin) as client:
        for method, template in (
            ("GET", "/v2/models/{}"),
            ("POST", "/v2/models/{}/infer"),
            ("GET", "/v2/models/credit/versions/{}"),
            ("POST", "/endpoints/{}/invocations"),
            ("POST", "/v2/repository/models/{}/load"),
            ("PUT", "/api/v1/models/{}/aliases/production"),
            ("PUT", "/api/v1/models/credit/aliases/{}"),
        ):
            response = client.request(method, template.format(name), json=INFER if method != "GET" else None)
            assert response.status_code in (400, 404, 405, 415), (
                method,
                template,
                name,
                response.status_code,
            )
            text = response.text  # may echo the (decoded) path asked for; never a file or a server path
            assert "Traceback" not in text and "root:" not in text and str(Path.home()) not in text
    still_serving(keyed, keys)


def test_hostile_bodies(keyed: Keyed, keys: Keys) -> None:
    with keyed.client(keys.consumer) as client:
        deep = "[" * 100_000 + "]" * 100_000
        cases = [
            (
                {"inputs": [{"name": "input", "datatype": "FP64", "shape": [10**12, 10**12], "data": [1]}]},
                400,
            ),
            ({"inputs": [{"name": "input", "datatype": "FP64", "shape": [-1, 6], "data": [1]}]}, 400),
            ({"inputs": [{"name": "input", "datatype": "FP64", "shape": [2, 6], "data": [1, 2]}]}, 400),
            ({"inputs": [{"name": "input", "datatype": "PICKLE", "shape": [1], "data": [1]}]}, 400),
            ({"inputs": "everything"}, 400),
            ({}, 400),
        ]
        for body, status in cases:
            assert client.post("/v2/models/credit/infer", json=body).status_code == status, body
        assert client.post("/v2/models/credit/infer", content=f'{{"inputs": {deep}}}').status_code == 400
        big = b"{" + b" " * (65 << 20)
        assert client.post("/v2/models/credit/infer", content=big).status_code == 413
        assert client.post(
            "/invocations", content=b"\xff\xfe" * 100, headers={"Content-Type": "text/csv"}
        ).status_code in (400, 404)
    still_serving(keyed, keys)


def test_no_secrets_or_internals_in_answers(keyed: Keyed, keys: Keys, keyed_home: Path) -> None:
    secrets = [token.split("_", 2)[2] for token in (keys.admin, keys.publisher, keys.consumer, keys.other)]
    with keyed.client(keys.admin) as client:
        answers = [
            client.get("/api/v1/keys"),
            client.get("/api/v1/audit"),
            client.get("/api/v1/usage"),
            client.get("/api/v1/models"),
            client.get("/v2/models/credit"),
            client.post("/v2/models/credit/infer", json={"inputs": [{"name": "x"}]}),
            client.post(
                "/api/v1/keys", json={"name": "x", "role": "consumer", "secret_hash": "00"}
            ),  # mass assignment
        ]
        assert answers[-1].status_code == 400 and "secret_hash" in answers[-1].json()["error"]
    for answer in answers:
        for secret in secrets:
            assert secret not in answer.text
        assert "secret_hash" not in answer.text.replace("unexpected field(s): secret_hash", "")
        assert str(keyed_home) not in answer.text and "Traceback" not in answer.text
        assert "SELECT" not in answer.text and "sqlite" not in answer.text.lower()
        assert "server" not in answer.headers and "access-control-allow-origin" not in answer.headers


def test_urls_in_bodies_are_inert(keyed: Keyed, keys: Keys) -> None:
    with keyed.client(keys.consumer) as client:
        body = {
            "inputs": [{"name": "input", "datatype": "BYTES", "shape": [1], "data": ["http://127.0.0.1:1/"]}]
        }
        assert client.post("/v2/models/credit/infer", json=body).status_code == 400
        body2 = {**INFER, "parameters": {"callback": "http://169.254.169.254/latest/meta-data"}}
        assert client.post("/v2/models/credit/infer", json=body2).status_code == 200
    still_serving(keyed, keys)


def test_unusual_methods(keyed: Keyed, keys: Keys) -> None:
    with keyed.client(keys.admin) as client:
        for method in ("OPTIONS", "TRACE", "PATCH", "DELETE"):
            response = client.request(method, "/v2/models/credit/infer")
            assert response.status_code == 405, method
            assert "access-control-allow-origin" not in response.headers
    still_serving(keyed, keys)


@pytest.fixture(scope="module")
def pinned_hosts(keyed_home: Path, keys: Keys) -> Iterator[InProcess]:
    with serve_in_process(keyed_home, insecure_dev=False, allowed_hosts=["models.example.com"]) as app:
        yield app


def test_host_allowlist(pinned_hosts: InProcess, keys: Keys) -> None:
    with pinned_hosts.client(keys.consumer) as client:
        evil = client.post("/v2/models/credit/infer", json=INFER, headers={"Host": "evil.example"})
        assert evil.status_code == 400 and "Host" in evil.json()["error"]
        good = client.post("/v2/models/credit/infer", json=INFER, headers={"Host": "models.example.com"})
        assert good.status_code == 200


def test_insecure_dev_answers_localhost_names_only(keyed_home: Path) -> None:
    """An open development server is still no target for DNS rebinding from a web page."""
    with serve_in_process(keyed_home) as app, app.client() as client:  # insecure_dev
        assert client.post("/v2/models/credit/infer", json=INFER).status_code == 200
        rebound = client.post(
            "/v2/models/credit/infer", json=INFER, headers={"Host": "attacker.example:8080"}
        )
        assert rebound.status_code == 400
        assert client.get("/v2/health/ready", headers={"Host": "localhost:1234"}).status_code == 200


def test_insecure_dev_refuses_other_addresses(keyed_home: Path) -> None:
    import subprocess
    import sys

    exe = str(Path(sys.executable).with_name("modelport"))
    env = {**os.environ, "MODELPORT_HOME": str(keyed_home)}
    out = subprocess.run(
        [exe, "serve", "--insecure-dev", "--host", "0.0.0.0", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "127.0.0.1 only" in out.stderr
