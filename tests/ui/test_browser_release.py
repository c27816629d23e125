"""The release page in a real browser (Debian's Chromium, Playwright, a real `modelport serve` on
loopback): a publisher starts a canary, watches htmx refresh the arms' numbers while real traffic flows,
and promotes it; no console error (a CSP violation is one), no serious accessibility finding."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.security.conftest import INFER, Keys, bearer, keyed_home, keys
from tests.serving.conftest import Server, start_server, stop_server
from tests.ui.test_browser import ARGS, CHROMIUM, accessibility_problems

__all__ = ["keyed_home", "keys"]  # fixtures, imported for this module

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed: make tools"),
]


@pytest.fixture(scope="module")
def server(keyed_home: Path, keys: Keys) -> Iterator[Server]:
    env = {"MODELPORT_RELEASE_FLUSH_SECONDS": "0.3", "MODELPORT_ROUTE_POLL_SECONDS": "0.1"}
    server = start_server(keyed_home, insecure_dev=False, env=env)
    yield server
    stop_server(server)


@pytest.fixture
def traffic(server: Server, keys: Keys) -> Iterator[threading.Event]:
    """Set the event and requests flow to ``credit`` until the test ends (a consumer's key)."""
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


def test_a_publisher_watches_a_canary_and_promotes_it(
    server: Server, keys: Keys, traffic: threading.Event
) -> None:
    expect = sync_api.expect
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        page = browser.new_context().new_page()
        page.set_default_timeout(15_000)
        messages: list[str] = []
        page.on(
            "console",
            lambda m: messages.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None,
        )
        page.on("pageerror", lambda e: messages.append(f"pageerror: {e}"))
        page.goto(f"{server.url}/ui/login")
        page.get_by_label("API key").fill(keys.publisher)
        page.get_by_role("button", name="Sign in").click()
        page.goto(f"{server.url}/ui/models/credit")
        page.get_by_role("link", name="Release of production").click()
        expect(page.get_by_role("heading", name="Release of credit@production")).to_be_visible()
        expect(page.get_by_text("No release is running")).to_be_visible()

        page.get_by_label("Canary version").fill("2")
        page.get_by_label("Share (%)").fill("50")
        page.get_by_role("button", name="Start canary").click()
        expect(page.get_by_text("The change was applied.")).to_be_visible()
        problems = accessibility_problems(page)

        traffic.set()  # the page is not reloaded from here on: htmx brings the numbers in
        canary = page.locator('#release-arms tr[data-arm="canary"] td.requests')
        expect(canary).to_be_visible()
        first = canary.inner_text()
        expect(canary).not_to_have_text(first)  # it keeps moving

        page.get_by_role("button", name="Promote v2").click()
        expect(
            page.get_by_text("No release is running: production sends every request to v2")
        ).to_be_visible()
        browser.close()
    assert messages == [], messages
    assert problems == [], problems
