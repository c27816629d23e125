"""The Version page and its printable model card (``…/versions/{number}`` and ``…/card``), in-process.

The registry is ``keyed`` (credit v1 production, v2 staging; fraud v1). Added through the store's own
calls once the app runs: credit v3, a copy of v1 carrying markup in its description and tags, metrics
and a ``doctor --fix`` migration in its lineage; credit v4, a copy of v1 whose recorded golden answers
were changed, so this server refuses it when it loads it; stored validation reports on v1 (golden cases
reproduced in this environment) and v2 (not reproduced, in another environment)."""

from __future__ import annotations

import dataclasses
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelport.environment import fingerprint
from modelport.registry.names import ModelRef
from modelport.registry.records import VersionRecord
from modelport.ui.card import GOLDEN_SHOWN, golden_of, proof_of
from tests.conftest import until
from tests.security.conftest import INFER, Keys, bearer, keyed_app, keyed_home, keys, open_home
from tests.serving.conftest import InProcess
from tests.ui.test_compare_page import copy_of
from tests.ui.test_console import assert_secure_headers, sign_in

__all__ = ["keyed_app", "keyed_home", "keys"]  # fixtures, imported for this module

HOSTILE = "<script>alert(1)</script>"
HOSTILE_TAG = '"><img src=x onerror=alert(2)>'
MIGRATION = {"at": "2026-11-30T10:00:00+00:00", "by": "local:ops", "action": "re-converted", "proof": "ok"}


def _golden_check(passed: bool) -> dict[str, Any]:
    failures = [] if passed else ["golden row 0: label 'A', recorded 'B'"]
    return {
        "name": "golden cases",
        "passed": passed,
        "cases": 20,
        "detail": "20 recorded rows",
        "failures": failures,
    }


@dataclasses.dataclass
class Setup:
    v1: VersionRecord
    v3: VersionRecord
    v4: VersionRecord
    profile: dict[str, Any] | None


@pytest.fixture(scope="module")
def setup(keyed_app: InProcess, keyed_home: Path) -> Setup:
    registry = open_home(keyed_home)
    try:
        v1 = registry.get(ModelRef("credit", version=1))
        lineage = dict(v1.lineage) | {"metrics": {"auc": 0.91}, "migrations": [MIGRATION]}
        v3 = registry.store.add_version(
            copy_of(v1, description=HOSTILE, tags={"note": HOSTILE_TAG}, lineage=lineage)
        )
        golden = dict(v1.golden)
        outputs = dict(golden["outputs"])
        outputs["probabilities"] = [list(reversed(row)) for row in outputs["probabilities"]]
        v4 = registry.store.add_version(copy_of(v1, golden=golden | {"outputs": outputs}))
        for number, passed, environment in ((1, True, fingerprint()), (2, False, "e" * 64)):
            registry.store.validation.add_report(
                "credit",
                number,
                passed=passed,
                environment_hash=environment,
                report={"checks": [_golden_check(passed)]},
                actor="local:test",
            )
        profile = registry.store.monitoring.profiles("credit").get(1)
    finally:
        registry.close()
    return Setup(v1, v3, v4, profile)


class _Tables(HTMLParser):
    """The text of each cell of each table (by its id), and of each element with an id."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        table = found.get("id") if tag == "table" else None
        if table:
            self._table = table
            self.tables[table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._table and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def tables(html: str) -> dict[str, list[list[str]]]:
    parser = _Tables()
    parser.feed(html)
    return parser.tables


def test_the_version_page_shows_the_recorded_proof_and_golden_cases(
    keyed_app: InProcess, keys: Keys, setup: Setup
) -> None:
    with sign_in(keyed_app, keys.consumer) as client:
        page = client.get("/ui/models/credit/versions/1")
        assert page.status_code == 200
        assert_secure_headers(page)
        html = page.text
        found = tables(html)
        recorded = setup.v1.conversion["proof"]
        proof = dict(row for row in found["proof"])
        assert proof["Rows compared"] == str(recorded["rows"])
        assert proof["Largest deviation"] == f"{recorded['max_abs_diff']:.2e}"
        assert proof["Tolerance"] == f"{recorded['tolerance']:.2e}"
        assert proof["Label mismatches"] == str(recorded["label_mismatches"])
        assert proof["Rows over tolerance"] == str(recorded["rows_over_tolerance"])
        assert setup.v1.conversion["status"] == "equivalent" and "equivalent: the ONNX twin serves" in html
        # the golden table: a header, then the first GOLDEN_SHOWN stored rows and their recorded answers
        golden = setup.v1.golden
        head, *rows = found["golden"]
        assert head == ["#", *golden["columns"], "Recorded label (probability)"]
        assert len(rows) == min(GOLDEN_SHOWN, len(golden["rows"])) and len(golden["rows"]) > GOLDEN_SHOWN
        assert f"The first {len(rows)} of {len(golden['rows'])} stored rows" in html
        for index, (row, stored) in enumerate(zip(rows, golden["rows"], strict=False)):
            assert row[0] == str(index + 1)
            for cell, value in zip(row[1:-1], stored, strict=True):
                if value is None:
                    assert cell == "missing"
                elif isinstance(value, float):
                    assert float(cell) == pytest.approx(value, rel=1e-5)
                else:
                    assert cell == str(value)
            label = golden["outputs"]["labels"][index]
            top = max(golden["outputs"]["probabilities"][index])
            assert row[-1] == f"{label} ({top:.3f})"
        assert golden_of(golden).rows == tuple(tuple(r[1:-1]) for r in rows)
        assert 'href="/ui/models/credit/versions/1/card"' in html


def test_validation_and_doctor_verdicts(keyed_app: InProcess, keys: Keys, setup: Setup) -> None:
    with sign_in(keyed_app, keys.consumer) as client:
        v1 = client.get("/ui/models/credit/versions/1").text
        assert "#1</th><td>passed" in v1 or ">passed<" in v1
        assert 'class="state-ok">reproduces</dd>' in v1
        assert "in this server's library environment" in v1
        assert "validation report #" in v1 and "local:test" in v1
        v2 = client.get("/ui/models/credit/versions/2").text
        assert 'class="state-bad">does not reproduce</dd>' in v2
        assert "in another library environment than this server's" in v2
        assert "first failure: golden row 0: label &#39;A&#39;, recorded &#39;B&#39;" in v2
        # fraud v1 has no report: the page says so and what would store one
        with sign_in(keyed_app, keys.admin) as admin:
            fraud = admin.get("/ui/models/fraud/versions/1").text
        assert "No validation report yet" in fraud and ">not checked yet</dd>" in fraud
        assert "No stored replay yet" in fraud
        # a doctor --fix migration recorded in the lineage is shown with the verdict
        v3 = client.get("/ui/models/credit/versions/3").text
        assert "2026-11-30T10:00:00+00:00 by local:ops: re-converted — ok" in v3
    # this server's own replay: v4's recorded answers were changed, so loading it fails its golden check
    with keyed_app.client() as api:

        def answer_v4() -> (
            httpx.Response | None
        ):  # the server sees v4 at its next registry poll: 404 until then
            answer = api.post("/v2/models/credit/versions/4/infer", json=INFER, headers=bearer(keys.admin))
            return None if answer.status_code == 404 else answer

        refused = until(answer_v4)
        assert refused.status_code >= 500, refused.text
        served = api.post("/v2/models/credit/versions/1/infer", json=INFER, headers=bearer(keys.admin))
        assert served.status_code == 200, served.text
    with sign_in(keyed_app, keys.consumer) as client:
        v4 = client.get("/ui/models/credit/versions/4").text
        assert "refused by this server at" in v4 and "does not reproduce its golden cases" in v4
        v1 = client.get("/ui/models/credit/versions/1").text
        assert "loaded by this server, which replayed its golden cases and got the recorded answers" in v1


def test_the_model_card(keyed_app: InProcess, keys: Keys, setup: Setup) -> None:
    with sign_in(keyed_app, keys.consumer) as client:
        page = client.get("/ui/models/credit/versions/1/card")
        assert page.status_code == 200
        assert_secure_headers(page)
        assert page.headers["cache-control"] == "no-store"
        html = page.text
        for heading in (
            "Model details",
            "Intended use",
            "Training data and lineage",
            "Metrics",
            "Signature",
            "Equivalence proof of the ONNX twin",
            "Validation",
            "Environment at registration",
        ):
            assert f">{heading}</h2>" in html, heading
        assert "Generated at " in html and " UTC by modelport" in html
        found = tables(html)
        v1 = setup.v1
        details = html.split('id="details"')[1].split("</dl>")[0]
        assert f"<code>{v1.uuid}</code>" in details and v1.creator in details
        assert '<span class="badge">production</span>' in details and f"<dd>{v1.status}</dd>" in details
        assert f"<dd>{v1.created_at.strftime('%Y-%m-%d %H:%M')}</dd>" in details
        assert '<p id="intended">not recorded</p>' in html
        assert dict(found["proof"]) == dict(proof_of(v1.conversion).numbers)
        signature = found["signature"][1:]
        assert [row[0] for row in signature] == [f["name"] for f in v1.signature["inputs"]]
        assert f"{len(v1.golden['rows'])} stored rows with their recorded answers" in html
        assert "passed" in html.split('id="validation"')[1] and "reproduces" in html
        if setup.profile and setup.profile.get("accuracy") is not None:
            metrics = dict(found["metrics"][1:])
            assert metrics["reference accuracy (registration sample)"] == f"{setup.profile['accuracy']:.4f}"
        assert f"{v1.environment['python']}" in html.split('id="environment"')[1]
        # v3: metrics from the lineage, the description as intended use
        v3 = client.get("/ui/models/credit/versions/3/card").text
        assert dict(tables(v3)["metrics"][1:])["auc"] == "0.91"
        assert "2026-11-30T10:00:00+00:00 by local:ops" in v3


def test_hostile_text_is_escaped_on_both_pages(keyed_app: InProcess, keys: Keys, setup: Setup) -> None:
    with sign_in(keyed_app, keys.admin) as client:
        for path in ("/ui/models/credit/versions/3", "/ui/models/credit/versions/3/card"):
            html = client.get(path).text
            assert HOSTILE not in html and HOSTILE_TAG not in html, path
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, path
            assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in html, path
            assert "<style" not in html and "style=" not in html and "<script>" not in html


def test_scope_unknown_versions_and_signed_out(keyed_app: InProcess, keys: Keys, setup: Setup) -> None:
    with sign_in(keyed_app, keys.consumer) as client:  # credit* only
        for path in (
            "/ui/models/fraud/versions/1",
            "/ui/models/fraud/versions/1/card",
            "/ui/models/credit/versions/99",
            "/ui/models/credit/versions/99/card",
            "/ui/models/creditx/versions/1",
            "/ui/models/creditx/versions/1/card",
        ):
            response = client.get(path)
            assert response.status_code == 404, path
            assert_secure_headers(response)
    with sign_in(keyed_app, keys.other) as client:  # fraud only
        assert client.get("/ui/models/fraud/versions/1/card").status_code == 200
        assert client.get("/ui/models/credit/versions/1/card").status_code == 404
    with keyed_app.client() as client:
        for path in ("/ui/models/credit/versions/1", "/ui/models/credit/versions/1/card"):
            response = client.get(path)
            assert response.status_code == 303 and response.headers["location"] == "/ui/login", path


def test_print_stylesheet_hides_the_console_chrome(keyed_app: InProcess) -> None:
    with keyed_app.client() as client:
        css = client.get("/ui/static/console.css").text
    printing = css[css.rindex("@media print") :]
    assert ".skip" in printing and ".top" in printing and "nav" in printing
    assert "break-inside: avoid" in printing and "#000" in printing and "#fff" in printing
