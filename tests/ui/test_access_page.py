"""The console's access page in-process: who sees it (``admin``, as ``/api/v1/keys``), the keys and
their usage from real inference requests, creating a key (its token shown once, working on the API at
once, audited under the person), revoking one (refused by the API at once, its console sessions ended),
CSRF, and hostile input — every refusal precise, every value escaped, the page serving afterwards."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from modelport.registry.service import Registry
from modelport.security.store import KeyStore
from modelport.ui.access import KEY_PAGE
from tests.security.conftest import INFER, Keys, keyed_app, keyed_home, keys, make_key, open_home
from tests.serving.conftest import InProcess
from tests.ui.test_console import assert_secure_headers, csrf_of, sign_in

__all__ = ["keyed_app", "keyed_home", "keys"]  # fixtures, imported for this module

HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


@pytest.fixture
def home(keyed_home: Path) -> Iterator[Registry]:
    registry = open_home(keyed_home)
    try:
        yield registry
    finally:
        registry.close()


def actor(token: str) -> str:
    return f"key:{Keys.id_of(token)}"


def until_known(app: InProcess, token: str) -> None:
    """Until the app has loaded a key made outside it (it polls the registry every 0.25 s)."""
    deadline = time.monotonic() + 5
    with app.client(token) as client:
        while client.get("/v2/models/credit").status_code == 401:
            assert time.monotonic() < deadline, "the new key never reached the app"
            time.sleep(0.05)


def key_state(registry: Registry, key_id: str) -> str:
    return KeyStore(registry.store).get(key_id).status()


def key_count(registry: Registry) -> int:
    return KeyStore(registry.store).count()


def token_on(page: str) -> str:
    found = re.search(r'id="new-token"[^>]*value="([^"]+)"', page)
    assert found, page[:2000]
    return html.unescape(found.group(1))


def create(client: httpx.Client, **fields: str) -> httpx.Response:
    token = csrf_of(client.get("/ui/access").text)
    return client.post("/ui/access/keys", data={"csrf": token, **fields})


def revoke(client: httpx.Client, key_id: str) -> httpx.Response:
    token = csrf_of(client.get("/ui/access").text)
    return client.post(f"/ui/access/keys/{key_id}/revoke", data={"csrf": token})


def test_an_admin_sees_every_key_and_its_usage(keyed_app: InProcess, keys: Keys) -> None:
    token = make_key(keyed_app.home, "consumer", ["credit*"], rate=50.0, quota=1000)
    key_id = Keys.id_of(token)
    until_known(keyed_app, token)
    with keyed_app.client(token) as api:
        for _ in range(3):
            assert api.post("/v2/models/credit/infer", json=INFER).status_code == 200
    with sign_in(keyed_app, keys.admin) as client:
        deadline = time.monotonic() + 10
        while True:  # the app adds its counts to the usage table once a second
            page = client.get(f"/ui/access?key={key_id}")
            assert page.status_code == 200, page.text
            found = re.search(
                rf"<th scope=\"row\"><code>{key_id}</code>[^<]*</th>\s*<td><code>credit</code></td>\s*"
                r"<td>(\d+)</td>\s*<td>(\d+)</td>",
                page.text,
            )
            if found and int(found.group(1)) >= 3:
                break
            assert time.monotonic() < deadline, page.text
            time.sleep(0.1)
        assert (int(found.group(1)), int(found.group(2))) == (3, 3)  # requests, rows: one row each
        with keyed_app.client(keys.admin) as api:  # the numbers the API gives
            rows = api.get(f"/api/v1/usage?key={key_id}").json()["usage"]
        assert sum(r["requests"] for r in rows) == 3
        assert_secure_headers(page)
        assert page.headers["cache-control"] == "no-store"
        text = page.text
        for each in (keys.admin, keys.publisher, keys.consumer, keys.other):
            assert f"Revoke {Keys.id_of(each)}</button>" in text
        assert "<code>credit*</code>" in text and "<code>fraud</code>" in text
        assert "by <code>local:test</code>" in text  # who made the key
        assert "50/s" in text and "1,000/month (3 used)" in text
        assert "<caption>" in text and 'for="c-name"' in text
        # server-side filters
        publishers = client.get("/ui/access?role=publisher").text
        assert f"Revoke {Keys.id_of(keys.publisher)}</button>" in publishers
        assert f"Revoke {Keys.id_of(keys.consumer)}</button>" not in publishers
        assert f"Revoke {key_id}</button>" not in client.get("/ui/access?state=revoked").text
        for bad in ("role=root", "state=gone", "since=yesterday", "since=2026-13-01", "key=XYZ", "page=0"):
            refused = client.get(f"/ui/access?{bad}")
            assert refused.status_code == 400, bad
            assert_secure_headers(refused)
        assert "No usage recorded" in client.get("/ui/access?since=2999-01-01").text


@pytest.mark.parametrize("role", ["publisher", "consumer", "other"])
def test_other_roles_are_refused_as_on_the_api(
    keyed_app: InProcess, keys: Keys, home: Registry, role: str
) -> None:
    token = getattr(keys, role)
    target = Keys.id_of(keys.consumer)
    before = key_count(home)
    with keyed_app.client(token) as api:
        assert api.get("/api/v1/keys").status_code == 403
    with sign_in(keyed_app, token) as client:
        models = client.get("/ui/models")
        assert "/ui/access" not in models.text  # not offered
        csrf = csrf_of(models.text)
        answers = [
            client.get("/ui/access"),
            client.post("/ui/access/keys", data={"csrf": csrf, "name": "mine", "role": "admin"}),
            client.post(f"/ui/access/keys/{target}/revoke", data={"csrf": csrf}),
        ]
        for answer in answers:
            assert answer.status_code == 403, answer.request.url
            assert_secure_headers(answer)
            assert "mpk_" not in answer.text
    assert key_count(home) == before
    assert key_state(home, target) == "active"


def test_a_created_key_is_shown_once_works_at_once_and_is_audited(
    keyed_app: InProcess, keys: Keys, home: Registry
) -> None:
    with sign_in(keyed_app, keys.admin) as client:
        answer = create(
            client, name="scoring job", role="consumer", models="credit*", expires="30d", rate="10/s"
        )
        assert answer.status_code == 201, answer.text
        assert answer.headers["cache-control"] == "no-store"
        assert "location" not in answer.headers
        assert_secure_headers(answer)
        token = token_on(answer.text)
        key_id = Keys.id_of(token)
        assert answer.text.count(token) == 1  # once, in the field to copy it from
        assert "shown this once" in answer.text
        assert f"Revoke {key_id}</button>" in answer.text  # and listed
        again = client.get("/ui/access").text
        assert token not in again and token.split("_")[2] not in again
        assert f"Revoke {key_id}</button>" in again
    # the API takes it at once (the console reloaded this worker's key ring), within its scope
    with keyed_app.client(token) as api:
        assert api.post("/v2/models/credit/infer", json=INFER).status_code == 200
        assert api.post("/v2/models/fraud/infer", json=INFER).status_code == 404
        assert api.get("/api/v1/keys").status_code == 403
    record = KeyStore(home.store).get(key_id)
    assert (record.name, record.role, record.models, record.rate) == (
        "scoring job",
        "consumer",
        ("credit*",),
        10.0,
    )
    assert record.expires_at is not None and record.created_by == actor(keys.admin)
    created = home.store.audit_records(action="key.create", target=f"key:{key_id}")
    assert [(r.actor, r.after["name"]) for r in created] == [(actor(keys.admin), "scoring job")]
    assert token not in str(created[0].after) and token.split("_")[2] not in str(created[0].after)


def test_a_revoked_key_is_refused_at_once_and_its_session_ends(
    keyed_app: InProcess, keys: Keys, home: Registry
) -> None:
    token = make_key(keyed_app.home, "consumer", ["credit*"])
    key_id = Keys.id_of(token)
    until_known(keyed_app, token)
    with sign_in(keyed_app, token) as victim, sign_in(keyed_app, keys.admin) as admin:
        assert victim.get("/ui/models").status_code == 200
        answer = revoke(admin, key_id)
        assert answer.status_code == 303
        assert answer.headers["location"] == f"/ui/access?revoked={key_id}"
        after = admin.get(answer.headers["location"])
        assert f"Key <code>{key_id}</code> was revoked" in after.text
        assert f"Revoke {key_id}</button>" not in after.text
        with keyed_app.client(token) as api:  # no wait: the console reloaded the key ring
            assert api.post("/v2/models/credit/infer", json=INFER).status_code == 401
        ended = victim.get("/ui/models")
        assert ended.status_code == 303 and ended.headers["location"] == "/ui/login"
        assert revoke(admin, key_id).status_code == 303  # again: nothing changes, as on the API
    assert key_state(home, key_id) == "revoked"
    revoked = home.store.audit_records(action="key.revoke", target=f"key:{key_id}")
    assert [r.actor for r in revoked] == [actor(keys.admin)]


def test_revoking_your_own_key_ends_your_session(keyed_app: InProcess, home: Registry) -> None:
    token = make_key(keyed_app.home, "admin")
    key_id = Keys.id_of(token)
    until_known(keyed_app, token)
    with sign_in(keyed_app, token) as client:
        page = client.get("/ui/access").text
        assert "revoking it ends this session" in page  # said beside one's own key
        answer = client.post(f"/ui/access/keys/{key_id}/revoke", data={"csrf": csrf_of(page)})
        assert answer.status_code == 303  # allowed, as on the API
        ended = client.get(answer.headers["location"])
        assert ended.status_code == 303 and ended.headers["location"] == "/ui/login"
    assert key_state(home, key_id) == "revoked"
    assert [r.actor for r in home.store.audit_records(action="key.revoke", target=f"key:{key_id}")] == [
        f"key:{key_id}"
    ]


def test_a_post_without_the_csrf_token_changes_nothing(
    keyed_app: InProcess, keys: Keys, home: Registry
) -> None:
    target = Keys.id_of(keys.consumer)
    before = key_count(home)
    with sign_in(keyed_app, keys.admin) as client:
        for data, headers in (({}, {}), ({"csrf": "x" * 43}, {}), ({}, {"X-CSRF-Token": "y" * 43})):
            made = client.post(
                "/ui/access/keys", data={**data, "name": "sneaky", "role": "admin"}, headers=headers
            )
            gone = client.post(f"/ui/access/keys/{target}/revoke", data=data, headers=headers)
            for refused in (made, gone):
                assert refused.status_code == 403
                assert_secure_headers(refused)
                assert "mpk_" not in refused.text
        token = csrf_of(client.get("/ui/access").text)  # the header works like the field
        assert (
            client.post(
                "/ui/access/keys",
                data={"name": "by header", "role": "consumer"},
                headers={"X-CSRF-Token": token},
            ).status_code
            == 201
        )
    assert key_count(home) == before + 1
    assert key_state(home, target) == "active"


def test_hostile_input_is_refused_precisely_or_escaped(
    keyed_app: InProcess, keys: Keys, home: Registry
) -> None:
    before = key_count(home)
    with sign_in(keyed_app, keys.admin) as client:
        refusals = [
            ({"name": "x", "role": "root"}, "role must be one of consumer, publisher, admin"),
            ({"name": "", "role": "consumer"}, "key name must be"),
            ({"name": "x\x1b[31m", "role": "consumer"}, "key name must be"),
            ({"name": "x", "role": "consumer", "models": "credit <b>;drop"}, "model pattern"),
            ({"name": "x", "role": "consumer", "models": " ".join(["m"] * 51)}, "1 to 50 patterns"),
            ({"name": "x", "role": "consumer", "expires": "-1d"}, "duration"),
            ({"name": "x", "role": "consumer", "expires": "abc"}, "duration"),
            ({"name": "x", "role": "consumer", "expires": "99999w"}, "longer than ten years"),
            ({"name": "x", "role": "consumer", "rate": "fast"}, "rate"),
            ({"name": "x", "role": "consumer", "quota": "0/month"}, "quota"),
        ]
        for fields, message in refusals:
            answer = create(client, **fields)
            assert answer.status_code == 400, fields
            assert_secure_headers(answer)
            text = html.unescape(answer.text)
            assert "The key was not created" in text and message in text, (fields, text[:3000])
            assert "<b>;drop" not in answer.text  # the echoed field is escaped
            assert 'id="new-token"' not in answer.text
        kept = create(client, name="kept", role="publisher", models="credit <b>", rate="fast")
        assert 'value="kept"' in kept.text and 'value="credit &lt;b&gt;"' in kept.text  # the form refilled
        assert key_count(home) == before
        # markup in a name is text on the page
        made = create(client, name=HOSTILE, role="consumer")
        assert made.status_code == 201
        for page in (made.text, client.get("/ui/access").text):
            assert HOSTILE not in page and "<script>alert(1)" not in page
            assert html.escape(HOSTILE) in page or "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        # a form over 16 KiB: 413, before anything is read
        token = csrf_of(client.get("/ui/access").text)
        huge = client.post("/ui/access/keys", data={"csrf": token, "name": "x" * 17_000, "role": "consumer"})
        assert huge.status_code == 413
        # an unknown key id: 404 like the API; not a key id at all: no such page
        assert client.post("/ui/access/keys/aaaaaaaaaaaa/revoke", data={"csrf": token}).status_code == 404
        assert client.post("/ui/access/keys/AAAA/revoke", data={"csrf": token}).status_code == 404
        with keyed_app.client(keys.admin) as api:
            assert api.delete("/api/v1/keys/aaaaaaaaaaaa").status_code == 404
        assert client.get("/ui/access").status_code == 200  # and the page still serves
    assert key_count(home) == before + 1


def test_expired_keys_filter_and_long_lists_are_paged(
    keyed_app: InProcess, keys: Keys, home: Registry
) -> None:
    expired = Keys.id_of(make_key(keyed_app.home, "consumer", expires_in=timedelta(seconds=-1)))
    store = KeyStore(home.store)
    for number in range(KEY_PAGE + 1):
        store.create(name=f"bulk {number}", role="publisher", models=["bulk*"], actor="local:test")
    with sign_in(keyed_app, keys.admin) as client:
        found = client.get("/ui/access?state=expired").text
        assert f"Revoke {expired}</button>" in found and "key-expired" in found  # it can still be revoked
        assert f"Revoke {Keys.id_of(keys.consumer)}</button>" not in found
        assert f"Revoke {expired}</button>" not in client.get("/ui/access?state=active").text
        first = client.get("/ui/access?role=publisher").text
        assert first.count("<code>bulk*</code>") == KEY_PAGE - 1  # the fixture's publisher comes first
        assert 'href="/ui/access?role=publisher&amp;page=2" rel="next"' in first
        second = client.get("/ui/access?role=publisher&page=2").text
        assert second.count("<code>bulk*</code>") == 2 and "bulk 100</td>" in second
        assert 'rel="next"' not in second.split('aria-label="Key pages"')[1].split("</nav>")[0]
        assert client.get("/ui/access?role=publisher&page=3").status_code == 200  # past the end: empty
