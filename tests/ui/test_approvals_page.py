"""The console's approvals page in-process: who sees it (``publish``, as ``/api/v1/approvals``), who
gets buttons, CSRF, four eyes (a second person's approval applies the change; the requester's own is
refused as the API refuses it), every decision audited under the person, scopes, hostile text."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelport.environment import fingerprint
from modelport.registry.service import Registry
from tests.security.conftest import Keys, bearer, keyed_app, keyed_home, keys, open_home
from tests.serving.conftest import InProcess, start_server, stop_server
from tests.ui.test_console import assert_secure_headers, csrf_of, sign_in

__all__ = ["keyed_app", "keyed_home", "keys"]  # fixtures, imported for this module

CHROMIUM = Path("/usr/bin/chromium")
HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>\x1b]0;title\x07'


@pytest.fixture(scope="module")
def app(keyed_app: InProcess, keyed_home: Path) -> InProcess:
    """The keyed app with ``credit@staging`` and ``fraud@production`` requiring a second person (and so
    the promotion gate): credit's versions carry a passing validation report here, fraud's do not."""
    registry = open_home(keyed_home)
    try:
        for name, alias in (("credit", "staging"), ("fraud", "production")):
            registry.store.releases.set_approval(name, alias, True, actor="local:test")
        for number in (1, 2):
            registry.store.validation.add_report(
                "credit", number, passed=True, environment_hash=fingerprint(), report={}, actor="local:test"
            )
    finally:
        registry.close()
    return keyed_app


def request_change(app: InProcess, token: str, model: str, alias: str, **body: object) -> int:
    with app.client() as api:
        answer = api.put(f"/api/v1/models/{model}/aliases/{alias}", json=body, headers=bearer(token))
    assert answer.status_code == 202, answer.text
    return int(answer.json()["change"]["id"])


@pytest.fixture
def home(keyed_home: Path) -> Iterator[Registry]:
    registry = open_home(keyed_home)
    try:
        yield registry
    finally:
        registry.close()


def status_of(registry: Registry, change_id: int) -> str:
    return registry.store.releases.change(change_id).status


def audited(registry: Registry, action: str, change: int) -> list[tuple[str, dict[str, Any]]]:
    """(actor, after) of the records of ``action`` about ``change``."""
    records = registry.store.audit_records(action=action)
    return [
        (r.actor, r.after) for r in records if isinstance(r.after, dict) and r.after.get("change") == change
    ]


def actor(token: str) -> str:
    return f"key:{Keys.id_of(token)}"


def test_who_sees_the_page_and_its_buttons(app: InProcess, keys: Keys) -> None:
    change = request_change(app, keys.admin, "credit", "staging", version=1)
    with app.client(keys.consumer) as api:
        api_status = api.get("/api/v1/approvals").status_code
    with sign_in(app, keys.consumer) as client:
        refused = client.get("/ui/approvals")
        assert refused.status_code == api_status == 403
        assert_secure_headers(refused)
        assert "/ui/approvals" not in client.get("/ui/models").text
    with sign_in(app, keys.publisher) as client:
        page = client.get("/ui/approvals")
        assert page.status_code == 200
        assert_secure_headers(page)
        assert page.headers["cache-control"] == "no-store"
        assert f"Approve #{change}</button>" in page.text and f"Reject #{change}</button>" in page.text
        assert actor(keys.admin) in page.text and "credit@staging" in page.text
        assert "gate-passes" in page.text  # version 1 has a passing report here
    with sign_in(app, keys.admin) as client:  # the requester: no buttons for their own change
        own = client.get("/ui/approvals").text
        assert f"Approve #{change}</button>" not in own and "Your request" in own
        rejected = client.post(f"/ui/approvals/{change}/reject", data={"csrf": csrf_of(own)})
        assert rejected.status_code == 403  # not drawn, and refused anyway


def test_a_post_without_the_csrf_token_changes_nothing(app: InProcess, keys: Keys, home: Registry) -> None:
    change = request_change(app, keys.publisher, "credit", "staging", version=1)
    with sign_in(app, keys.admin) as client:
        for data, headers in (({}, {}), ({"csrf": "x" * 43}, {}), ({}, {"X-CSRF-Token": "y" * 43})):
            for verb in ("approve", "reject"):
                refused = client.post(f"/ui/approvals/{change}/{verb}", data=data, headers=headers)
                assert refused.status_code == 403
                assert_secure_headers(refused)
    assert status_of(home, change) == "pending"
    assert home.model("credit").aliases["staging"] == 2


def test_a_second_person_approves_and_the_requester_cannot(
    app: InProcess, keys: Keys, home: Registry
) -> None:
    change = request_change(app, keys.publisher, "credit", "staging", version=1)
    with sign_in(app, keys.publisher) as client:
        page = client.get("/ui/approvals").text
        assert f"Approve #{change}</button>" not in page  # their own request
        refused = client.post(f"/ui/approvals/{change}/approve", data={"csrf": csrf_of(page)})
        with app.client() as api:  # the API refuses it the same way
            api_refused = api.post(
                f"/api/v1/approvals/{change}/approve", json={}, headers=bearer(keys.publisher)
            )
        assert refused.status_code == api_refused.status_code == 403
        assert api_refused.json()["error"] in refused.text.replace("&#39;", "'")
    assert status_of(home, change) == "pending"
    refusal = (actor(keys.publisher), {"change": change, "reason": "self-approval"})
    assert audited(home, "approval.refused", change) == [refusal, refusal]  # the console's, the API's
    with sign_in(app, keys.admin) as client:
        page = client.get("/ui/approvals").text
        assert f"Approve #{change}</button>" in page
        approved = client.post(f"/ui/approvals/{change}/approve", data={"csrf": csrf_of(page)})
        assert approved.status_code == 303 and approved.headers["location"] == "/ui/approvals?done=applied"
        after = client.get(approved.headers["location"]).text
        assert "approved and applied" in after and f"Approve #{change}</button>" not in after
    assert status_of(home, change) == "applied"
    assert home.model("credit").aliases["staging"] == 1
    assert [who for who, _ in audited(home, "approval.approve", change)] == [actor(keys.admin)]
    # back to version 2, the same way (the admin asks, the publisher approves, through the header token)
    back = request_change(app, keys.admin, "credit", "staging", version=2)
    with sign_in(app, keys.publisher) as client:
        token = csrf_of(client.get("/ui/approvals").text)
        done = client.post(f"/ui/approvals/{back}/approve", headers={"X-CSRF-Token": token})
        assert done.status_code == 303
    assert home.model("credit").aliases["staging"] == 2


def test_a_rejection_is_audited_with_its_reason(app: InProcess, keys: Keys, home: Registry) -> None:
    change = request_change(app, keys.publisher, "credit", "staging", version=1)
    with sign_in(app, keys.admin) as client:
        token = csrf_of(client.get("/ui/approvals").text)
        answer = client.post(f"/ui/approvals/{change}/reject", data={"csrf": token, "reason": "not today"})
        assert answer.status_code == 303 and answer.headers["location"] == "/ui/approvals?done=rejected"
        again = client.post(f"/ui/approvals/{change}/approve", data={"csrf": token})
        assert again.status_code == 409  # no longer pending: as the API answers
    assert status_of(home, change) == "rejected"
    assert home.model("credit").aliases["staging"] == 2
    [(who, record)] = audited(home, "approval.reject", change)
    assert who == actor(keys.admin) and record["reason"] == "not today"


def test_changes_outside_the_scope_are_neither_listed_nor_decidable(
    app: InProcess, keys: Keys, home: Registry
) -> None:
    change = request_change(app, keys.admin, "fraud", "production", version=1, override_reason="hotfix R-17")
    with sign_in(app, keys.admin) as client:  # no passing report for fraud: the admin overrode the gate
        assert "gate-overridden" in client.get("/ui/approvals").text
    with sign_in(app, keys.publisher) as client:  # credit* only
        page = client.get("/ui/approvals").text
        assert "fraud@" not in page and f"Approve #{change}</button>" not in page
        for verb in ("approve", "reject"):
            hidden = client.post(f"/ui/approvals/{change}/{verb}", data={"csrf": csrf_of(page)})
            assert hidden.status_code == 404
        missing = client.post("/ui/approvals/999999/approve", data={"csrf": csrf_of(page)})
        assert missing.status_code == 404
    assert status_of(home, change) == "pending"
    home.store.releases.claim(change, approve=False, actor="local:test", reason=None)  # tidy up


def test_hostile_text_in_a_request_is_shown_as_text(app: InProcess, keys: Keys) -> None:
    change = request_change(app, keys.admin, "credit", "staging", version=1, override_reason=HOSTILE)
    with sign_in(app, keys.publisher) as client:
        page = client.get("/ui/approvals")
        text = page.text
        assert "<script>alert(1)" not in text and "<img src=x" not in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "\x1b" not in text
        assert "\\x1b]0;title\\x07" in text
        done = client.post(f"/ui/approvals/{change}/reject", data={"csrf": csrf_of(text)})
        assert done.status_code == 303


def test_unknown_change_ids_are_not_routed(app: InProcess, keys: Keys) -> None:
    with sign_in(app, keys.admin) as client:
        token = csrf_of(client.get("/ui/approvals").text)
        for path in ("/ui/approvals/x/approve", "/ui/approvals/1/delete", "/ui/approvals/1234567890/approve"):
            answer = client.post(path, data={"csrf": token})
            assert answer.status_code == 404, path
            assert isinstance(answer, httpx.Response)


def test_approve_as_a_second_person_and_read_the_trail_in_a_browser(
    app: InProcess, keys: Keys, keyed_home: Path
) -> None:
    """The journey in Debian's Chromium against a real server: no console error (a CSP violation is
    one) and no serious or critical axe-core finding on either page."""
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed: make tools")
    sync_api = pytest.importorskip("playwright.sync_api")
    from tests.ui.browser import ARGS, accessibility_problems

    change = request_change(app, keys.publisher, "credit", "staging", version=1)
    server = start_server(keyed_home, insecure_dev=False)
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
            page = browser.new_page()
            page.set_default_timeout(15_000)
            messages: list[str] = []
            page.on("console", lambda m: messages.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: messages.append(f"pageerror: {e}"))
            expect = sync_api.expect
            page.goto(f"{server.url}/ui/login")
            page.get_by_label("API key").fill(keys.admin)
            page.get_by_role("button", name="Sign in").click()
            page.get_by_role("link", name="Approvals").click()
            expect(page.get_by_role("heading", name="Approvals")).to_be_visible()
            problems = {"approvals": accessibility_problems(page)}
            page.get_by_role("button", name=f"Approve #{change}", exact=True).click()
            expect(page.get_by_text("The change was approved and applied.")).to_be_visible()
            page.get_by_role("link", name="Audit").click()
            expect(page.get_by_text("Chain verified")).to_be_visible()
            expect(page.get_by_text("approval.approve").first).to_be_visible()
            problems["audit"] = accessibility_problems(page)
            browser.close()
    finally:
        stop_server(server)
    assert messages == [], messages
    assert {name: found for name, found in problems.items() if found} == {}
    # back to version 2 for the other tests, as a second person again
    back = request_change(app, keys.admin, "credit", "staging", version=2)
    with sign_in(app, keys.publisher) as client:
        token = csrf_of(client.get("/ui/approvals").text)
        assert client.post(f"/ui/approvals/{back}/approve", data={"csrf": token}).status_code == 303
