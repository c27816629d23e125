"""Regression tests for the defects an adversarial review found in the access-control layer (each test
names the finding it pins down)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelport.app import create_app
from modelport.errors import StorageFailure, StoreNotReady
from modelport.security.ratelimit import FileBuckets
from modelport.security.store import KeyStore
from modelport.serving.http import public_message
from modelport.settings import Settings
from tests.security.conftest import INFER, Keyed, Keys, bearer, make_key, open_home
from tests.serving.conftest import InProcess, serve_in_process, start_server, stop_server


def test_a_failed_key_reload_is_retried_until_it_succeeds(keyed_home: Path, keys: Keys) -> None:
    """Finding 1: one failed reload must not leave a revoked key working until the next change."""
    app = create_app(Settings(home=keyed_home, route_poll_seconds=0.05))
    token = make_key(keyed_home, "consumer", ["credit*"])
    app.gate.reload()
    assert app.gate.ring.authenticate(token)
    keys_store = app.gate.keys
    assert keys_store is not None
    real = keys_store.list_keys
    failures = {"left": 1}

    def flaky(**kwargs: object) -> object:
        if failures["left"]:
            failures["left"] -= 1
            raise StoreNotReady("database locked")
        return real(**kwargs)  # type: ignore[arg-type]

    keys_store.list_keys = flaky  # type: ignore[method-assign,assignment]
    registry = open_home(keyed_home)
    try:
        KeyStore(registry.store).revoke(Keys.id_of(token), actor="local:test")
    finally:
        registry.close()

    async def poll_for(seconds: float) -> None:
        task = asyncio.create_task(app.worker.run_duties())
        await asyncio.sleep(seconds)
        task.cancel()

    asyncio.run(poll_for(1.0))
    assert failures["left"] == 0  # the failure happened
    with pytest.raises(Exception, match="API key"):
        app.gate.ring.authenticate(token)
    app.plane.pool.registry.close()


def _until_known(app: InProcess, token: str) -> None:
    """Until the app has loaded the key (it polls the registry every 0.25 s); asks what no quota or
    usage counts (model metadata)."""
    deadline = time.monotonic() + 5
    with app.client(token) as client:
        while client.get("/v2/models/credit").status_code == 401:
            assert time.monotonic() < deadline, "the new key never reached the app"
            time.sleep(0.05)


def _usage(app: InProcess, admin: str, key_id: str, until: Callable[[list[Any]], bool]) -> list[Any]:
    """The key's usage rows once ``until`` holds for them (the app adds its counts once a second)."""
    deadline = time.monotonic() + 10
    with app.client(admin) as client:
        while not until(rows := client.get(f"/api/v1/usage?key={key_id}").json()["usage"]):
            assert time.monotonic() < deadline, rows
            time.sleep(0.1)
    return list(rows)


def test_usage_counts_only_real_model_names_and_keeps_flowing(keyed_app: InProcess, keys: Keys) -> None:
    """Finding 2: an invalid (overlong) model name must not be counted, nor block later counts."""
    token = make_key(keyed_app.home, "consumer", ["credit*"])
    _until_known(keyed_app, token)
    with keyed_app.client(token) as client:
        assert (
            client.post(f"/endpoints/credit{'a' * 120}/invocations", json={"inputs": [[0.1] * 6]}).status_code
            == 404
        )
        for _ in range(3):
            assert client.post("/v2/models/credit/infer", json=INFER).status_code == 200
    rows = _usage(
        keyed_app, keys.admin, Keys.id_of(token), lambda rows: sum(r["requests"] for r in rows) >= 3
    )
    assert [(r["model"], r["requests"]) for r in rows] == [("credit", 3)]


def test_usage_leaves_out_models_that_do_not_exist(keyed_app: InProcess, keys: Keys) -> None:
    """Issue 14: docs/security.md says only requests naming a valid model are counted; well-formed
    names in the key's scope that no model has were billed (``credit-ghost``, 3 requests)."""
    token = make_key(keyed_app.home, "consumer", ["credit*"])
    _until_known(keyed_app, token)
    with keyed_app.client(token) as client:
        for path in (
            "/v2/models/credit-ghost/infer",
            "/v2/models/credit-ghost/versions/1/infer",
            "/v2/models/creditx@production/infer",
        ):
            assert client.post(path, json=INFER).status_code == 404, path
        ghost = client.post("/endpoints/credit-ghost/invocations", json={"inputs": [[0.1] * 6]})
        assert ghost.status_code == 404
        for _ in range(2):  # counted after the refusals: once these show, those would have too
            assert client.post("/v2/models/credit/infer", json=INFER).status_code == 200
    rows = _usage(
        keyed_app, keys.admin, Keys.id_of(token), lambda rows: sum(r["requests"] for r in rows) >= 2
    )
    assert [(r["model"], r["requests"], r["errors"]) for r in rows] == [("credit", 2, 0)]


def test_refusals_are_rate_limited_and_denials_do_not_flood_the_audit_log(
    keyed_app: InProcess, keyed_home: Path
) -> None:
    """Finding 3: a key over its rate gets 429 before its role is checked; denied attempts are
    audited at most ten at once, then one a second."""
    token = make_key(keyed_home, "consumer", ["credit*"], rate=2.0)
    unlimited = make_key(keyed_home, "consumer", ["credit*"])
    _until_known(keyed_app, unlimited)  # made after `token`: both are loaded
    with keyed_app.client(token) as client:
        statuses = [
            client.put(f"/api/v1/models/credit/aliases/x{i}", json={"version": 1}).status_code
            for i in range(20)
        ]
    assert statuses[:2] == [403, 403] and statuses[-10:] == [429] * 10
    with keyed_app.client(unlimited) as client:
        for i in range(40):
            assert client.put(f"/api/v1/models/credit/aliases/y{i}", json={"version": 1}).status_code == 403
    registry = open_home(keyed_home)
    try:
        denied = [
            r
            for r in registry.store.audit_records(action="denied")
            if r.actor == f"key:{Keys.id_of(unlimited)}"
        ]
    finally:
        registry.close()
    assert 10 <= len(denied) <= 13


def test_the_default_model_is_not_revealed_to_a_key_outside_its_scope(
    keyed_app: InProcess, keys: Keys
) -> None:
    """Finding 4: the keyed server's default model is credit@production; a fraud-only key learns
    nothing about it, and refusals are not billed."""
    other = Keys.id_of(keys.other)
    billed = sum(r["requests"] for r in _usage(keyed_app, keys.admin, other, lambda rows: True))
    with keyed_app.client(keys.other) as client:
        refused = client.post("/invocations", json={"inputs": [[0.1] * 6]})
        assert refused.status_code == 404 and "credit" not in refused.text
        hidden = client.post("/endpoints/credit@production/invocations", json={"inputs": [[0.1] * 6]})
        assert hidden.status_code == 404
        # a request the key may make, counted after the refusals: once it shows, they would have too
        assert client.post("/v2/models/fraud/infer", json=INFER).status_code == 200
    rows = _usage(keyed_app, keys.admin, other, lambda rows: sum(r["requests"] for r in rows) > billed)
    assert all(r["model"] != "credit" for r in rows)


def test_database_errors_say_nothing_about_the_database() -> None:
    """Finding 6: messages to clients never carry the database URL or file path."""
    leaky = StoreNotReady("cannot use the registry database postgresql+psycopg://postgres@db:5432/prod: down")
    assert "postgres" not in public_message(leaky)
    assert "sqlite" not in public_message(StorageFailure("the registry database sqlite:////srv/x.db refused"))


def test_control_characters_in_query_parameters(keyed: Keyed, keys: Keys) -> None:
    with keyed.client(keys.admin) as client:
        assert client.get("/api/v1/usage?model=%00").status_code == 400
        assert client.get("/api/v1/audit?target=a%0Ab").status_code == 400


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/credit/versions/%C2%B2",
        "/v2/models/credit/versions/%C2%B2/ready",
        "/v2/models/credit/versions/7/ready",
        "/v2/models/credit/versions/7/stats",
        "/v2/models/credit/versions/0",
        "/v2/models/credit/versions/99999999999999999999999",
    ],
)
def test_malformed_or_unknown_versions_are_404(keyed: Keyed, keys: Keys, path: str) -> None:
    """Finding 7."""
    with keyed.client(keys.consumer) as client:
        assert client.get(path).status_code == 404
        assert (
            client.post("/v2/models/credit/versions/99999999999999999999999/infer", json=INFER).status_code
            == 404
        )


def test_malformed_versions_over_grpc(keyed: Keyed, keys: Keys) -> None:
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    with triton.InferenceServerClient(f"127.0.0.1:{keyed.grpc_port}") as client:
        for version in ("²", "99999999999999999999999", "7"):
            with pytest.raises(InferenceServerException) as refused:
                client.get_model_metadata("credit", version, headers={"x-api-key": keys.consumer})
            assert "NOT_FOUND" in str(refused.value.status()), version
            assert "Python" not in str(refused.value) and "SQLite" not in str(refused.value)


def test_key_fields_cannot_crash_or_widen_a_key(keyed: Keyed, keys: Keys) -> None:
    """Findings 8 and 9: absurd expiry or rate → 400; an empty or false-y scope never means every model."""
    with keyed.client(keys.admin) as admin:
        for body in (
            {"name": "x", "role": "consumer", "expires": "999999w"},
            {"name": "x", "role": "consumer", "rate": "1" + "0" * 400 + "/s"},
            {"name": "x", "role": "consumer", "models": []},
            {"name": "x", "role": "consumer", "models": False},
            {"name": "x", "role": "consumer", "models": [1]},
        ):
            assert admin.post("/api/v1/keys", json=body).status_code == 400, body
        target = Keys.id_of(keys.consumer)
        patches: list[dict[str, object]] = [{"models": []}, {"models": None}, {"models": False}]
        for body in patches:
            assert admin.patch(f"/api/v1/keys/{target}", json=body).status_code == 400, body
    with keyed.client(keys.consumer) as consumer:
        assert consumer.get("/v2/models/fraud").status_code == 404


def test_a_crowded_bucket_table_keeps_limited_buckets(tmp_path: Path) -> None:
    """Finding 10: twenty thousand passing clients must not reset a spent bucket."""
    buckets = FileBuckets(tmp_path / "buckets")
    assert buckets.take_now("key:victim", 0.001, 1.0) == 0.0
    assert buckets.take_now("key:victim", 0.001, 1.0) > 0
    for i in range(20_000):
        buckets.take_now(f"addr:client-{i}", 5.0, 20.0)
    assert buckets.take_now("key:victim", 0.001, 1.0) > 0, "the spent bucket was reset"
    buckets.close()


def test_rest_and_grpc_share_one_failure_budget(keyed_home: Path, tmp_path: Path) -> None:
    """Finding 11: 25 failures over REST and the address is refused over gRPC too."""
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    from tests.serving.conftest import free_port

    grpc_port = free_port()
    env = {
        "MODELPORT_DATABASE_URL": f"sqlite:///{keyed_home / 'registry.db'}",
        "MODELPORT_ARTIFACT_URL": (keyed_home / "artifacts").as_uri(),
        # a burst of 20 that barely refills: the test does not depend on how fast this machine is
        "MODELPORT_AUTH_FAILURE_RATE": "0.01",
    }
    server = start_server(tmp_path / "home", "--grpc-port", str(grpc_port), insecure_dev=False, env=env)
    try:
        for i in range(25):
            httpx.get(f"{server.url}/v2", headers=bearer(f"mpk_abcdefghijkl_{i:043d}"))
        with triton.InferenceServerClient(f"127.0.0.1:{grpc_port}") as client:
            tensor = triton.InferInput("input", [1, 6], "FP64")
            tensor.set_data_from_numpy(np.zeros((1, 6)))
            with pytest.raises(InferenceServerException) as refused:
                client.infer("credit", [tensor], headers={"x-api-key": "mpk_abcdefghijkl_" + "z" * 43})
            assert "RESOURCE_EXHAUSTED" in str(refused.value.status())
    finally:
        stop_server(server)


def test_wrong_methods_need_a_key_before_they_are_named(keyed: Keyed) -> None:
    """Finding 13: without a key, a wrong method is 401 like an unknown path; probes stay open."""
    with keyed.client() as client:
        assert client.get("/api/v1/keys/abcdefghijkl").status_code == 401
        assert client.request("HEAD", "/v2/models/anything").status_code == 401
        assert client.delete("/v2/models/credit/infer").status_code == 401
        assert client.post("/v2/health/ready").status_code == 405  # a probe path: no key needed


@pytest.fixture(scope="module")
def pinned(keyed_home: Path, keys: Keys) -> Iterator[InProcess]:
    """The keyed app, answering for api.example.com only."""
    with serve_in_process(keyed_home, insecure_dev=False, allowed_hosts=["api.example.com"]) as app:
        yield app


@pytest.mark.parametrize("host", ["api.example.com:1@evil.com", "[api.example.com]", "evil.com/x", "a b"])
def test_host_header_tricks(pinned: InProcess, keys: Keys, host: str) -> None:
    with pinned.client(keys.consumer) as client:
        response = client.post("/v2/models/credit/infer", json=INFER, headers={"Host": host})
        assert response.status_code == 400
        ok = client.post("/v2/models/credit/infer", json=INFER, headers={"Host": "api.example.com:8443"})
        assert ok.status_code == 200
