"""Secure by default: every route but the probes answers 401 without a valid key — REST and gRPC, walked
from the route tables themselves so a new route cannot slip through untested."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from modelport.serving.openapi import paths_of
from modelport.serving.rest import RestApp
from tests.security.conftest import INFER, Keyed, Keys, bearer, make_key, open_home

PARAMS = {
    "name": "credit",
    "version": "1",
    "ref": "credit",
    "key": "abcdefghijkl",
    "alias": "production",
    "change": "1",
    "job": "job-0123456789ab",
    "webhook": "wh_0123456789abcdef",
    "delivery": "dlv_0123456789abcdef",
}
PROBES = {"/v2/health/live", "/v2/health/ready", "/ping", "/health"}


def concrete(pattern: re.Pattern[str]) -> str:
    """A real path for a route pattern: the OpenAPI template (optional parts included), filled in."""
    return re.sub(r"\{(\w+)\}", lambda m: PARAMS[m.group(1)], paths_of(pattern.pattern)[-1])


ROUTES = [(method, concrete(pattern), permission) for method, pattern, _, _, permission in RestApp.ROUTES]


def test_the_walk_covers_every_route() -> None:
    assert len(ROUTES) == len(RestApp.ROUTES) >= 25
    for method, path, _ in ROUTES:
        assert "(" not in path and "\\" not in path, path
        assert RestApp.match(RestApp.__new__(RestApp), method, path) is not None, (method, path)
    assert {path for _, path, permission in ROUTES if permission is None} == PROBES


@pytest.mark.parametrize("method, path, permission", ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_every_rest_route_needs_a_key(keyed: Keyed, method: str, path: str, permission: str | None) -> None:
    with keyed.client() as client:
        response = client.request(method, path, json=INFER if method in ("POST", "PUT") else None)
        if permission is None:
            assert response.status_code in (200, 503), (path, response.text)
            return
        assert response.status_code == 401, (method, path, response.status_code, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer")
        body = response.json()
        message = body.get("error") or body.get("message")
        assert "API key" in message
        for bad in ("Bearer mpk_abcdefghijkl_" + "x" * 43, "Basic YWRtaW46YWRtaW4=", "Bearer mpk_"):
            again = client.request(method, path, headers={"Authorization": bad}, json=None)
            assert again.status_code in (401, 429), (path, bad, again.status_code)
        # the server still serves
        assert client.get("/v2/health/ready").status_code == 200


def test_unknown_paths_do_not_reveal_the_route_table(keyed: Keyed, keys: Keys) -> None:
    with keyed.client() as client:
        assert client.get("/v2/nothing/here").status_code == 401
        assert client.get("/admin").status_code == 401
    with keyed.client(keys.consumer) as client:
        assert client.get("/v2/nothing/here").status_code == 404


def test_keys_are_accepted_as_bearer_or_x_api_key(keyed: Keyed, keys: Keys) -> None:
    with keyed.client() as client:
        path = "/v2/models/credit/infer"
        assert client.post(path, json=INFER, headers=bearer(keys.consumer)).status_code == 200
        assert client.post(path, json=INFER, headers={"X-API-Key": keys.consumer}).status_code == 200
        assert (
            client.post(path, json=INFER, headers={"authorization": f"bearer {keys.consumer}"}).status_code
            == 200
        )


def test_expired_revoked_and_rotated_keys(keyed: Keyed, keyed_home: Path) -> None:
    from modelport.security.store import KeyStore

    expired = make_key(keyed_home, "consumer", expires_in=timedelta(seconds=1))
    revoked = make_key(keyed_home, "consumer")
    rotated = make_key(keyed_home, "consumer")
    registry = open_home(keyed_home)
    try:
        store = KeyStore(registry.store)
        store.revoke(revoked.split("_")[1], actor="local:test")
        _, new_no_grace = store.rotate(rotated.split("_")[1], grace=timedelta(0), actor="local:test")
        graced = make_key(keyed_home, "consumer")
        _, new_graced = store.rotate(graced.split("_")[1], grace=timedelta(hours=1), actor="local:test")
        stored = {k.id: k for k in store.list_keys()}
    finally:
        registry.close()
    # Only digests are stored: no secret appears anywhere in the key rows.
    for token in (expired, revoked, rotated, new_no_grace, graced, new_graced):
        secret = token.split("_", 2)[2]
        assert all(secret not in repr(record) for record in stored.values())
    import time

    with keyed.client() as client:

        def status(token: str) -> int:
            return client.post("/v2/models/credit/infer", json=INFER, headers=bearer(token)).status_code

        # until the expiry has passed and the last change (the rotation of `graced`, after the others)
        # has reached the server: it polls the registry every 0.25 s
        deadline = time.monotonic() + 5
        while not (status(new_graced) == 200 and status(expired) == 401):
            assert time.monotonic() < deadline, "the expiry or the key changes never reached the server"
            time.sleep(0.05)
        assert status(expired) == 401
        assert status(revoked) == 401
        assert status(rotated) == 401 and status(new_no_grace) == 200
        assert status(graced) == 200 and status(new_graced) == 200  # the old secret is in its grace period


def test_every_grpc_rpc_needs_a_key(keyed: Keyed, keys: Keys) -> None:
    proto = (Path(__file__).parents[2] / "src/modelport/serving/protocol/inference.proto").read_text()
    rpcs = set(re.findall(r"rpc (\w+)\(", proto))
    tensor = triton_grpc.InferInput("input", [1, 6], "FP64")
    tensor.set_data_from_numpy(np.zeros((1, 6)))
    calls = {
        "ServerMetadata": lambda c, h: c.get_server_metadata(headers=h),
        "ModelReady": lambda c, h: c.is_model_ready("credit", headers=h),
        "ModelMetadata": lambda c, h: c.get_model_metadata("credit", headers=h),
        "ModelInfer": lambda c, h: c.infer("credit", [tensor], headers=h),
    }
    probes = {
        "ServerLive": lambda c, h: c.is_server_live(headers=h),
        "ServerReady": lambda c, h: c.is_server_ready(headers=h),
    }
    assert set(calls) | set(probes) == rpcs
    with triton_grpc.InferenceServerClient(f"127.0.0.1:{keyed.grpc_port}") as client:
        for name, probe in probes.items():
            assert probe(client, None), name
        for name, call in calls.items():
            for headers in (None, {"authorization": "Bearer mpk_abcdefghijkl_" + "y" * 43}):
                with pytest.raises(InferenceServerException) as refused:
                    call(client, headers)
                assert "UNAUTHENTICATED" in str(refused.value.status()), name
            assert call(client, {"authorization": f"Bearer {keys.consumer}"}) is not None, name
            assert call(client, {"x-api-key": keys.consumer}) is not None, name
        # a model outside the key's patterns does not exist, for gRPC too
        with pytest.raises(InferenceServerException) as hidden:
            client.get_model_metadata("fraud", headers={"x-api-key": keys.consumer})
        assert "NOT_FOUND" in str(hidden.value.status())


def test_tritonclient_http_with_a_key(keyed: Keyed, keys: Keys) -> None:
    client = triton_http.InferenceServerClient(keyed.server.url.removeprefix("http://"))
    tensor = triton_http.InferInput("input", [2, 6], "FP64")
    tensor.set_data_from_numpy(np.zeros((2, 6)), binary_data=True)
    result = client.infer("credit", [tensor], model_version="production", headers=bearer(keys.consumer))
    assert result.as_numpy("probabilities").shape[0] == 2
    with pytest.raises(InferenceServerException):
        client.infer("credit", [tensor], model_version="production")
    client.close()
