"""The console in-process (the real app through httpx's ASGI transport): sign-in, sessions, CSRF, roles,
escaping, static files and the security headers on every answer. The attacks are written as tests."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from modelport.security.store import KeyStore
from modelport.ui.routes import CSP, Console
from tests.security.conftest import Keys, keyed_app, keyed_home, keys, make_key, open_home
from tests.serving.conftest import InProcess, serve_in_process

__all__ = ["keyed_app", "keyed_home", "keys"]  # fixtures, imported for this module

HOSTILE = "<script>alert(1)</script>"
PAGES = ["/ui", "/ui/", "/ui/models", "/ui/models/credit", "/ui/models/credit/versions/1"]


@pytest.fixture(scope="module")
def hostile(keyed_home: Path, data: pd.DataFrame, sklearn_model: object) -> str:
    """A model whose description and tags carry markup (registered before the app starts)."""
    registry = open_home(keyed_home)
    try:
        registry.register(
            sklearn_model,
            name="hostile",
            sample=data,
            target="label",
            description=HOSTILE,
            tags={"note": '"><img src=x onerror=alert(2)>'},
        )
    finally:
        registry.close()
    return "hostile"


@pytest.fixture(scope="module")
def app(keyed_app: InProcess, hostile: str) -> InProcess:
    return keyed_app


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


@contextlib.contextmanager
def sign_in(app: InProcess, token: str) -> Iterator[httpx.Client]:
    with app.client() as client:
        form = client.get("/ui/login")
        assert form.status_code == 200
        answer = client.post("/ui/login", data={"csrf": csrf_of(form.text), "key": token})
        assert answer.status_code == 303, answer.text
        assert answer.headers["location"] == "/ui/models"
        yield client


def assert_secure_headers(response: httpx.Response) -> None:
    assert response.headers["content-security-policy"] == CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert not [name for name in response.headers if name.lower().startswith("access-control-")]


def test_signed_out_pages_redirect_to_login_and_changes_are_refused(app: InProcess, keys: Keys) -> None:
    with app.client() as client:
        for path in PAGES:
            response = client.get(path)
            assert response.status_code == 303, path
            assert response.headers["location"] == "/ui/login"
            assert_secure_headers(response)
        for path in ("/ui/logout", "/ui/models/credit/aliases/staging"):
            response = client.post(path, data={"version": "1"})
            assert response.status_code == 401, path
            assert_secure_headers(response)
    with app.client(keys.admin) as client:  # an API key is not a session: the console reads cookies
        assert client.get("/ui/models").status_code == 303


def test_every_console_route_answers_with_the_security_headers(app: InProcess, keys: Keys) -> None:
    with sign_in(app, keys.admin) as client:
        seen = 0
        for method, pattern, _, _ in Console.ROUTES:
            path = pattern.pattern
            for group, value in (
                (r"(?P<name>[A-Za-z0-9._-]{1,100})", "credit"),
                (r"(?P<alias>[^/]{1,100})", "nothere"),
                (r"(?P<number>[0-9]{1,9})", "1"),
                (r"(?P<file>[A-Za-z0-9][A-Za-z0-9._-]{0,99})", "console.css"),
            ):
                path = path.replace(group, value)
            path = path.replace("/?", "/")
            response = client.request(method, path)
            assert_secure_headers(response)
            if response.headers["content-type"].startswith("text/html"):
                assert response.headers["cache-control"] == "no-store", path
            seen += 1
        assert seen == len(Console.ROUTES)
        for path in ("/ui/nothing", "/ui/models/credit/versions/99"):
            response = client.get(path)
            assert response.status_code == 404
            assert_secure_headers(response)


def test_sign_in_with_a_key_sets_a_strict_session_cookie(app: InProcess, keys: Keys) -> None:
    with app.client() as client:
        form = client.get("/ui/login")
        assert_secure_headers(form)
        answer = client.post("/ui/login", data={"csrf": csrf_of(form.text), "key": keys.admin})
        cookie = next(v for k, v in answer.headers.multi_items() if k == "set-cookie" and "session" in v)
        assert cookie.startswith("modelport_session=")
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "samesite", "path", "max-age"} <= attributes
        assert "SameSite=Strict" in cookie and "Path=/" in cookie
        assert "secure" not in attributes  # plain HTTP here; over TLS: Secure and __Host- (below)
        assert keys.admin not in cookie and keys.admin.split("_", 2)[2] not in cookie
        page = client.get("/ui/models")
        assert page.status_code == 200
        assert "credit" in page.text and "fraud" in page.text


def test_wrong_revoked_and_forged_sign_ins_are_refused(app: InProcess, keys: Keys, keyed_home: Path) -> None:
    revoked = make_key(keyed_home, "admin")
    registry = open_home(keyed_home)
    try:
        KeyStore(registry.store).revoke(Keys.id_of(revoked), actor="local:test")
    finally:
        registry.close()
    with app.client() as client:
        for token in ("mpk_abcdefghijkl_" + "x" * 43, revoked, ""):
            deadline = time.monotonic() + 5  # the server picks the revocation up within 0.25 s
            while True:
                form = client.get("/ui/login")
                answer = client.post("/ui/login", data={"csrf": csrf_of(form.text), "key": token})
                if answer.status_code == 401 or time.monotonic() > deadline:
                    break
            assert answer.status_code == 401, token
            assert "not accepted" in answer.text
            assert "set-cookie" not in answer.headers or "session=" not in answer.headers["set-cookie"]
        # login CSRF: no token, a made-up token, or another form's token are refused before the key
        form = client.get("/ui/login")
        for forged in (None, "0" * 43):
            data = {"key": keys.admin} | ({"csrf": forged} if forged else {})
            assert client.post("/ui/login", data=data).status_code == 403
    with app.client() as other:  # a token from this browser's form does not sign another in
        assert (
            other.post("/ui/login", data={"csrf": csrf_of(form.text), "key": keys.admin}).status_code == 403
        )


def test_failed_sign_ins_are_rate_limited_by_the_gate(keyed_home: Path, keys: Keys) -> None:
    with (
        serve_in_process(keyed_home, insecure_dev=False, auth_failure_burst=3, auth_failure_rate=0.01) as app,
        app.client() as client,
    ):
        statuses = []
        for _ in range(6):
            form = client.get("/ui/login")
            answer = client.post("/ui/login", data={"csrf": csrf_of(form.text), "key": "mpk_wrong"})
            statuses.append(answer.status_code)
        assert statuses[:3] == [401, 401, 401]
        assert statuses[-1] == 429
        assert int(answer.headers["retry-after"]) >= 1


def test_a_consumer_sees_no_change_form_and_cannot_post_one(app: InProcess, keys: Keys) -> None:
    with sign_in(app, keys.consumer) as client:
        models = client.get("/ui/models").text
        assert "credit" in models and "fraud" not in models  # the key's patterns: credit*
        assert client.get("/ui/models/fraud").status_code == 404
        page = client.get("/ui/models/credit")
        assert page.status_code == 200
        assert "Move an alias" not in page.text and "move-alias" not in page.text
        refused = client.post(
            "/ui/models/credit/aliases/staging", data={"csrf": csrf_of(page.text), "version": "1"}
        )
        assert refused.status_code == 403
    with sign_in(app, keys.admin) as client:
        html = client.get("/ui/models/credit").text
        assert "Move an alias" in html and 'action="/ui/models/credit/aliases/staging"' in html
        assert "staging (now v2)" in html


def test_changes_need_the_csrf_token_and_are_audited_under_the_key(
    app: InProcess, keys: Keys, keyed_home: Path
) -> None:
    def staging() -> int:
        registry = open_home(keyed_home)
        try:
            return registry.model("credit").aliases["staging"]
        finally:
            registry.close()

    with sign_in(app, keys.publisher) as client:
        page = client.get("/ui/models/credit")
        token = csrf_of(page.text)
        path = "/ui/models/credit/aliases/staging"
        for data, headers in (
            ({"version": "1"}, {}),
            ({"version": "1", "csrf": "x" * 43}, {}),
            ({"version": "1"}, {"X-CSRF-Token": "y" * 43}),
        ):
            refused = client.post(path, data=data, headers=headers)
            assert refused.status_code == 403
            assert_secure_headers(refused)
        assert staging() == 2  # nothing changed
        with sign_in(app, keys.admin) as other:  # another session's token is not this one's
            other_token = csrf_of(other.get("/ui/models/credit").text)
        assert client.post(path, data={"version": "1", "csrf": other_token}).status_code == 403
        assert staging() == 2
        # JSON is not a form: refused even with the token (the console takes form posts only)
        assert client.post(path, json={"version": 1}, headers={"X-CSRF-Token": token}).status_code == 415
        moved = client.post(path, data={"version": "1"}, headers={"X-CSRF-Token": token})
        assert moved.status_code == 303, moved.text
        assert staging() == 1
        assert "The alias was moved" in client.get(moved.headers["location"]).text
        back = client.post(path, data={"version": "2", "csrf": token})
        assert back.status_code == 303 and staging() == 2
    registry = open_home(keyed_home)
    try:
        records = registry.store.audit_records(limit=20)
    finally:
        registry.close()
    actors = [r.actor for r in records if "staging" in str(r.target)]
    assert f"key:{Keys.id_of(keys.publisher)}" in actors


def test_hostile_text_is_escaped(app: InProcess, keys: Keys) -> None:
    with sign_in(app, keys.admin) as client:
        for path in ("/ui/models", "/ui/models/hostile", "/ui/models/hostile/versions/1"):
            text = client.get(path).text
            assert "<script>alert" not in text and "<img src=x" not in text, path
        version = client.get("/ui/models/hostile/versions/1").text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in version
        assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in version
        echoed = client.get("/ui/models", params={"q": '"><script>alert(3)</script>'}).text
        assert "<script>alert(3)" not in echoed and "&lt;script&gt;alert(3)" in echoed


def test_the_filter_answers_a_fragment_for_htmx(app: InProcess, keys: Keys) -> None:
    with sign_in(app, keys.admin) as client:
        fragment = client.get("/ui/models", params={"q": "fra"}, headers={"HX-Request": "true"})
        assert fragment.status_code == 200
        assert fragment.text.startswith('<tbody id="model-rows"')
        assert "fraud" in fragment.text and "/ui/models/credit" not in fragment.text
        assert "HX-Request" in fragment.headers["vary"]


def test_static_files_and_path_traversal(app: InProcess) -> None:
    with app.client() as client:  # static files need no session (the login page uses them)
        css = client.get("/ui/static/console.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        assert_secure_headers(css)
        js = client.get("/ui/static/htmx-2.0.11.min.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        for path in (
            "/ui/static/%2e%2e%2fsessions.py",
            "/ui/static/..%2f..%2fsettings.py",
            "/ui/static/%2e%2e/%2e%2e/settings.py",
            "/ui/static/sessions.py",
            "/ui/static/.hidden",
            "/ui/static/htmx-LICENSE.txt%00.js",
        ):
            response = client.get(path)
            assert response.status_code == 404, path
            assert "import" not in response.text
            assert_secure_headers(response)


def test_a_revoked_keys_session_ends_at_once(app: InProcess, keyed_home: Path) -> None:
    token = make_key(keyed_home, "consumer")
    deadline = time.monotonic() + 5
    while True:  # the server reads new keys within 0.25 s
        client = app.client()
        form = client.get("/ui/login")
        if client.post("/ui/login", data={"csrf": csrf_of(form.text), "key": token}).status_code == 303:
            break
        client.close()
        assert time.monotonic() < deadline
    try:
        assert client.get("/ui/models").status_code == 200
        registry = open_home(keyed_home)
        try:
            KeyStore(registry.store).revoke(Keys.id_of(token), actor="local:test")
        finally:
            registry.close()
        deadline = time.monotonic() + 5
        while client.get("/ui/models").status_code == 200:
            assert time.monotonic() < deadline, "the revoked key's session still works"
        assert client.get("/ui/models").headers["location"] == "/ui/login"
    finally:
        client.close()


def test_tampered_cookies_and_sign_out(app: InProcess, keys: Keys) -> None:
    with sign_in(app, keys.consumer) as client:
        cookie = client.cookies["modelport_session"]
        body, tag = cookie.split(".")
        with app.client() as forger:
            for forged in (f"{body}.{'0' * len(tag)}", f"{body[:-2]}AA.{tag}", "x", ""):
                forger.cookies.set("modelport_session", forged)
                assert forger.get("/ui/models").status_code == 303
        page = client.get("/ui/models")
        assert client.post("/ui/logout").status_code == 403  # no CSRF token: not even a sign-out
        with sign_in(app, keys.consumer) as other_browser:  # the same key signed in elsewhere
            out = client.post("/ui/logout", data={"csrf": csrf_of(page.text)})
            assert out.status_code == 303 and out.headers["location"] == "/ui/login"
            assert "Max-Age=0" in out.headers["set-cookie"]
            assert client.get("/ui/models").status_code == 303
            # A copy of the signed-out cookie (stolen before the sign-out) is refused too: the sign-out
            # is recorded on the server, not only cleared in this browser.
            with app.client() as thief:
                thief.cookies.set("modelport_session", cookie)
                assert thief.get("/ui/models").status_code == 303
                assert thief.post("/ui/logout", data={"csrf": csrf_of(page.text)}).status_code == 401
            assert other_browser.get("/ui/models").status_code == 200  # only that session ended
    registry = open_home(app.home)
    try:
        signed_out = registry.store.audit_records(action="console.sign_out", limit=5)
    finally:
        registry.close()
    assert signed_out and signed_out[0].actor.startswith("key:")


def test_over_tls_the_cookie_is_secure_and_host_prefixed(app: InProcess, keys: Keys) -> None:
    """httpx's ASGI transport reports the URL's scheme: an https base URL is a TLS request."""
    secure = InProcess(app.home, app.transport, url="https://127.0.0.1:8443")
    with secure.client() as client:
        form = client.get("/ui/login")
        assert "__Host-modelport_login=" in form.headers["set-cookie"]
        answer = client.post("/ui/login", data={"csrf": csrf_of(form.text), "key": keys.admin})
        cookie = next(v for k, v in answer.headers.multi_items() if k == "set-cookie" and "session" in v)
        assert cookie.startswith("__Host-modelport_session=")
        assert "; Secure" in cookie and "Path=/" in cookie and "HttpOnly" in cookie
        assert client.get("/ui/models").status_code == 200


def _thousand_models(home: Path) -> None:
    """1,000 more models, each a copy of credit v1 with a ``production`` alias (rows copied in SQL: the
    console's speed is what is measured, not registration's)."""
    import uuid
    from datetime import UTC, datetime

    from sqlalchemy import insert, select

    from modelport.registry.schema import aliases, model_versions, models

    registry = open_home(home)
    try:
        engine = registry.store.db.engine
        now = datetime.now(UTC)
        with engine.begin() as conn:
            source = (
                conn.execute(select(model_versions).where(model_versions.c.number == 1).limit(1))
                .mappings()
                .one()
            )
            version = {k: v for k, v in source.items() if k not in ("id", "uuid", "model_id")}
            for i in range(1000):
                model_id = conn.execute(
                    insert(models).values(
                        name=f"bulk-{i:04d}",
                        description=f"model {i} of 1000",
                        latest_version=1,
                        created_at=now,
                    )
                ).inserted_primary_key[0]  # type: ignore[index]
                version_id = conn.execute(
                    insert(model_versions).values(**version, uuid=str(uuid.uuid4()), model_id=model_id)
                ).inserted_primary_key[0]  # type: ignore[index]
                conn.execute(
                    insert(aliases).values(
                        model_id=model_id,
                        name="production",
                        version_id=version_id,
                        updated_at=now,
                        updated_by="t",
                    )
                )
    finally:
        registry.close()


@pytest.mark.solo
def test_the_models_page_at_1000_models(tmp_path: Path, keyed_home: Path, keys: Keys) -> None:
    """Server time (in-process, no socket) of each page with 1,000 models: the list is two queries."""
    import shutil
    import statistics

    home = tmp_path / "home"
    shutil.copytree(keyed_home, home)
    _thousand_models(home)
    with serve_in_process(home, insecure_dev=False) as big, sign_in(big, keys.admin) as client:
        timings: dict[str, float] = {}
        for label, path, headers in (
            ("models", "/ui/models", {}),
            ("filter", "/ui/models?q=bulk-09", {"HX-Request": "true"}),
            ("model", "/ui/models/bulk-0500", {}),
            ("version", "/ui/models/bulk-0500/versions/1", {}),
        ):
            samples = []
            for _ in range(20):
                started = time.perf_counter()
                response = client.get(path, headers=headers)
                samples.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200
            timings[label] = statistics.quantiles(samples, n=20)[-1]  # p95
        assert client.get("/ui/models").text.count('<th scope="row">') >= 1000
        print("p95 ms:", {k: round(v, 1) for k, v in timings.items()})
        assert max(timings.values()) < 300, timings
