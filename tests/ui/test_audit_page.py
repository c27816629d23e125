"""The console's audit page in-process: admins only (as ``/api/v1/audit``), filters and keyset paging,
the chain's verification (OK, then broken by an edit made straight in the database), "what served at
time T" from the audited alias moves, hostile record text shown as text, the security headers."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update

from modelport.registry.audit import AuditRecord
from modelport.registry.schema import audit_log
from modelport.ui.audit import MAX_PAGE, served_at
from tests.security.conftest import Keys, bearer, keyed_app, keyed_home, keys, open_home
from tests.serving.conftest import InProcess
from tests.ui.test_console import assert_secure_headers, sign_in

__all__ = ["keyed_app", "keyed_home", "keys"]  # fixtures, imported for this module

HOSTILE_PATHS = [  # as in tests/security/test_exposure.py: markup and terminal escapes in a target
    "/api/v1/models/x%5B/aliases/%5Dy",
    "/api/v1/models/a%1B%5B1A%1B%5B2K/aliases/b",
    "/api/v1/models/%1B%5D0%3Btitle%07/aliases/p",
    "/api/v1/models/%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E/aliases/p",
]


@pytest.fixture(scope="module")
def app(keyed_app: InProcess) -> InProcess:
    return keyed_app


def seqs(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'<th scope="row">(\d+)</th>', html)]


def audit(client: httpx.Client, **params: str | int) -> httpx.Response:
    response = client.get("/ui/audit", params=params)
    assert response.status_code == 200, response.text[:500]
    assert_secure_headers(response)
    assert response.headers["cache-control"] == "no-store"
    return response


def test_only_admins_see_the_audit_page_as_on_the_api(app: InProcess, keys: Keys) -> None:
    for token in (keys.consumer, keys.publisher):
        with app.client(token) as api:
            api_status = api.get("/api/v1/audit").status_code
        with sign_in(app, token) as client:
            refused = client.get("/ui/audit")
            assert refused.status_code == api_status == 403
            assert_secure_headers(refused)
            assert "/ui/audit" not in client.get("/ui/models").text  # no link to it either
    with sign_in(app, keys.admin) as client:
        assert 'href="/ui/audit"' in client.get("/ui/models").text
        page = audit(client)
        assert "Chain verified" in page.text


def test_filters_and_paging_newest_first(app: InProcess, keys: Keys) -> None:
    with sign_in(app, keys.admin) as client:
        everything = seqs(audit(client, size=MAX_PAGE).text)
        assert everything == sorted(everything, reverse=True) and len(everything) >= 5
        first = audit(client, size=2)
        assert seqs(first.text) == everything[:2]
        older = re.search(r'href="([^"]+)" rel="next"', first.text)
        assert older is not None
        second = audit(client, **dict(httpx.URL(older.group(1).replace("&amp;", "&")).params))
        assert seqs(second.text) == everything[2:4]
        assert "Newest" in second.text

        only_sets = audit(client, action="alias.set", size=MAX_PAGE).text
        assert seqs(only_sets) and "version.register" not in only_sets
        credit = audit(client, target="credit@", size=MAX_PAGE).text
        assert seqs(credit) and "fraud@" not in credit
        admin_actor = f"key:{Keys.id_of(keys.admin)}"
        with app.client(keys.consumer) as api:  # a denied attempt, audited under the consumer's key
            assert api.put("/api/v1/models/credit/aliases/staging", json={"version": 1}).status_code == 403
        consumer_actor = f"key:{Keys.id_of(keys.consumer)}"
        mine = audit(client, actor=consumer_actor, size=MAX_PAGE).text
        assert seqs(mine) and admin_actor not in mine

        future = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
        assert seqs(audit(client, since=future).text) == []
        assert seqs(audit(client, until="2000-01-01T00:00").text) == []
        assert seqs(audit(client, since="2000-01-01T00:00", until=future).text) == seqs(audit(client).text)

        for bad in ({"size": str(MAX_PAGE + 1)}, {"size": "0"}, {"before": "x"}, {"since": "yesterday"}):
            refused = client.get("/ui/audit", params=bad)
            assert refused.status_code == 400, bad
            assert_secure_headers(refused)


def test_chain_verification_shows_a_tampered_record(app: InProcess, keys: Keys, keyed_home: Path) -> None:
    registry = open_home(keyed_home)
    try:
        with sign_in(app, keys.admin) as client:
            assert "Chain verified" in audit(client).text
            with registry.store.db.engine.begin() as conn:  # an insider edits the database
                original = conn.execute(select(audit_log.c.actor).where(audit_log.c.seq == 2)).scalar_one()
                conn.execute(update(audit_log).where(audit_log.c.seq == 2).values(actor="someone-else"))
            try:
                broken = audit(client).text
                assert "Chain broken" in broken and "record 2" in broken
                assert "Chain verified" not in broken
                with app.client(keys.admin) as api:  # the same answer as the API's
                    assert api.get("/api/v1/audit/verify").status_code == 409
            finally:
                with registry.store.db.engine.begin() as conn:
                    conn.execute(update(audit_log).where(audit_log.c.seq == 2).values(actor=original))
            assert "Chain verified" in audit(client).text
    finally:
        registry.close()


def test_what_served_at_a_time(app: InProcess, keys: Keys) -> None:
    with sign_in(app, keys.admin) as client:
        before = datetime.now(UTC)
        with app.client(keys.admin) as api:
            assert api.put("/api/v1/models/credit/aliases/staging", json={"version": 1}).status_code == 200
        try:
            then = audit(client, alias="credit@staging", at=before.isoformat()).text
            assert "pointed at <strong>version 2</strong>" in then
            now = audit(client, alias="credit@staging").text
            assert "pointed at <strong>version 1</strong>" in now and "alias.set" in now
            unset = audit(client, alias="credit@nothere").text
            assert "had not been set" in unset
            early = audit(client, alias="credit@staging", at="2000-01-01T00:00").text
            assert "had not been set" in early
            assert client.get("/ui/audit", params={"alias": "credit"}).status_code == 400
        finally:
            with app.client(keys.admin) as api:
                assert (
                    api.put("/api/v1/models/credit/aliases/staging", json={"version": 2}).status_code == 200
                )


def _record(seq: int, action: str, target: str, after: object, minutes: int) -> AuditRecord:
    at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes)
    return AuditRecord(seq, at, "key:x", action, target, None, after, "", "")


def test_served_at_folds_moves_removals_and_other_targets() -> None:
    records = [
        _record(1, "alias.set", "m@prod", {"version": 1}, 0),
        _record(2, "alias.set", "m@production", {"version": 9}, 1),  # a target the prefix also finds
        _record(3, "release.start", "m@prod", {"canary": 2, "weight": 10}, 2),  # the alias stays on 1
        _record(4, "release.promote", "m@prod", {"version": 2}, 3),
        _record(5, "alias.rollback", "m@prod", {"version": 1}, 4),
        _record(6, "alias.remove", "m@prod", None, 5),
    ]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert served_at(records, "m@prod", start - timedelta(seconds=1)).version is None
    assert [served_at(records, "m@prod", start + timedelta(minutes=m)).version for m in range(6)] == [
        1,
        1,
        1,
        2,
        1,
        None,
    ]
    removed = served_at(records, "m@prod", start + timedelta(minutes=9))
    assert removed.record is not None and removed.record.seq == 6


def test_hostile_text_in_records_is_shown_as_text(app: InProcess, keys: Keys) -> None:
    with app.client() as api:
        for path in HOSTILE_PATHS:  # denied attempts: their paths are recorded as sent
            assert api.put(path, json={"version": 1}, headers=bearer(keys.consumer)).status_code == 403
    with sign_in(app, keys.admin) as client:
        text = audit(client, size=MAX_PAGE).text
        assert "\x1b" not in text and "\x07" not in text
        assert "\\x1b[1A\\x1b[2K" in text and "\\x1b]0;title\\x07" in text
        assert "<img src=x" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
        echoed = client.get(
            "/ui/audit", params={"target": "<script>alert(2)</script>", "alias": "<b>x@y"}
        ).text
        assert "<script>alert(2)" not in echoed and "&lt;script&gt;alert(2)" in echoed
        assert "<b>x@y" not in echoed
