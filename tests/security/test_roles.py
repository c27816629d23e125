"""Roles and scopes: consumer < publisher < admin; models outside a key's patterns do not exist for it;
role failures are 403 and audited; the management API takes JSON only. Through the app in-process."""

from __future__ import annotations

import time
from pathlib import Path

from modelport.security.store import KeyStore
from tests.security.conftest import INFER, Keys, open_home
from tests.serving.conftest import InProcess


def _audit(home: Path, **filters: object) -> list[dict[str, object]]:
    registry = open_home(home)
    try:
        return [r.to_dict() for r in registry.store.audit_records(**filters)]
    finally:
        registry.close()


def test_a_model_outside_the_scope_is_indistinguishable_from_a_missing_one(
    keyed_app: InProcess, keys: Keys
) -> None:
    with keyed_app.client(keys.consumer) as client:
        for path in ("/v2/models/{}", "/v2/models/{}/ready", "/v2/models/{}/versions/1"):
            hidden = client.get(path.format("fraud"))
            missing = client.get(path.format("nosuch"))
            assert hidden.status_code == missing.status_code == 404
            assert hidden.json()["error"].replace("fraud", "X") == missing.json()["error"].replace(
                "nosuch", "X"
            )
        hidden = client.post("/v2/models/fraud/infer", json=INFER)
        assert hidden.status_code == 404
        assert (
            client.post("/endpoints/fraud@production/invocations", json={"inputs": [[0.1] * 6]}).status_code
            == 404
        )
        # listings show only what the key may see
        names = {entry["name"] for entry in client.post("/v2/repository/index").json()}
        assert names == {"credit"}
        assert {m["name"] for m in client.get("/api/v1/models").json()["models"]} == {"credit"}
        assert client.post("/v2/models/credit/infer", json=INFER).status_code == 200
    with keyed_app.client(keys.other) as client:
        assert client.post("/v2/models/fraud/infer", json=INFER).status_code == 200
        assert client.post("/v2/models/credit/infer", json=INFER).status_code == 404


def test_role_failures_are_403_and_audited(keyed_app: InProcess, keys: Keys, keyed_home: Path) -> None:
    consumer_id = Keys.id_of(keys.consumer)
    with keyed_app.client(keys.consumer) as client:
        moved = client.put("/api/v1/models/credit/aliases/production", json={"version": 2})
        assert moved.status_code == 403 and "may not publish" in moved.json()["error"]
        assert client.get("/api/v1/keys").status_code == 403
        escalate = client.post("/api/v1/keys", json={"name": "me", "role": "admin"})
        assert escalate.status_code == 403
        assert client.post("/v2/repository/models/credit/unload").status_code == 403
        assert client.get("/v2/health/ready").status_code == 200
    with keyed_app.client(keys.publisher) as client:
        assert client.get("/api/v1/keys").status_code == 403
        assert client.post("/api/v1/keys", json={"name": "me", "role": "admin"}).status_code == 403
    denied = _audit(keyed_home, action="denied")
    actors = [record["actor"] for record in denied]
    assert actors.count(f"key:{consumer_id}") >= 4
    assert actors.count(f"key:{Keys.id_of(keys.publisher)}") >= 2
    assert any(record["target"] == "POST /api/v1/keys" for record in denied)


def test_publisher_moves_aliases_within_its_patterns_and_is_the_recorded_actor(
    keyed_app: InProcess, keys: Keys, keyed_home: Path
) -> None:
    publisher_id = Keys.id_of(keys.publisher)
    with keyed_app.client(keys.publisher) as client:
        moved = client.put("/api/v1/models/credit/aliases/canary", json={"version": 2})
        assert moved.status_code == 200, moved.text
        assert moved.json() == {
            "model": "credit",
            "alias": "canary",
            "version": 2,
            "status": "applied",
            "action": "set",
        }
        assert client.put("/api/v1/models/fraud/aliases/canary", json={"version": 1}).status_code == 404
        assert client.put("/api/v1/models/credit/policy", json={"on_violation": "reject"}).status_code == 200
        assert client.put("/api/v1/models/credit/policy", json={"on_violation": "flag"}).status_code == 200
        assert client.delete("/api/v1/models/credit/aliases/canary").status_code == 200
        # bad input: precise 4xx, nothing changed
        bodies: list[object] = [
            {"version": "2"},
            {"version": True},
            {"version": 99},
            {"version": 2, "extra": 1},
            [],
        ]
        for body in bodies:
            assert client.put("/api/v1/models/credit/aliases/canary", json=body).status_code in (400, 404)
        assert client.put("/api/v1/models/credit/aliases/..%2f..", json={"version": 1}).status_code in (
            400,
            404,
        )
        assert client.put("/api/v1/models/credit/aliases/latest", json={"version": 1}).status_code == 400
    records = [r for r in _audit(keyed_home, actor=f"key:{publisher_id}") if r["action"] != "denied"]
    assert [r["action"] for r in records] == ["alias.set", "policy.set", "policy.set", "alias.remove"]
    assert records[0]["target"] == "credit@canary" and records[0]["after"] == {"version": 2}
    assert records[1]["before"] == {"on_violation": "flag"} and records[1]["after"] == {
        "on_violation": "reject"
    }


def test_admin_manages_keys_over_the_api(keyed_app: InProcess, keys: Keys, keyed_home: Path) -> None:
    with keyed_app.client(keys.admin) as admin:
        created = admin.post(
            "/api/v1/keys",
            json={
                "name": "partner",
                "role": "consumer",
                "models": ["credit"],
                "expires": "30d",
                "rate": "100/s",
            },
        )
        assert created.status_code == 201, created.text
        token, key = created.json()["token"], created.json()["key"]
        assert key["role"] == "consumer" and key["rate_per_second"] == 100.0 and key["status"] == "active"
        assert "secret_hash" not in key and token.split("_", 2)[2] not in admin.get("/api/v1/keys").text
        with keyed_app.client(token) as partner:
            assert partner.post("/v2/models/credit/infer", json=INFER).status_code == 200
            changed = admin.patch(f"/api/v1/keys/{key['id']}", json={"models": ["fraud"], "rate": None})
            assert changed.status_code == 200, changed.text
            assert (
                changed.json()["key"]["models"] == ["fraud"]
                and changed.json()["key"]["rate_per_second"] is None
            )
            assert partner.post("/v2/models/credit/infer", json=INFER).status_code == 404
            assert partner.post("/v2/models/fraud/infer", json=INFER).status_code == 200
            patches: list[object] = [{}, {"models": "x"}, {"rate": "fast"}, {"role": "admin"}, {"expires": 5}]
            for bad in patches:
                assert admin.patch(f"/api/v1/keys/{key['id']}", json=bad).status_code == 400, bad
            assert admin.patch("/api/v1/keys/zzzzzzzzzzzz", json={"rate": "1/s"}).status_code == 404
            assert admin.patch(f"/api/v1/keys/{key['id']}", json={"models": ["credit"]}).status_code == 200
            rotated = admin.post(f"/api/v1/keys/{key['id']}/rotate", json={"grace": "0s"})
            assert rotated.status_code == 200
            new_token = rotated.json()["token"]
            assert admin.delete(f"/api/v1/keys/{key['id']}").json()["key"]["status"] == "revoked"
        for bad in (
            {"name": "x", "role": "root"},
            {"name": "", "role": "consumer"},
            {"name": "x", "role": "consumer", "expires": "forever"},
            {"name": "x", "role": "consumer", "rate": "-1/s"},
            {"name": "x", "role": "consumer", "quota": "5/year"},
            {"name": "x", "role": "consumer", "models": ["../etc"]},
            {"name": "x", "role": "consumer", "models": "credit"},
            {"role": "consumer"},
        ):
            assert admin.post("/api/v1/keys", json=bad).status_code == 400, bad
        assert admin.delete("/api/v1/keys/zzzzzzzzzzzz").status_code == 404
        assert admin.post("/api/v1/keys/zzzzzzzzzzzz/rotate", json={}).status_code == 404
        # JSON only: no cross-site "simple request" can create a key
        for content_type, body in (
            ("text/plain", '{"name": "x", "role": "admin"}'),
            ("application/x-www-form-urlencoded", "name=x&role=admin"),
            ("multipart/form-data; boundary=b", "--b--"),
        ):
            response = admin.post("/api/v1/keys", content=body, headers={"Content-Type": content_type})
            assert response.status_code == 415, content_type
        assert "access-control-allow-origin" not in {h.lower() for h in admin.get("/api/v1/keys").headers}
    registry = open_home(keyed_home)
    try:
        names = [k.name for k in KeyStore(registry.store).list_keys()]
    finally:
        registry.close()
    assert names.count("partner") == 1 and "x" not in names and "me" not in names
    with keyed_app.client(new_token) as revoked:
        deadline = time.monotonic() + 5  # the revocation reaches the app's keys within a poll (0.25 s)
        while (status := revoked.post("/v2/models/credit/infer", json=INFER).status_code) == 200:
            assert time.monotonic() < deadline, "the revoked key still works"
            time.sleep(0.05)
        assert status == 401
