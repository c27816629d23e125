"""OpenID access tokens as bearer tokens, against a real provider (oidc-provider on Node.js, loopback):
a provider-signed token is accepted with the role and models its groups map to and is audited under
its identity; expired, wrong-audience, wrong-issuer, unknown-key, ``alg: none``, HS256-with-the-public-
key and tampered tokens are refused alike; rotated keys are picked up; API keys keep working."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from jwt.algorithms import RSAAlgorithm

from modelport.errors import InvalidInput
from modelport.security.oidc import REFUSED, SigningKeys, check_issuer_url
from tests.conftest import until
from tests.oidc.provider import (
    AUDIENCE,
    OTHER_AUDIENCE,
    Provider,
    free_port,
    new_keys,
    start_provider,
    stop_provider,
)
from tests.security.conftest import AUTH_FAILURE_BURST, INFER, ROW, Keys, open_home
from tests.serving.conftest import InProcess, serve_in_process

ROLES = {"risk": "consumer", "ml-publishers": "publisher", "platform-admins": "admin"}
SCOPES = {"risk": ["credit*"], "ml-publishers": ["credit*"]}


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    running = start_provider(tmp_path_factory.mktemp("oidc"))
    yield running
    stop_provider(running)


@pytest.fixture(scope="module")
def impostor(provider: Provider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    """A second issuer signing with the very same keys: only the ``iss`` check tells its tokens apart."""
    running = start_provider(tmp_path_factory.mktemp("impostor"), keys=provider.keys)
    yield running
    stop_provider(running)


def oidc_settings(issuer: str, **more: Any) -> dict[str, Any]:
    return {
        "oidc_issuer": issuer,
        "oidc_audience": AUDIENCE,
        "oidc_roles": ROLES,
        "oidc_scopes": SCOPES,
        "oidc_leeway_seconds": 0,  # the expiry test waits for a one-second token, not for the leeway
        "oidc_jwks_refetch_seconds": 0.2,
        "auth_failure_burst": AUTH_FAILURE_BURST,
        **more,
    }


@pytest.fixture(scope="module")
def app(keyed_home: Path, keys: Keys, provider: Provider) -> Iterator[InProcess]:
    with serve_in_process(keyed_home, insecure_dev=False, **oidc_settings(provider.issuer)) as running:
        yield running


def _audit(home: Path, **filters: object) -> list[dict[str, object]]:
    registry = open_home(home)
    try:
        return [r.to_dict() for r in registry.store.audit_records(**filters)]
    finally:
        registry.close()


def test_a_pipeline_token_infers_and_reads_within_its_groups_models(
    app: InProcess, provider: Provider
) -> None:
    with app.client(provider.token("reader")) as client:  # groups: risk → consumer of credit*
        assert client.post("/v2/models/credit/infer", json=INFER).status_code == 200
        assert {m["name"] for m in client.get("/api/v1/models").json()["models"]} == {"credit"}
        assert client.post("/v2/models/fraud/infer", json=INFER).status_code == 404  # outside its scope
        moved = client.put("/api/v1/models/credit/aliases/canary", json={"version": 2})
        assert moved.status_code == 403


def test_a_change_made_with_a_token_is_audited_under_its_identity(
    app: InProcess, provider: Provider, keyed_home: Path
) -> None:
    with app.client(provider.token("pipeline")) as client:  # groups: ml-publishers → publisher
        moved = client.put("/api/v1/models/credit/aliases/canary", json={"version": 2})
        assert moved.status_code == 200, moved.text
    actors = {record["actor"] for record in _audit(keyed_home) if record["target"] == "credit@canary"}
    assert "oidc:pipeline" in actors


def test_groups_that_map_to_no_role_are_refused(app: InProcess, provider: Provider) -> None:
    with app.client(provider.token("stranger")) as client:  # groups: visitors
        refused = client.post("/v2/models/credit/infer", json=INFER)
    assert refused.status_code == 403


def test_api_keys_keep_working_beside_tokens(app: InProcess, keys: Keys) -> None:
    with app.client(keys.consumer) as client:
        assert client.post("/v2/models/credit/infer", json=INFER).status_code == 200
    with app.client("mpk_aaaaaaaaaaaa_" + "x" * 40) as client:
        assert client.post("/v2/models/credit/infer", json=INFER).status_code == 401


# -- forgeries --------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"


def _claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def _private(jwk: dict[str, Any]) -> RSAPrivateKey:
    key = RSAAlgorithm.from_jwk(json.dumps(jwk))
    assert isinstance(key, RSAPrivateKey)
    return key


def _public_pem(provider: Provider) -> bytes:
    return (
        _private(provider.keys[0])
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def forge(kind: str, provider: Provider, impostor: Provider) -> str:
    if kind == "expired":
        token = provider.token("brief")  # lives one second
        expires = _claims(token)["exp"]
        until(lambda: time.time() > expires + 0.01, timeout=5, interval=0.05)
        return token
    if kind == "wrong audience":
        return provider.token("reader", resource=OTHER_AUDIENCE)
    if kind == "wrong issuer":
        return impostor.token("reader")  # same keys, same client, another issuer
    genuine = provider.token("reader")
    claims, kid = _claims(genuine), jwt.get_unverified_header(genuine)["kid"]
    if kind == "unknown kid":
        stranger = new_keys()
        return jwt.encode(claims, _private(stranger), "RS256", {"kid": stranger["kid"]})
    if kind == "known kid, other key":
        return jwt.encode(claims, _private(new_keys()), "RS256", {"kid": kid})
    if kind == "alg none":
        return _unsigned({"alg": "none", "typ": "at+jwt", "kid": kid}, claims) + "."
    if kind.startswith("HS256 with the public key"):
        public = {k: v for k, v in provider.keys[0].items() if k in ("kty", "n", "e", "kid", "alg", "use")}
        secret = _public_pem(provider) if kind.endswith("PEM") else json.dumps(public).encode()
        signing = _unsigned({"alg": "HS256", "typ": "at+jwt", "kid": kid}, claims)
        return signing + "." + _b64(hmac.new(secret, signing.encode(), hashlib.sha256).digest())
    if kind == "tampered groups":
        head, _, signature = genuine.split(".")
        return f"{head}.{_b64(json.dumps(claims | {'groups': ['platform-admins']}).encode())}.{signature}"
    raise AssertionError(kind)


FORGERIES = (
    "expired",
    "wrong audience",
    "wrong issuer",
    "unknown kid",
    "known kid, other key",
    "alg none",
    "HS256 with the public key as PEM",
    "HS256 with the public key as JWK",
    "tampered groups",
)


@pytest.mark.parametrize("kind", FORGERIES)
def test_forged_and_misdirected_tokens_are_refused_alike(
    app: InProcess, provider: Provider, impostor: Provider, kind: str
) -> None:
    token = forge(kind, provider, impostor)
    with app.client(token) as client:
        for answer in (
            client.post("/v2/models/credit/infer", json=INFER),
            client.get("/api/v1/models"),
        ):
            assert answer.status_code == 401, (kind, answer.text)
            assert answer.json()["error"] == REFUSED  # nothing says which check failed


def test_the_issuer_must_be_https_except_on_loopback() -> None:
    assert check_issuer_url("https://idp.example.com/realms/x")
    assert check_issuer_url("http://127.0.0.1:4711")
    for bad in ("http://idp.example.com", "http://10.0.0.1", "file:///etc/passwd", "ftp://x"):
        with pytest.raises(InvalidInput):
            check_issuer_url(bad)


def test_unknown_key_ids_cannot_make_the_server_hammer_the_provider(provider: Provider) -> None:
    keys = SigningKeys(provider.issuer, refetch_seconds=60)

    async def ask() -> list[object]:
        return [await keys.get(f"made-up-{n}") for n in range(50)]

    assert asyncio.run(ask()) == [None] * 50
    assert keys.fetches == 1


def test_an_unreachable_provider_fails_token_callers_with_503_and_api_keys_still_work(
    keyed_home: Path, keys: Keys, provider: Provider
) -> None:
    token = provider.token("reader")
    nowhere = f"http://127.0.0.1:{free_port()}"
    with serve_in_process(keyed_home, insecure_dev=False, **oidc_settings(nowhere)) as running:
        with running.client(token) as client:
            answer = client.post("/v2/models/credit/infer", json=INFER)
            assert answer.status_code == 503
            assert "signing keys cannot be fetched" in answer.json()["error"]
            assert "127.0.0.1" not in answer.json()["error"]
        with running.client(keys.consumer) as client:
            assert client.post("/v2/models/credit/infer", json=INFER).status_code == 200


def test_rotated_keys_are_picked_up(app: InProcess, provider: Provider) -> None:
    """Last in the module: it restarts the provider with a new signing key first and the old one still
    published (a rotation): the first token with the new kid makes the server refetch the JWKS."""
    before = provider.token("reader")
    old = provider.keys
    provider.restart([new_keys(), *old])
    after = provider.token("reader")
    assert jwt.get_unverified_header(after)["kid"] != jwt.get_unverified_header(before)["kid"]

    def accepted(token: str) -> bool:
        with app.client(token) as client:
            return client.post("/v2/models/credit/infer", json=INFER).status_code == 200

    assert until(lambda: accepted(after), timeout=10)  # the unknown kid made it refetch the JWKS
    assert accepted(before)  # still published


# -- the other protocols: gRPC (a real server, tritonclient) and the MLflow scoring route -----------


def test_tokens_on_grpc_and_mlflow_as_on_v2_rest(
    keyed_home: Path, provider: Provider, impostor: Provider, app: InProcess
) -> None:
    import numpy as np
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    from tests.serving.conftest import free_port as free
    from tests.serving.conftest import start_server, stop_server

    genuine = provider.token("reader")  # groups: risk → consumer of credit*
    with app.client(genuine) as client:
        scored = client.post("/endpoints/credit/invocations", json={"inputs": [ROW["data"][0]]})
        assert scored.status_code == 200, scored.text
    with app.client(forge("alg none", provider, impostor)) as client:
        assert (
            client.post("/endpoints/credit/invocations", json={"inputs": [ROW["data"][0]]}).status_code == 401
        )

    grpc_port = free()
    env = {
        f"MODELPORT_{k.upper()}": v if isinstance(v, str) else json.dumps(v)
        for k, v in oidc_settings(provider.issuer).items()
    }
    server = start_server(keyed_home, "--grpc-port", str(grpc_port), insecure_dev=False, env=env)
    try:
        row = triton.InferInput("input", [1, 6], "FP64")
        row.set_data_from_numpy(np.asarray(ROW["data"], dtype=np.float64))
        with triton.InferenceServerClient(f"127.0.0.1:{grpc_port}") as client:
            answer = client.infer("credit", [row], headers={"authorization": f"Bearer {genuine}"})
            assert answer.get_response().model_name == "credit"
            for token, status in (
                (forge("alg none", provider, impostor), "UNAUTHENTICATED"),
                (forge("wrong audience", provider, impostor), "UNAUTHENTICATED"),
                (forge("tampered groups", provider, impostor), "UNAUTHENTICATED"),
            ):
                with pytest.raises(InferenceServerException) as refused:
                    client.infer("credit", [row], headers={"authorization": f"Bearer {token}"})
                assert status in str(refused.value.status()), refused.value
            with pytest.raises(InferenceServerException) as hidden:  # outside the token's models
                client.infer("fraud", [row], headers={"authorization": f"Bearer {genuine}"})
            assert "NOT_FOUND" in str(hidden.value.status())
    finally:
        stop_server(server)
