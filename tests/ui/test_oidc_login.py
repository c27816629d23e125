"""Console sign-in at a real OpenID provider (oidc-provider on Node.js, loopback): the console in-process
through httpx, the provider over HTTP, its development login and consent forms posted as a browser
would. The whole authorization code + PKCE flow signs a person in; a callback with a missing or wrong
state, a replayed one, a code of another client, an ID token for another nonce or client, and groups
that map to no role are all refused without a session; the redirect URL never follows the Host header."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import secrets
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelport.errors import Unauthenticated
from modelport.security.oidc import ClaimMapping, SigningKeys, TokenVerifier
from tests.oidc.provider import AUDIENCE, Provider, start_provider, stop_provider
from tests.security.conftest import Keys, keyed_home, keys, open_home
from tests.serving.conftest import InProcess, serve_in_process

__all__ = ["keyed_home", "keys"]  # fixtures, imported for this module

APP_URL = "http://127.0.0.1:8080"  # InProcess.url: what the in-process app is addressed as
REDIRECT = f"{APP_URL}/ui/oidc/callback"
ROLES = {"risk": "publisher", "ml-publishers": "publisher", "platform-admins": "admin"}
SCOPES = {"risk": ["credit*"], "ml-publishers": ["credit*"]}


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    running = start_provider(tmp_path_factory.mktemp("oidc"), redirect_uris=(REDIRECT,))
    yield running
    stop_provider(running)


@pytest.fixture(scope="module")
def app(keyed_home: Path, keys: Keys, provider: Provider) -> Iterator[InProcess]:
    settings = {
        "oidc_issuer": provider.issuer,
        "oidc_audience": AUDIENCE,
        "oidc_roles": ROLES,
        "oidc_scopes": SCOPES,
        "oidc_client_id": "console",
        "oidc_client_secret": "console-secret",
        "oidc_redirect_url": REDIRECT,
        "oidc_display_name": "Test IdP",
    }
    with serve_in_process(keyed_home, insecure_dev=False, **settings) as running:
        yield running


def at_provider(url: str, login: str) -> str:
    """Follow ``url`` through the provider's login and consent forms as ``login``; the URL it finally
    sends the browser to (the console's callback)."""
    with httpx.Client(timeout=10, follow_redirects=False) as browser:
        answer = browser.get(url)
        for _ in range(12):
            if answer.is_redirect:
                target = urllib.parse.urljoin(str(answer.url), answer.headers["location"])
                if target.startswith(REDIRECT):
                    return target
                answer = browser.get(target)
                continue
            assert answer.status_code == 200, answer.text[:500]
            action = re.search(r'<form[^>]*action="([^"]+)"', answer.text)
            prompt = re.search(r'name="prompt" value="([^"]+)"', answer.text)
            assert action and prompt, answer.text[:500]
            form = {"prompt": prompt.group(1)}
            if prompt.group(1) == "login":
                form |= {"login": login, "password": "any"}
            answer = browser.post(urllib.parse.urljoin(str(answer.url), action.group(1)), data=form)
    raise AssertionError("the provider did not send the browser back")


def start(client: httpx.Client) -> str:
    """``/ui/oidc/start``: the provider's authorization URL (the pending cookie is now in ``client``)."""
    answer = client.get("/ui/oidc/start")
    assert answer.status_code == 303, answer.text
    return answer.headers["location"]


def local(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.path}?{parts.query}"


def sign_in(client: httpx.Client, login: str) -> httpx.Response:
    return client.get(local(at_provider(start(client), login)))


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def test_the_login_page_offers_the_provider_beside_api_keys(app: InProcess, keys: Keys) -> None:
    with app.client() as client:
        page = client.get("/ui/login")
        assert 'href="/ui/oidc/start"' in page.text and "Sign in with Test IdP" in page.text
        signed = client.post("/ui/login", data={"csrf": csrf_of(page.text), "key": keys.consumer})
        assert signed.status_code == 303 and signed.headers["location"] == "/ui/models"
        assert client.get("/ui/models").status_code == 200


def test_code_and_pkce_sign_alice_in_with_a_strict_cookie(app: InProcess) -> None:
    with app.client() as client:
        authorize = urllib.parse.parse_qs(urllib.parse.urlsplit(start(client)).query)
        assert authorize["code_challenge_method"] == ["S256"] and authorize["redirect_uri"] == [REDIRECT]
        assert {"state", "nonce", "code_challenge"} <= set(authorize)
        answer = sign_in(client, "alice")
        assert answer.status_code == 200, answer.text
        assert 'http-equiv="refresh" content="0; url=/ui/models"' in answer.text
        cookies = answer.headers.get_list("set-cookie")
        session = next(c for c in cookies if c.startswith("modelport_session="))
        assert "HttpOnly" in session and "SameSite=Strict" in session and "Path=/" in session
        max_age = int(re.search(r"Max-Age=(\d+)", session).group(1))  # type: ignore[union-attr]
        assert 0 < max_age <= 300  # the ID token's lifetime (provider.mjs), not the console's 8 hours
        assert any(c.startswith("modelport_oidc=;") and "Max-Age=0" in c for c in cookies)
        models = client.get("/ui/models")
        assert models.status_code == 200
        assert "<code>alice</code> (publisher)" in models.text
        assert "credit" in models.text and "fraud" not in models.text  # risk's patterns: credit*


def test_a_callback_without_its_state_or_replayed_is_refused(app: InProcess) -> None:
    with app.client() as client:
        callback = at_provider(start(client), "alice")
        parts = urllib.parse.parse_qs(urllib.parse.urlsplit(callback).query)
        wrong = client.get("/ui/oidc/callback", params={"code": parts["code"][0], "state": "forged"})
        assert wrong.status_code == 403
        missing = client.get("/ui/oidc/callback", params={"code": parts["code"][0]})
        assert missing.status_code == 403
        assert client.get("/ui/models").headers["location"] == "/ui/login"

    with app.client() as client:
        callback = at_provider(start(client), "alice")
        pending = client.cookies.get("modelport_oidc")
        assert client.get(local(callback)).status_code == 200
        with app.client() as replay:  # the whole callback again, pending cookie included
            replay.cookies.set("modelport_oidc", pending or "")
            again = replay.get(local(callback))
            assert again.status_code == 401  # the provider refuses a used code
            assert "modelport_session=" not in " ".join(
                c for c in again.headers.get_list("set-cookie") if "Max-Age=0" not in c
            )
            assert replay.get("/ui/models").status_code == 303


def test_a_code_issued_to_another_client_is_refused(app: InProcess) -> None:
    with app.client() as client:
        authorize = start(client)  # the pending cookie of this sign-in, its state
        ours = urllib.parse.parse_qs(urllib.parse.urlsplit(authorize).query)
        verifier = secrets.token_urlsafe(32)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
        theirs = ours | {"client_id": ["elsewhere"], "code_challenge": [challenge.decode()]}
        endpoint = authorize.split("?")[0]
        callback = at_provider(f"{endpoint}?{urllib.parse.urlencode(theirs, doseq=True)}", "alice")
        refused = client.get(local(callback))
        assert refused.status_code == 401
        assert client.get("/ui/models").status_code == 303


def test_an_id_token_for_another_nonce_or_client_is_refused(provider: Provider) -> None:
    verifier = secrets.token_urlsafe(32)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = {
        "response_type": "code",
        "client_id": "console",
        "redirect_uri": REDIRECT,
        "scope": "openid profile groups",
        "state": "s",
        "nonce": "the-nonce",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    callback = at_provider(f"{provider.issuer}/auth?{urllib.parse.urlencode(query)}", "alice")
    code = urllib.parse.parse_qs(urllib.parse.urlsplit(callback).query)["code"][0]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": "console",
        "client_secret": "console-secret",
        "code_verifier": verifier,
    }
    token = httpx.post(f"{provider.issuer}/token", data=form, timeout=10).json()["id_token"]
    checker = TokenVerifier(SigningKeys(provider.issuer), AUDIENCE, ClaimMapping(ROLES, SCOPES))

    async def check() -> None:
        claims = await checker.id_token_claims(token, client_id="console", nonce="the-nonce")
        assert claims["sub"] == "alice" and claims["groups"] == ["risk"]
        for client_id, nonce in (("console", "another-nonce"), ("elsewhere", "the-nonce")):
            with pytest.raises(Unauthenticated):
                await checker.id_token_claims(token, client_id=client_id, nonce=nonce)

    asyncio.run(check())


def test_groups_that_map_to_no_role_get_a_403_page_and_no_session(app: InProcess) -> None:
    with app.client() as client:
        refused = sign_in(client, "mallory")  # groups: visitors
        assert refused.status_code == 403
        assert "Your groups grant no access" in refused.text
        assert not [c for c in refused.headers.get_list("set-cookie") if c.startswith("modelport_session=")]
        assert client.get("/ui/models").status_code == 303


def test_an_alias_move_is_audited_under_the_person(app: InProcess, keyed_home: Path) -> None:
    with app.client() as client:
        assert sign_in(client, "alice").status_code == 200
        page = client.get("/ui/models/credit")
        moved = client.post(
            "/ui/models/credit/aliases/canary", data={"csrf": csrf_of(page.text), "version": "2"}
        )
        assert moved.status_code == 303, moved.text
    registry = open_home(keyed_home)
    try:
        actors = {
            r.to_dict()["actor"]
            for r in registry.store.audit_records()
            if r.to_dict()["target"] == "credit@canary"
        }
    finally:
        registry.close()
    assert "oidc:alice" in actors


def test_logout_ends_the_session_and_goes_to_the_providers_end_session(
    app: InProcess, provider: Provider
) -> None:
    with app.client() as client:
        assert sign_in(client, "alice").status_code == 200
        page = client.get("/ui/models")
        out = client.post("/ui/logout", data={"csrf": csrf_of(page.text)})
        assert out.status_code == 200
        target = re.search(r'content="0; url=([^"]+)"', out.text)
        assert target
        url = target.group(1).replace("&amp;", "&")
        assert url.startswith(f"{provider.issuer}/session/end?client_id=console")
        assert client.get("/ui/models").status_code == 303  # the cookie is gone
        assert httpx.get(url, timeout=10).status_code == 200  # the provider's logout confirmation


def test_the_redirect_url_never_follows_the_host_header(app: InProcess) -> None:
    with app.client() as client:
        for host in ("evil.example", "127.0.0.1:8080.evil.example", "evil.example:8080"):
            answer = client.get("/ui/oidc/start", headers={"Host": host, "X-Forwarded-Host": host})
            assert answer.status_code == 303
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(answer.headers["location"]).query)
            assert query["redirect_uri"] == [REDIRECT]
            assert answer.headers["location"].startswith("http://127.0.0.1:")
