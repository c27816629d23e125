"""Console single sign-on in a real browser: Debian's Chromium (Playwright) against a real `modelport
serve` and a real OpenID provider (oidc-provider), both on loopback. Alice signs in through the
provider's login and consent forms, sees the models her group may see, moves an alias (her group maps
to publisher here) and signs out at the console and at the provider (RP-initiated logout). Fails on any
console error on the console's pages (a Content-Security-Policy violation is one).

The server is started here rather than with ``start_server``: the provider must know the console's
callback URL, so the console's port is chosen before either starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.oidc.provider import AUDIENCE, Provider, start_provider, stop_provider
from tests.security.conftest import Keys, keyed_home, keys
from tests.serving.conftest import Server, free_port, stop_server
from tests.ui.test_browser import ARGS, CHROMIUM

__all__ = ["keyed_home", "keys"]  # fixtures, imported for this module

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed: make tools"),
]


@pytest.fixture(scope="module")
def url() -> str:
    """The console's address, chosen before the provider starts (it must know the callback)."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory, url: str) -> Iterator[Provider]:
    running = start_provider(tmp_path_factory.mktemp("oidc"), redirect_uris=(f"{url}/ui/oidc/callback",))
    yield running
    stop_provider(running)


@pytest.fixture(scope="module")
def server(keyed_home: Path, keys: Keys, provider: Provider, url: str) -> Iterator[Server]:
    port = int(url.rsplit(":", 1)[1])
    env = {
        **os.environ,
        "MODELPORT_HOME": str(keyed_home),
        "MODELPORT_DRAIN_SECONDS": "0",
        "MODELPORT_OIDC_ISSUER": provider.issuer,
        "MODELPORT_OIDC_AUDIENCE": AUDIENCE,
        "MODELPORT_OIDC_ROLES": json.dumps({"risk": "publisher", "platform-admins": "admin"}),
        "MODELPORT_OIDC_SCOPES": json.dumps({"risk": ["credit*"]}),
        "MODELPORT_OIDC_CLIENT_ID": "console",
        "MODELPORT_OIDC_CLIENT_SECRET": "console-secret",
        "MODELPORT_OIDC_REDIRECT_URL": f"{url}/ui/oidc/callback",
        "MODELPORT_OIDC_DISPLAY_NAME": "Test IdP",
    }
    exe = str(Path(sys.executable).with_name("modelport"))
    process = subprocess.Popen(
        [exe, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    running = Server(url, port, keyed_home, process)
    deadline = time.monotonic() + 60
    with httpx.Client(timeout=1) as probe:
        while True:
            assert process.poll() is None, "server exited during start-up"
            assert time.monotonic() < deadline, "server did not become ready within 60 s"
            try:
                if probe.get(f"{url}/v2/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)  # polling a deadline, not waiting a fixed time
    yield running
    stop_server(running)


def test_alice_signs_in_at_the_provider_moves_an_alias_and_signs_out(
    server: Server, provider: Provider
) -> None:
    url = server.url
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        page = browser.new_context().new_page()
        page.set_default_timeout(15_000)
        messages: list[str] = []

        def on_console(message: Any) -> None:
            if message.type in ("error", "warning") and message.location.get("url", "").startswith(url):
                messages.append(f"{message.type}: {message.text}")

        page.on("console", on_console)
        expect = sync_api.expect

        page.goto(f"{url}/ui/login")
        page.get_by_role("link", name="Sign in with Test IdP").click()
        page.locator('input[name="login"]').fill("alice")
        page.locator('input[name="password"]').fill("any")
        page.get_by_role("button", name="Sign-in").click()
        page.get_by_role("button", name="Continue").click()  # the provider's consent form

        expect(page.get_by_role("heading", name="Models")).to_be_visible()
        expect(page).to_have_url(f"{url}/ui/models")
        expect(page.get_by_text("alice", exact=True)).to_be_visible()
        rows = page.locator("#model-rows")
        expect(rows.get_by_role("link", name="credit", exact=True)).to_be_visible()
        expect(rows.get_by_role("link", name="fraud", exact=True)).to_have_count(0)

        rows.get_by_role("link", name="credit", exact=True).click()
        expect(page.get_by_role("heading", name="Move an alias")).to_be_visible()
        form = page.locator("form.move-alias").first
        form.locator("input[name=version]").fill("2")
        form.get_by_role("button").click()
        expect(page).to_have_url(f"{url}/ui/models/credit?changed=moved")

        page.get_by_role("button", name="Sign out").click()
        page.get_by_role("button", name="Yes, sign me out").click()  # at the provider
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        expect(page).to_have_url(f"{url}/ui/login")
        page.goto(f"{url}/ui/models")
        expect(page).to_have_url(f"{url}/ui/login")
        browser.close()

    assert messages == [], messages
