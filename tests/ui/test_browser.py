"""The console in a real browser: Debian's Chromium driven by Playwright against a real `modelport serve`
on loopback. Walks sign-in, the models list and its filter, a model, a version and sign-out; fails on
any console error (a Content-Security-Policy violation is one) and on serious or critical axe-core
accessibility findings (axe-core is vendored into tests/ui/vendor with its licence, injected by the test).

Chromium comes from Debian (`make tools`); Playwright's own browser download is never used.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.security.conftest import Keys, keyed_home, keys
from tests.serving.conftest import Server, start_server, stop_server

__all__ = ["keyed_home", "keys"]  # fixtures, imported for this module

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
AXE = Path(__file__).parent / "vendor" / "axe-4.14.1.min.js"

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed: make tools"),
]


@pytest.fixture(scope="module")
def server(keyed_home: Path, keys: Keys) -> Iterator[Server]:
    server = start_server(keyed_home, insecure_dev=False)
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield browser
        browser.close()


def accessibility_problems(page: Any) -> list[str]:
    page.evaluate(AXE.read_text())  # through the debugging protocol: not an inline script, so no CSP issue
    result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{v['id']} ({v['impact']}): {v['help']}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def test_a_journey_through_the_console(server: Server, browser: Any, keys: Keys) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    messages: list[str] = []
    page.on(
        "console",
        lambda m: messages.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None,
    )
    page.on("pageerror", lambda e: messages.append(f"pageerror: {e}"))
    problems: dict[str, list[str]] = {}
    expect = sync_api.expect

    page.goto(f"{server.url}/ui/")
    expect(page).to_have_url(f"{server.url}/ui/login")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    problems["login"] = accessibility_problems(page)
    page.get_by_label("API key").fill(keys.admin)
    page.get_by_role("button", name="Sign in").click()

    expect(page.get_by_role("heading", name="Models")).to_be_visible()
    rows = page.locator("#model-rows")
    expect(rows.get_by_role("link", name="credit", exact=True)).to_be_visible()
    expect(rows.get_by_role("link", name="fraud", exact=True)).to_be_visible()
    problems["models"] = accessibility_problems(page)

    page.get_by_label("Filter by name or description").fill("fra")  # htmx swaps the rows in
    expect(rows.get_by_role("link", name="credit", exact=True)).to_have_count(0)
    expect(page.locator("#model-rows").get_by_role("link", name="fraud", exact=True)).to_be_visible()
    page.get_by_label("Filter by name or description").fill("")
    expect(page.locator("#model-rows").get_by_role("link", name="credit", exact=True)).to_be_visible()

    page.locator("#model-rows").get_by_role("link", name="credit", exact=True).click()
    expect(page.get_by_role("heading", name="credit", exact=True)).to_be_visible()
    expect(page.get_by_role("heading", name="Versions")).to_be_visible()
    expect(page.get_by_role("heading", name="Move an alias")).to_be_visible()  # an admin may
    problems["model"] = accessibility_problems(page)

    page.get_by_role("link", name="v1", exact=True).click()
    expect(page.get_by_role("heading", name="Signature")).to_be_visible()
    expect(page.get_by_role("heading", name="Validation reports")).to_be_visible()
    problems["version"] = accessibility_problems(page)

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.goto(f"{server.url}/ui/models")
    expect(page).to_have_url(f"{server.url}/ui/login")
    context.close()

    assert messages == [], messages  # no script error, no CSP violation
    assert {name: found for name, found in problems.items() if found} == {}


def test_a_consumer_sees_no_change_form(server: Server, browser: Any, keys: Keys) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{server.url}/ui/login")
    page.get_by_label("API key").fill(keys.consumer)
    page.get_by_role("button", name="Sign in").click()
    page.goto(f"{server.url}/ui/models/credit")
    sync_api.expect(page.get_by_role("heading", name="Versions")).to_be_visible()
    assert page.get_by_role("heading", name="Move an alias").count() == 0
    assert page.locator("form.move-alias").count() == 0
    context.close()
