"""The whole console journey in one browser session: Debian's Chromium (Playwright) against a real keyed
`modelport serve` and a real OpenID provider (oidc-provider), both on loopback, with real traffic.

Alice (group ``risk`` → publisher on ``credit*``) signs in through the provider, finds the model, opens a
version and its model card, compares two versions, starts a canary, watches its numbers move while a
consumer's application sends requests, promotes it, rolls it back; the operator then protects the alias,
so her next canary waits for a second person: Dave (``ml-publishers``) approves it in his own browser.
Carol (``platform-admins`` → admin) reads the audit trail — every change under the person who made it —
and the access page. A consumer's key sees the pages but no button it may not press; a forged request
without the CSRF token is refused and changes nothing. Everyone signs out. Every page is checked with
axe-core (no serious or critical finding) and no page logs a console error (a CSP violation is one).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelport.registry.service import Registry
from tests.oidc.provider import AUDIENCE, Provider, start_provider, stop_provider
from tests.security.conftest import INFER, Keys, bearer, keyed_home, keys, open_home
from tests.serving.conftest import Server, free_port, stop_server
from tests.ui.browser import ARGS, CHROMIUM, accessibility_problems

__all__ = ["keyed_home", "keys"]  # fixtures, imported for this module

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed: make tools"),
]


@pytest.fixture(scope="module")
def url() -> str:
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
        "MODELPORT_RELEASE_FLUSH_SECONDS": "0.3",
        "MODELPORT_ROUTE_POLL_SECONDS": "0.1",
        "MODELPORT_PREDICTION_LOG_FLUSH_SECONDS": "0.5",
        "MODELPORT_DRIFT_MIN_ROWS": "20",
        "MODELPORT_OIDC_ISSUER": provider.issuer,
        "MODELPORT_OIDC_AUDIENCE": AUDIENCE,
        "MODELPORT_OIDC_ROLES": json.dumps(
            {"risk": "publisher", "ml-publishers": "publisher", "platform-admins": "admin"}
        ),
        "MODELPORT_OIDC_SCOPES": json.dumps(
            {"risk": ["credit*"], "ml-publishers": ["*"], "platform-admins": ["*"]}
        ),
        "MODELPORT_OIDC_CLIENT_ID": "console",
        "MODELPORT_OIDC_CLIENT_SECRET": "console-secret",
        "MODELPORT_OIDC_REDIRECT_URL": f"{url}/ui/oidc/callback",
        "MODELPORT_OIDC_DISPLAY_NAME": "Test IdP",
    }
    exe = str(Path(sys.executable).with_name("modelport"))
    # every request to credit is logged, so the monitoring page has drift to draw
    subprocess.run([exe, "log-policy", "credit", "--sample", "1"], env=env, check=True, capture_output=True)
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


@pytest.fixture
def traffic(server: Server, keys: Keys) -> Iterator[threading.Event]:
    """Set the event and an application sends requests to ``credit`` (a consumer's key) until the end."""
    go, done = threading.Event(), threading.Event()

    def send() -> None:
        with httpx.Client(base_url=server.url, headers=bearer(keys.consumer), timeout=30) as client:
            go.wait()
            while not done.is_set():
                client.post("/v2/models/credit/infer", json=INFER).raise_for_status()

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    yield go
    done.set()
    go.set()
    thread.join(30)


class Browser:
    """One person's browser: a Playwright context that collects console errors and axe findings."""

    def __init__(self, browser: Any, url: str) -> None:
        self.url = url
        self.context = browser.new_context()
        self.page = self.context.new_page()
        self.page.set_default_timeout(15_000)
        self.messages: list[str] = []
        self.problems: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.messages.append(f"pageerror: {error}"))

    def _console(self, message: Any) -> None:
        if message.type in ("error", "warning") and message.location.get("url", "").startswith(self.url):
            self.messages.append(f"{message.type}: {message.text}")

    def check(self) -> None:
        """axe-core over the page as it stands now."""
        self.problems += [f"{self.page.url}: {p}" for p in accessibility_problems(self.page)]

    def sign_in_at_provider(self, login: str) -> None:
        page = self.page
        page.goto(f"{self.url}/ui/login")
        page.get_by_role("link", name="Sign in with Test IdP").click()
        page.locator('input[name="login"]').fill(login)
        page.locator('input[name="password"]').fill("any")
        page.get_by_role("button", name="Sign-in").click()
        page.get_by_role("button", name="Continue").click()  # the provider's consent form
        sync_api.expect(page.get_by_role("heading", name="Models")).to_be_visible()
        sync_api.expect(page.get_by_text(login, exact=True)).to_be_visible()

    def sign_in_with_key(self, token: str) -> None:
        page = self.page
        page.goto(f"{self.url}/ui/login")
        page.get_by_label("API key").fill(token)
        page.get_by_role("button", name="Sign in").click()
        sync_api.expect(page.get_by_role("heading", name="Models")).to_be_visible()

    def sign_out(self, at_provider: bool) -> None:
        page = self.page
        page.get_by_role("button", name="Sign out").click()
        if at_provider:
            page.get_by_role("button", name="Yes, sign me out").click()
        sync_api.expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        page.goto(f"{self.url}/ui/models")
        sync_api.expect(page).to_have_url(f"{self.url}/ui/login")


def _production(registry_home: Path) -> int:
    registry = open_home(registry_home)
    try:
        return registry.model("credit").aliases["production"]
    finally:
        registry.close()


def _protect(registry_home: Path) -> None:
    """The operator's steps: ``modelport alias protect credit@production --require-approval``, which
    also puts the alias behind the promotion gate, and ``modelport validate credit@2`` (the real one),
    which the gate then asks for."""
    registry: Registry = open_home(registry_home)
    try:
        registry.store.releases.set_approval("credit", "production", True, actor="local:operator")
    finally:
        registry.close()
    exe = str(Path(sys.executable).with_name("modelport"))
    env = {**os.environ, "MODELPORT_HOME": str(registry_home)}
    done = subprocess.run(
        [exe, "validate", "credit@2", "--report", str(registry_home.parent / "validation.md")],
        env=env,
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout.decode()[-2000:] + done.stderr.decode()[-2000:]


def test_the_whole_journey_through_the_console(
    server: Server, provider: Provider, keys: Keys, traffic: threading.Event
) -> None:
    url, expect = server.url, sync_api.expect
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        alice = Browser(chromium, url)
        page = alice.page

        # -- sign in through the provider, find the model ------------------------------------------
        alice.sign_in_at_provider("alice")
        alice.check()
        page.get_by_label("Filter").fill("cred")
        rows = page.locator("#model-rows")
        expect(rows.get_by_role("link", name="credit", exact=True)).to_be_visible()
        expect(rows.get_by_role("link", name="fraud", exact=True)).to_have_count(0)  # outside her scope
        rows.get_by_role("link", name="credit", exact=True).click()
        expect(page.get_by_role("heading", name="credit", exact=True)).to_be_visible()
        alice.check()

        # -- open a version and its card, compare two ----------------------------------------------
        page.get_by_role("link", name="v2", exact=True).click()
        expect(page.get_by_role("heading", name="Signature")).to_be_visible()
        alice.check()
        page.get_by_role("link", name="Model card").click()
        expect(page.get_by_role("heading", name="Model card", exact=False).first).to_be_visible()
        alice.check()
        page.goto(f"{url}/ui/models/credit")
        page.get_by_label("Compare v1").check()
        page.get_by_label("Compare v2").check()
        page.get_by_role("button", name="Compare selected").click()
        expect(page.get_by_role("heading", name="Compare credit v1, v2")).to_be_visible()
        alice.check()

        # -- start a canary, watch its numbers move, promote, roll back ---------------------------
        page.goto(f"{url}/ui/models/credit")
        page.get_by_role("link", name="Release of production").click()
        expect(page.get_by_role("heading", name="Release of credit@production")).to_be_visible()
        page.get_by_label("Canary version").fill("2")
        page.get_by_label("Share (%)").fill("50")
        page.get_by_role("button", name="Start canary").click()
        expect(page.get_by_text("The change was applied.")).to_be_visible()
        alice.check()
        traffic.set()  # the page is not reloaded from here on: htmx brings the numbers in
        canary = page.locator('#release-arms tr[data-arm="canary"] td.requests')
        expect(canary).to_be_visible()
        first = canary.inner_text()
        expect(canary).not_to_have_text(first)  # it keeps moving
        page.get_by_role("button", name="Promote v2").click()
        expect(
            page.get_by_text("No release is running: production sends every request to v2")
        ).to_be_visible()
        assert _production(server.home) == 2
        page.get_by_label("Reason").fill("p99 too high for the batch window")
        page.get_by_role("button", name="Roll back").click()
        expect(
            page.get_by_text("No release is running: production sends every request to v1")
        ).to_be_visible()
        assert _production(server.home) == 1

        # -- a forged change without the CSRF token is refused and changes nothing ------------------
        forged = page.request.post(
            f"{url}/ui/models/credit/aliases/production/release/start",
            form={"canary": "2", "weight": "100"},
        )
        assert forged.status == 403
        assert _production(server.home) == 1
        page.reload()
        expect(
            page.get_by_text("No release is running: production sends every request to v1")
        ).to_be_visible()

        # -- the alias is protected: the next canary waits for a second person ---------------------
        _protect(server.home)
        page.get_by_label("Canary version").fill("2")
        page.get_by_label("Share (%)").fill("20")
        page.get_by_role("button", name="Start canary").click()
        expect(page.get_by_text("The change waits for a second person's approval.")).to_be_visible()
        page.get_by_role("link", name="Approvals").first.click()
        expect(page.get_by_role("heading", name="Approvals")).to_be_visible()
        expect(page.get_by_role("button", name="Approve", exact=False)).to_have_count(0)  # not her own
        alice.check()

        dave = Browser(chromium, url)
        dave.sign_in_at_provider("dave")
        dave.page.goto(f"{url}/ui/approvals")
        approve = dave.page.get_by_role("button", name="Approve", exact=False)
        expect(approve).to_have_count(1)
        dave.check()
        approve.click()
        expect(dave.page.get_by_text("The change was approved and applied.")).to_be_visible()
        page.goto(f"{url}/ui/models/credit/aliases/production/release")
        expect(page.locator('#release-arms tr[data-arm="canary"]')).to_be_visible()
        alice.check()

        # -- monitoring of the model ----------------------------------------------------------------
        deadline = time.monotonic() + 30  # the logged traffic reaches the log every 0.5 s
        while True:
            page.goto(f"{url}/ui/models/credit/monitoring")
            if page.locator("svg.chart circle").count() or time.monotonic() > deadline:
                break
            page.wait_for_timeout(500)  # polling a deadline for data, not waiting a fixed time
        expect(page.locator("svg.chart circle").first).to_be_attached()
        expect(page.get_by_role("table").first).to_be_visible()
        alice.check()

        # -- a consumer sees the pages but no button it may not press --------------------------------
        consumer = Browser(chromium, url)
        consumer.sign_in_with_key(keys.consumer)
        consumer.page.goto(f"{url}/ui/models/credit")
        expect(consumer.page.get_by_role("heading", name="credit", exact=True)).to_be_visible()
        expect(consumer.page.get_by_role("heading", name="Move an alias")).to_have_count(0)
        consumer.page.goto(f"{url}/ui/models/credit/aliases/production/release")
        expect(consumer.page.locator("#release-arms")).to_be_visible()
        expect(consumer.page.get_by_role("button", name="Start canary")).to_have_count(0)
        expect(consumer.page.get_by_role("button", name="Roll back")).to_have_count(0)
        expect(consumer.page.get_by_role("link", name="Approvals")).to_have_count(0)
        expect(consumer.page.get_by_role("link", name="Audit")).to_have_count(0)
        consumer.check()

        # -- the audit trail and the access page, as an admin -------------------------------------
        carol = Browser(chromium, url)
        carol.sign_in_at_provider("carol")
        carol.page.get_by_role("link", name="Audit").click()
        expect(carol.page.get_by_text("Chain verified", exact=False)).to_be_visible()
        carol.page.get_by_label("Target starts with").fill("credit@production")
        carol.page.get_by_role("button", name="Filter").click()
        trail = carol.page.locator("table").last
        expect(trail.get_by_text("oidc:alice", exact=False).first).to_be_visible()
        expect(trail.get_by_text("oidc:dave", exact=False).first).to_be_visible()
        carol.check()
        carol.page.get_by_role("link", name="Access").click()
        expect(carol.page.get_by_role("heading", name="Access", exact=False).first).to_be_visible()
        carol.check()

        # -- everyone signs out ------------------------------------------------------------------
        alice.sign_out(at_provider=True)
        dave.sign_out(at_provider=True)
        carol.sign_out(at_provider=True)
        consumer.sign_out(at_provider=False)
        chromium.close()

    people = (alice, dave, consumer, carol)
    assert [m for p in people for m in p.messages] == []
    assert [f for p in people for f in p.problems] == []
