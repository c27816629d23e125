"""GET /api/v1/models/{name}/evidence on the keyed app, in-process: the bundle an admin downloads holds
what the core builds; other roles are refused; bad times are 400s."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from modelport.evidence.build import build_evidence
from modelport.registry.service import Registry
from tests.evidence.conftest import History
from tests.security.conftest import bearer
from tests.serving.conftest import serve_in_process

URL = "/api/v1/models/credit/evidence"
# the server leaves drift out (it does not read the prediction log at a past time), and says so; the
# manifest and summary differ with it and with the time of generation
SAME = ("serving.json", "approvals.json", "validation.json", "audit.jsonl", "lineage/2.json", "cards/3.md")


@pytest.fixture(scope="module")
def http(history: History) -> Iterator[httpx.Client]:
    with serve_in_process(history.home, insecure_dev=False) as app, app.client() as client:
        yield client


def test_an_admin_downloads_the_bundle(http: httpx.Client, history: History, registry: Registry) -> None:
    at = history.t2.isoformat()
    answer = http.get(URL, params={"at": at}, headers=bearer(history.admin))
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/zip"
    assert "attachment" in answer.headers["content-disposition"]
    archive = zipfile.ZipFile(io.BytesIO(answer.content))
    files = {name: archive.read(name) for name in archive.namelist()}
    local = build_evidence(registry, "credit", history.t2, now=datetime.now(UTC))
    assert set(files) == set(local.files)
    for name in SAME:
        assert files[name] == local.files[name], name
    watched = json.loads(files["monitoring.json"])  # drift and accuracy at T, from the monitor child
    assert watched["included"] is True and watched["drift"]["until"].startswith(history.t2.isoformat()[:19])
    assert answer.headers["x-evidence-manifest-sha256"] == hashlib.sha256(files["manifest.json"]).hexdigest()


def test_the_summary_as_json(http: httpx.Client, history: History) -> None:
    answer = http.get(
        URL, params={"at": history.t2.isoformat(), "format": "json"}, headers=bearer(history.admin)
    )
    assert answer.status_code == 200, answer.text
    summary = answer.json()
    assert summary["aliases"]["production"]["version"] == 2
    assert summary["aliases"]["production"]["approved"]["approved_by"] == "key:bob"
    assert len(summary["manifest_sha256"]) == 64
    earlier = http.get(
        URL, params={"at": history.t1.isoformat(), "format": "json"}, headers=bearer(history.admin)
    )
    assert earlier.json()["aliases"]["production"]["version"] == 1


def test_refusals(http: httpx.Client, history: History) -> None:
    at = {"at": history.t2.isoformat()}
    assert http.get(URL, params=at, headers=bearer(history.consumer)).status_code == 403
    assert http.get(URL, params=at).status_code == 401
    admin = bearer(history.admin)
    assert http.get(URL, headers=admin).status_code == 400
    bad = http.get(URL, params={"at": "last tuesday"}, headers=admin)
    assert bad.status_code == 400 and "ISO 8601" in bad.json()["error"]
    assert http.get(URL, params={**at, "format": "pdf"}, headers=admin).status_code == 400
    assert http.get(URL, params={"at": history.t0.isoformat()}, headers=admin).status_code == 400
    assert http.get("/api/v1/models/nope/evidence", params=at, headers=admin).status_code == 404
