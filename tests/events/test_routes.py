"""``/api/v1/webhooks`` on an in-process server: admin only, SSRF refused with 400, a real alias move
delivered by the worker's own background duties, dead letters retried over the API."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import until
from tests.events.conftest import FAST, Receiver
from tests.security.conftest import make_key
from tests.serving.conftest import InProcess, registered_home, serve_in_process


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, data: pd.DataFrame, sklearn_model: object) -> Path:
    return registered_home(
        "served", tmp_path_factory.mktemp("hooks") / "home", tmp_path_factory, data, sklearn_model
    )


@pytest.fixture(scope="module")
def tokens(home: Path) -> dict[str, str]:
    return {role: make_key(home, role) for role in ("admin", "publisher", "consumer")}


@pytest.fixture(scope="module")
def app(home: Path, tokens: dict[str, str]) -> Iterator[InProcess]:
    with serve_in_process(home, insecure_dev=False, **FAST) as app:
        yield app


def test_only_admins_manage_webhooks(app: InProcess, tokens: dict[str, str]) -> None:
    for role in ("publisher", "consumer"):
        with app.client(tokens[role]) as client:
            assert client.get("/api/v1/webhooks").status_code == 403
            assert client.post("/api/v1/webhooks", json={"url": "https://93.184.216.34/"}).status_code == 403


@pytest.mark.parametrize(
    "url",
    [
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.1/x",
        "https://[::1]/x",
        "https://[::ffff:127.0.0.1]/x",
    ],
)
def test_unsafe_urls_are_refused_with_400(app: InProcess, tokens: dict[str, str], url: str) -> None:
    # (this server allows private addresses for the tests' receiver: a strict policy is checked in
    # test_urls.py; here the API's answer to a refused URL is what matters)
    with app.client(tokens["admin"]) as client:
        answer = client.post("/api/v1/webhooks", json={"url": url.replace("https", "ftp")})
        assert answer.status_code == 400 and "https" in answer.json()["error"]


def test_an_alias_move_is_delivered_and_a_dead_letter_retried(
    app: InProcess, tokens: dict[str, str], receiver: Receiver
) -> None:
    with app.client(tokens["admin"]) as client:
        created = client.post("/api/v1/webhooks", json={"url": receiver.url, "actions": ["alias.*"]})
        assert created.status_code == 201, created.text
        webhook, secret = created.json()["webhook"], created.json()["secret"]
        listed = client.get("/api/v1/webhooks")
        assert webhook["id"] in listed.text and secret not in listed.text
        receiver.statuses[:] = [500] * 3
        moved = client.put("/api/v1/models/credit/aliases/production", json={"version": 2})
        assert moved.status_code == 200, moved.text
        path = f"/api/v1/webhooks/{webhook['id']}/deliveries"
        dead = until(lambda: client.get(path, params={"status": "dead"}).json()["deliveries"])
        assert dead[0]["attempts"] == 3 and [a["status_code"] for a in dead[0]["history"]] == [500] * 3
        retried = client.post(f"{path}/{dead[0]['id']}/retry", json={})
        assert retried.status_code == 200, retried.text
        until(lambda: client.get(path).json()["deliveries"][0]["status"] == "delivered")
        audit = client.get("/api/v1/audit").text
        assert "webhook.create" in audit and "webhook.retry" in audit and secret not in audit
        assert client.delete(f"/api/v1/webhooks/{webhook['id']}").status_code == 200
        assert client.get(path).status_code == 404
    last = receiver.events()[-1]
    event = json.loads(last.body)
    assert event["action"] == "alias.set" and event["target"] == "credit@production"
    parts = dict(p.split("=", 1) for p in last.headers["x-modelport-signature"].split(","))
    mac = hmac.new(secret.encode(), f"{parts['t']}.".encode() + last.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(mac, parts["v1"])


def test_pause_and_resume_over_the_api(app: InProcess, tokens: dict[str, str]) -> None:
    with app.client(tokens["admin"]) as admin:
        made = admin.post("/api/v1/webhooks", json={"url": "https://93.184.216.34/hook"})
        assert made.status_code == 201, made.text
        path = f"/api/v1/webhooks/{made.json()['webhook']['id']}"
        paused = admin.patch(path, json={"enabled": False})
        assert paused.status_code == 200 and paused.json()["webhook"]["enabled"] is False
        assert admin.patch(path, json={"enabled": True}).json()["webhook"]["enabled"] is True
        for bad in ({"enabled": "no"}, {"enabled": True, "url": "https://x"}, {}):
            assert admin.patch(path, json=bad).status_code == 400, bad
        assert admin.patch("/api/v1/webhooks/wh_0000000000000000", json={"enabled": True}).status_code == 404
        assert "secret" not in paused.text
    with app.client(tokens["publisher"]) as publisher:
        assert publisher.patch(path, json={"enabled": False}).status_code == 403
