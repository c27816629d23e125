"""Approvals over `/api/v1` with real keys, version labels, and bad input to every release route and
command: a precise 4xx or CLI message, nothing changed, the app still serving (in-process)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelport.app import open_registry
from modelport.settings import Settings
from tests.conftest import invoke_cli as cli
from tests.releases.conftest import INFER
from tests.security.conftest import bearer, make_key
from tests.serving.conftest import serve_in_process


@pytest.fixture
def keyed(home: Path) -> Iterator[tuple[httpx.Client, dict[str, str]]]:
    """A client of the keyed app on ``home``, and tokens by name."""
    keys = {
        "admin": make_key(home, "admin"),
        "alice": make_key(home, "publisher", ["credit*"]),
        "bob": make_key(home, "publisher", ["credit*"]),
        "consumer": make_key(home, "consumer", ["credit*"]),
        "outsider": make_key(home, "publisher", ["fraud*"]),
    }
    with serve_in_process(home, insecure_dev=False, auth_failure_burst=100_000) as app, app.client() as http:
        yield http, keys


def _audit(home: Path) -> list[tuple[str, str, str]]:
    registry = open_registry(Settings(home=home))
    try:
        return [(r.action, r.actor, r.target) for r in registry.store.audit_records()]
    finally:
        registry.close()


def _key_id(token: str) -> str:
    return token.split("_")[1]


def test_self_approval_is_refused_and_a_second_key_approves(
    home: Path, keyed: tuple[httpx.Client, dict[str, str]]
) -> None:
    http, keys = keyed
    assert cli(home, "alias", "protect", "credit@production", "--require-approval").returncode == 0
    # The gate applies too: give v2 a passing report by overriding as an admin would — here we pass the
    # override reason, which needs an admin key, so the requester is the admin.
    api = "/api/v1"
    asked = http.put(
        f"{api}/models/credit/aliases/production/release",
        json={"canary": 2, "weight": 25, "override_reason": "validated offline, ticket RISK-12"},
        headers=bearer(keys["admin"]),
    )
    assert asked.status_code == 202, asked.text
    change = asked.json()["change"]
    assert change["status"] == "pending" and change["action"] == "release"
    assert change["requested_by"] == f"key:{_key_id(keys['admin'])}"

    # nothing changed yet
    status = http.get(f"{api}/models/credit/aliases/production/release", headers=bearer(keys["alice"])).json()
    assert status["release"] is None

    own = http.post(f"{api}/approvals/{change['id']}/approve", json={}, headers=bearer(keys["admin"]))
    assert own.status_code == 403 and "another admin or publisher" in own.json()["error"]
    hidden = http.post(f"{api}/approvals/{change['id']}/approve", json={}, headers=bearer(keys["outsider"]))
    assert hidden.status_code == 404  # outside its scope the change does not exist
    consumer = http.post(f"{api}/approvals/{change['id']}/approve", json={}, headers=bearer(keys["consumer"]))
    assert consumer.status_code == 403

    listed = http.get(f"{api}/approvals", params={"status": "pending"}, headers=bearer(keys["bob"])).json()
    assert [c["id"] for c in listed["changes"]] == [change["id"]]
    assert http.get(f"{api}/approvals", headers=bearer(keys["outsider"])).json()["changes"] == []

    approved = http.post(f"{api}/approvals/{change['id']}/approve", json={}, headers=bearer(keys["bob"]))
    assert approved.status_code == 200, approved.text
    assert approved.json()["change"]["status"] == "applied"
    status = http.get(f"{api}/models/credit/aliases/production/release", headers=bearer(keys["bob"])).json()
    assert status["release"]["canary"] == 2 and status["release"]["weight"] == 25.0
    again = http.post(f"{api}/approvals/{change['id']}/approve", json={}, headers=bearer(keys["alice"]))
    assert again.status_code == 409  # decided already

    # A second change: Alice asks to promote without an override, which the gate would refuse whoever
    # approved it: refused when asked. The admin asks with one; Bob rejects with a reason; nothing moves.
    promote = http.post(
        f"{api}/models/credit/aliases/production/release/promote",
        json={},
        headers=bearer(keys["alice"]),
    )
    assert promote.status_code == 409 and "no passing validation report" in promote.json()["error"]
    promote = http.post(
        f"{api}/models/credit/aliases/production/release/promote",
        json={"override_reason": "validated offline, ticket RISK-12"},
        headers=bearer(keys["admin"]),
    )
    assert promote.status_code == 202
    second = promote.json()["change"]["id"]
    rejected = http.post(
        f"{api}/approvals/{second}/reject", json={"reason": "wait for month-end"}, headers=bearer(keys["bob"])
    )
    assert rejected.status_code == 200 and rejected.json()["change"]["status"] == "rejected"
    models = http.get(f"{api}/models", headers=bearer(keys["bob"])).json()["models"]
    assert next(m for m in models if m["name"] == "credit")["aliases"]["production"] == 1

    # Rollback never waits: it returns to an approved state at once.
    rolled = http.post(
        f"{api}/models/credit/aliases/production/rollback",
        json={"reason": "incident"},
        headers=bearer(keys["alice"]),
    )
    assert rolled.status_code == 200 and rolled.json()["status"] == "applied"

    audit = _audit(home)
    admin, alice, bob = (f"key:{_key_id(keys[k])}" for k in ("admin", "alice", "bob"))
    assert ("approval.request", admin, "credit@production") in audit
    assert ("approval.refused", admin, "credit@production") in audit
    assert ("approval.approve", bob, "credit@production") in audit
    assert ("approval.applied", bob, "credit@production") in audit
    assert ("release.start", f"{admin}+{bob}", "credit@production") in audit
    assert ("alias.refused", alice, "credit@production") in audit
    assert ("approval.reject", bob, "credit@production") in audit
    assert ("release.rollback", alice, "credit@production") in audit
    # the app kept serving through all of it
    assert (
        http.post("/v2/models/credit/infer", json=INFER, headers=bearer(keys["consumer"])).status_code == 200
    )


def test_approvals_from_the_cli_with_two_keys(home: Path) -> None:
    first, second = make_key(home, "publisher"), make_key(home, "publisher")
    assert cli(home, "alias", "protect", "credit@staging", "--require-approval").returncode == 0
    env_first = {"MODELPORT_KEY": first}
    # staging is protected now and v2 has no validation report: without an override the gate refuses
    # the request itself (tests/releases/test_guard_rails.py); with one it waits for a second key
    ask = ("alias", "set", "credit@2", "staging", "--override-reason", "validated offline", "--json")
    asked = cli(home, *ask, env=env_first)
    assert asked.returncode == 0, asked.stderr
    change = json.loads(asked.stdout)["change"]["id"]
    own = cli(home, "approvals", "approve", str(change), env=env_first)
    assert own.returncode == 1 and "another admin or publisher" in own.stderr
    done = cli(home, "approvals", "approve", str(change), env={"MODELPORT_KEY": second})
    assert done.returncode == 0, done.stderr
    assert json.loads(cli(home, "show", "credit@staging", "--json").stdout)["number"] == 2

    # A change that cannot be applied when approved is marked failed with the reason: here v3's ONNX
    # blob is damaged between the request and the approval.
    asked = cli(home, "alias", "set", "credit@3", "staging", *ask[4:], env=env_first)
    assert asked.returncode == 0, asked.stderr
    change = json.loads(asked.stdout)["change"]["id"]
    registry = open_registry(Settings(home=home))
    try:
        onnx = registry.get("credit@3").artifact("onnx")
        assert onnx is not None
        path = registry.artifacts.path_for(onnx.digest)  # type: ignore[attr-defined]
    finally:
        registry.close()
    path.chmod(0o644)
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    done = cli(home, "approvals", "approve", str(change), env={"MODELPORT_KEY": second})
    assert done.returncode == 4 and "does not match the recorded digest" in done.stderr
    listed = json.loads(cli(home, "approvals", "list", "--status", "failed", "--json").stdout)
    assert [c["id"] for c in listed] == [change]
    bad_key = cli(home, "approvals", "approve", str(change), env={"MODELPORT_KEY": "mpk_nope_nope"})
    assert bad_key.returncode == 1 and "nope" not in bad_key.stderr.replace("mpk_nope_nope", "")


def test_version_labels(home: Path) -> None:
    assert cli(home, "label", "credit@2", "2.1.0").returncode == 0
    shown = cli(home, "show", "credit@2.1.0", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["number"] == 2
    assert json.loads(shown.stdout)["label"] == "2.1.0"
    assert json.loads(cli(home, "show", "credit@v2.1.0", "--json").stdout)["number"] == 2
    assert (
        json.loads(cli(home, "show", "credit@2", "--json").stdout)["number"] == 2
    )  # always a version number
    ambiguous = cli(home, "show", "credit@2.1")
    assert ambiguous.returncode == 2 and "full semantic version" in ambiguous.stderr
    taken = cli(home, "label", "credit@3", "2.1.0")
    assert taken.returncode == 1 and "already has label 2.1.0 on version 2" in taken.stderr
    assert cli(home, "label", "credit@3", "banana").returncode == 2
    assert cli(home, "label", "credit@3", "3.0.0-rc.1+build.7").returncode == 0
    with serve_in_process(home) as app, app.client() as http:
        answer = http.post("/v2/models/credit/versions/3.0.0-rc.1+build.7/infer", json=INFER)
        assert answer.status_code == 200 and answer.json()["model_version"] == "3"
        missing = http.post("/v2/models/credit/versions/9.9.9/infer", json=INFER)
        assert missing.status_code == 404 and "labelled" in missing.json()["error"]
        assert http.post("/v2/models/credit/versions/1.2/infer", json=INFER).status_code in (400, 404)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("--canary", "2"), 2, "needs a weight"),
        (("--canary", "2", "--weight", "0"), 2, "above 0 and below 100"),
        (("--canary", "2", "--weight", "100"), 2, "above 0 and below 100"),
        (("--canary", "2", "--weight", "1.234"), 2, "two decimals"),
        (("--canary", "2", "--weight", "nan"), 2, "above 0 and below 100"),
        (("--canary", "1", "--weight", "5"), 2, "must differ"),
        (("--canary", "9", "--weight", "5"), 3, "no version 9"),
        (("--weight", "5"), 2, "go with --canary"),
        ((), 2, "needs a canary"),
        (("--canary", "2", "--weight", "5", "--sticky-by", "field:nosuch"), 2, "no input named"),
        (("--canary", "2", "--weight", "5", "--sticky-by", "header:bad header"), 2, "header:NAME"),
        (("--canary", "2", "--weight", "5", "--auto-rollback", "p99=5"), 2, "error_rate="),
        (("--canary", "2", "--weight", "5", "--auto-rollback", "window=60"), 2, "needs a bound"),
        (("--shadow", "1"), 2, "must differ"),
    ],
)
def test_release_bad_input(home: Path, args: tuple[str, ...], code: int, message: str) -> None:
    done = cli(home, "release", "start", "credit@production", *args)
    assert done.returncode == code, (done.stdout, done.stderr)
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert json.loads(cli(home, "release", "status", "credit@production", "--json").stdout)["release"] is None


def test_release_commands_on_missing_things(home: Path) -> None:
    assert cli(home, "release", "start", "credit@nosuch", "--canary", "2", "--weight", "5").returncode == 3
    assert (
        cli(home, "release", "start", "nosuch@production", "--canary", "2", "--weight", "5").returncode == 3
    )
    assert cli(home, "release", "promote", "credit@production").returncode == 3  # no release
    assert cli(home, "release", "stop", "credit@production").returncode == 3
    assert cli(home, "release", "status", "credit").returncode == 2  # no alias named
    assert cli(home, "release", "status", "credit@../x").returncode == 2
    nothing = cli(home, "release", "rollback", "credit@production")
    assert nothing.returncode == 1 and "nothing to roll back to" in nothing.stderr
    assert cli(home, "approvals", "approve", "99").returncode == 3
    assert cli(home, "approvals", "approve", "0").returncode == 2
    # with a release running, a plain alias move is refused until it ends
    assert (
        cli(home, "release", "start", "credit@production", "--canary", "2", "--weight", "5").returncode == 0
    )
    moved = cli(home, "alias", "set", "credit@3", "production")
    assert moved.returncode == 1 and "a release is running" in moved.stderr


def test_release_api_bad_input(home: Path, keyed: tuple[httpx.Client, dict[str, str]]) -> None:
    http, keys = keyed
    url = "/api/v1/models/credit/aliases/production/release"
    publisher = bearer(keys["alice"])
    cases = [
        ({"canary": 2}, 400),
        ({"canary": "2", "weight": 5}, 400),
        ({"canary": 2, "weight": True}, 400),
        ({"canary": 2, "weight": 5, "surprise": 1}, 400),
        ({"canary": 2, "weight": 5, "auto_rollback": "fast"}, 400),
        ({"canary": 2, "weight": 5, "auto_rollback": {"error_rate": 5}}, 400),
        ({"canary": 2, "weight": 5, "override_reason": "x"}, 403),  # overrides are an admin's call
        ({"canary": 10**12, "weight": 5}, 400),
        ({"canary": 9, "weight": 5}, 404),
    ]
    for body, status in cases:
        answer = http.put(url, json=body, headers=publisher)
        assert answer.status_code == status, (body, answer.text)
        assert "Traceback" not in answer.text and "/home" not in answer.text
    assert (
        http.put(url, content=b"canary=2", headers={**publisher, "content-type": "text/plain"}).status_code
        == 415
    )
    assert (
        http.put(url, content=b"{", headers={**publisher, "content-type": "application/json"}).status_code
        == 400
    )
    assert http.put(url, json={"canary": 2, "weight": 5}, headers=bearer(keys["consumer"])).status_code == 403
    assert http.put(url, json={"canary": 2, "weight": 5}).status_code == 401
    outsider = http.put(url, json={"canary": 2, "weight": 5}, headers=bearer(keys["outsider"]))
    assert outsider.status_code == 404
    assert http.post(f"{url}/promote", json={}, headers=publisher).status_code == 404
    assert http.post("/api/v1/approvals/123/approve", json={}, headers=publisher).status_code == 404
    assert http.get("/api/v1/approvals", params={"status": "x"}, headers=publisher).status_code == 400
    history = http.get("/api/v1/models/credit/aliases/production/history", headers=publisher)
    assert history.status_code == 200 and [e["action"] for e in history.json()["history"]] == ["set"]
    # nothing changed, and the app still serves
    assert http.get(url, headers=publisher).json()["release"] is None
    assert http.post("/v2/models/credit/infer", json=INFER, headers=publisher).status_code == 200
