"""The console's release page in-process: each arm's numbers moving with real traffic (the fragment the
page refreshes), the four changes through the API's release manager (audited under the person, pending
when the alias needs a second person), who gets buttons and who is refused, CSRF, scopes, hostile
text."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelport.environment import fingerprint
from modelport.registry.service import Registry
from modelport.releases.manager import ReleaseManager
from tests.conftest import until
from tests.security.conftest import AUTH_FAILURE_BURST, INFER, Keys, keyed_home, keys, open_home
from tests.serving.conftest import InProcess, serve_in_process
from tests.ui.test_console import assert_secure_headers, csrf_of, sign_in

__all__ = ["keyed_home", "keys"]  # fixtures, imported for this module

HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>\x1b]0;title\x07'
PAGE = "/ui/models/credit/aliases/production/release"
ACTIONS = ("start", "promote", "rollback", "stop")
# counts reach the database every 0.2 s and a worker sees a new release within 0.1 s
FAST = {"release_flush_seconds": 0.2, "route_poll_seconds": 0.1}


@pytest.fixture(scope="module")
def app(keyed_home: Path, keys: Keys) -> Iterator[InProcess]:
    """The keyed app, flushing release counts quickly, with ``credit@staging`` requiring a second
    person (credit's versions carry passing validation reports, so the promotion gate lets them by)."""
    registry = open_home(keyed_home)
    try:
        registry.store.releases.set_approval("credit", "staging", True, actor="local:test")
        for number in (1, 2):
            registry.store.validation.add_report(
                "credit", number, passed=True, environment_hash=fingerprint(), report={}, actor="local:test"
            )
    finally:
        registry.close()
    settings = {"default_model": "credit@production", "auth_failure_burst": AUTH_FAILURE_BURST, **FAST}
    with serve_in_process(keyed_home, insecure_dev=False, **settings) as served:
        yield served


@pytest.fixture
def home(keyed_home: Path) -> Iterator[Registry]:
    registry = open_home(keyed_home)
    try:
        yield registry
    finally:
        registry.close()


@pytest.fixture
def clean(home: Registry) -> Iterator[None]:
    """Every test starts and ends with no release on credit and production at v1."""

    def reset() -> None:
        for alias in ("production", "staging"):
            if home.store.releases.release("credit", alias) is not None:
                home.store.releases.stop("credit", alias, actor="local:test")
        if home.model("credit").aliases["production"] != 1:
            home.set_alias("credit", "production", 1, actor="local:test")
        for change in home.store.releases.changes(status="pending"):
            ReleaseManager(home).reject(change.id, actor="local:cleanup", reason=None)

    reset()
    yield
    reset()


def actor(token: str) -> str:
    return f"key:{Keys.id_of(token)}"


def arm_counts(html: str) -> dict[str, int]:
    return {
        arm: int(count)
        for arm, count in re.findall(r'data-arm="(\w+)">.*?<td class="requests">(\d+)</td>', html, re.S)
    }


def last_actor(registry: Registry, action: str, target: str = "credit@production") -> str:
    records = [r for r in registry.store.audit_records(action=action) if r.target == target]
    assert records, action
    return records[-1].actor


def post(client: httpx.Client, action: str, page: str, **form: str) -> httpx.Response:
    return client.post(f"{PAGE}/{action}", data={"csrf": csrf_of(page), **form})


@pytest.mark.usefixtures("clean")
def test_a_consumer_sees_the_numbers_without_buttons_and_its_changes_are_refused(
    app: InProcess, keys: Keys, home: Registry
) -> None:
    with app.client(keys.admin) as api:
        started = api.put(
            "/api/v1/models/credit/aliases/production/release", json={"canary": 2, "weight": 20}
        )
        assert started.status_code == 200, started.text
    with sign_in(app, keys.consumer) as client:
        page = client.get(PAGE)
        assert page.status_code == 200
        assert_secure_headers(page)
        assert "v2 at 20.0 %" in page.text and "Agreement with primary" in page.text
        for button in ("Start canary", "Promote v", "Roll back", "Stop the release"):
            assert button not in page.text
        assert f'href="{PAGE}"' in client.get("/ui/models/credit").text  # linked from the model page
        for action in ACTIONS:  # not drawn, and refused anyway
            refused = post(client, action, page.text, canary="1", weight="50")
            assert refused.status_code == 403, action
            assert_secure_headers(refused)
    assert home.store.releases.release("credit", "production") is not None  # still running, unchanged
    assert home.model("credit").aliases["production"] == 1
    # outside the key's patterns: not found, as the API answers
    with sign_in(app, keys.other) as client, app.client(keys.other) as api:
        assert (
            client.get(PAGE).status_code
            == api.get("/api/v1/models/credit/aliases/production/release").status_code
            == 404
        )
        assert client.get(f"{PAGE}/arms").status_code == 404
    with sign_in(app, keys.publisher) as client:
        token = csrf_of(client.get("/ui/models").text)
        fraud = "/ui/models/fraud/aliases/production/release"
        assert client.get(fraud).status_code == 404
        assert client.post(f"{fraud}/stop", data={"csrf": token}).status_code == 404


@pytest.mark.usefixtures("clean")
def test_a_publisher_runs_a_canary_watches_its_numbers_promotes_rolls_back_and_stops(
    app: InProcess, keys: Keys, home: Registry
) -> None:
    with sign_in(app, keys.publisher) as client, app.client(keys.consumer) as traffic:
        page = client.get(PAGE).text
        assert "No release is running" in page and "Start canary</button>" in page
        started = post(client, "start", page, canary="2", weight="20")
        assert started.status_code == 303, started.text
        assert started.headers["location"] == f"{PAGE}?done=applied"
        page = client.get(started.headers["location"]).text
        assert "The change was applied." in page and "v2 at 20.0 %" in page and "Promote v2</button>" in page

        def counted() -> dict[str, int] | None:
            for _ in range(20):  # real requests through the V2 data plane, split by the worker
                assert traffic.post("/v2/models/credit/infer", json=INFER).status_code == 200
            fragment = client.get(f"{PAGE}/arms")
            counts = arm_counts(fragment.text)
            return counts if counts.get("primary", 0) > 0 and counts.get("canary", 0) > 0 else None

        counts = until(counted, interval=0.05)
        fragment = client.get(f"{PAGE}/arms")
        assert arm_counts(fragment.text)["canary"] >= counts["canary"]
        assert re.search(r"\d+\.\d+ ms", fragment.text)  # p50 and p99 of counted requests

        promoted = post(client, "promote", page)
        assert promoted.status_code == 303
        assert home.model("credit").aliases["production"] == 2
        assert home.store.releases.release("credit", "production") is None

        page = client.get(PAGE).text
        back = post(client, "rollback", page, reason="watching it")  # no release: the alias moves back
        assert back.status_code == 303
        assert home.model("credit").aliases["production"] == 1

        assert post(client, "start", page, canary="2", weight="5").status_code == 303
        page = client.get(PAGE).text
        assert "Stop the release</button>" in page
        assert post(client, "stop", page).status_code == 303
        assert home.store.releases.release("credit", "production") is None
        assert "No release is running" in client.get(PAGE).text
    for action in ("release.start", "release.promote", "alias.rollback", "release.stop"):
        assert last_actor(home, action) == actor(keys.publisher), action


@pytest.mark.usefixtures("clean")
def test_the_fragment_is_only_the_numbers_under_the_console_headers(app: InProcess, keys: Keys) -> None:
    with sign_in(app, keys.consumer) as client:
        page = client.get(PAGE).text
        assert f'hx-get="{PAGE}/arms"' in page and 'hx-trigger="every 2s"' in page
        assert not re.search(r"<script(?![^>]*\bsrc=)", page)  # no inline script: the CSP holds
        fragment = client.get(f"{PAGE}/arms")
        assert fragment.status_code == 200
        assert_secure_headers(fragment)
        assert fragment.headers["cache-control"] == "no-store"
        assert fragment.headers["content-type"].startswith("text/html")
        text = fragment.text.lower()
        assert "<html" not in text and "<script" not in text and "<form" not in text
        assert "no release is running" in text
    with app.client() as anonymous:  # signed out: the sign-in page, never numbers
        assert anonymous.get(f"{PAGE}/arms").status_code == 303
        # htmx's refresh of an expired session: told to load the sign-in page, not to swap it in
        refresh = anonymous.get(f"{PAGE}/arms", headers={"HX-Request": "true"})
        assert refresh.status_code == 200 and refresh.text == ""
        assert refresh.headers["hx-redirect"] == "/ui/login"
        assert "default-src 'none'" in refresh.headers["content-security-policy"]


@pytest.mark.usefixtures("clean")
def test_a_post_without_the_csrf_token_changes_nothing(app: InProcess, keys: Keys, home: Registry) -> None:
    ReleaseManager(home).start("credit", "production", actor="local:test", canary=2, weight=20)
    release = home.store.releases.release("credit", "production")
    with sign_in(app, keys.publisher) as client:
        for data, headers in (({}, {}), ({"csrf": "x" * 43}, {}), ({}, {"X-CSRF-Token": "y" * 43})):
            for action in ACTIONS:
                refused = client.post(
                    f"{PAGE}/{action}", data={**data, "canary": "1", "weight": "50"}, headers=headers
                )
                assert refused.status_code == 403, action
                assert_secure_headers(refused)
    assert home.store.releases.release("credit", "production") == release
    assert home.model("credit").aliases["production"] == 1


@pytest.mark.usefixtures("clean")
def test_a_change_needing_approval_shows_as_pending(app: InProcess, keys: Keys, home: Registry) -> None:
    staging = "/ui/models/credit/aliases/staging/release"
    with sign_in(app, keys.publisher) as client:
        page = client.get(staging).text
        asked = client.post(f"{staging}/start", data={"csrf": csrf_of(page), "canary": "1", "weight": "10"})
        assert asked.status_code == 303 and asked.headers["location"] == f"{staging}?done=pending"
        shown = client.get(asked.headers["location"]).text
        assert "waits for a second person" in shown and 'href="/ui/approvals"' in shown
        assert "No release is running" in shown
    pending = home.store.releases.changes(status="pending")
    assert [(c.model, c.alias, c.action, c.requested_by) for c in pending] == [
        ("credit", "staging", "release", actor(keys.publisher))
    ]
    assert home.store.releases.release("credit", "staging") is None


@pytest.mark.usefixtures("clean")
def test_hostile_text_is_escaped(app: InProcess, keys: Keys, home: Registry) -> None:
    # whoever started a release is shown: an OpenID identity is the provider's text
    home.store.releases.start(
        "credit",
        "staging",
        canary=1,
        weight=10.0,
        sticky=None,
        shadow=None,
        auto_rollback=None,
        actor=HOSTILE,
    )
    with sign_in(app, keys.admin) as client:
        for path in (
            "/ui/models/credit/aliases/staging/release",
            "/ui/models/credit/aliases/staging/release/arms",
        ):
            shown = client.get(path)
            assert shown.status_code == 200
            assert "<script>alert" not in shown.text and "<img src=x" not in shown.text
            assert "\x1b" not in shown.text and "&lt;script&gt;" in shown.text
        for alias in ("%3Cscript%3Ealert(1)", "%22%3E%3Cimg%20src%3Dx%3E"):
            refused = client.get(f"/ui/models/credit/aliases/{alias}/release")
            assert refused.status_code == 400
            assert_secure_headers(refused)
            assert "<script>" not in refused.text and "<img" not in refused.text
        page = client.get("/ui/models/credit/aliases/staging/release").text
        bad = client.post(
            "/ui/models/credit/aliases/staging/release/start",
            data={"csrf": csrf_of(page), "canary": "<b>1</b>", "weight": "10"},
        )
        assert bad.status_code == 400 and "<b>" not in bad.text
