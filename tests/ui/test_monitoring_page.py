"""The console's monitoring page in-process, over a real registry: traffic with one feature shifted and
its ground truth sent back drift and score as the API's drift report says (the same numbers, the
drifting feature marked, live accuracy and label lag per version); the page explains itself when
monitoring is off, when the model logs nothing and when nothing was logged yet; scopes, bad windows,
hostile feature names and signed-out visitors are refused or escaped."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from modelport.ui.monitoring import duration
from tests.conftest import FEATURES, invoke_cli, until
from tests.security.conftest import AUTH_FAILURE_BURST, Keys, bearer, keyed_home, keys, open_home
from tests.serving.conftest import InProcess, serve_in_process
from tests.ui.test_console import assert_secure_headers, sign_in

__all__ = ["keyed_home", "keys"]  # fixtures, imported for this module

PAGE = "/ui/models/credit/monitoring"
HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
SHIFTED = "f0"  # the feature the traffic moves
V1_ROWS, V2_ROWS = 200, 120  # both at or over the 100 rows a window needs to be judged


@pytest.fixture(scope="module")
def app(keyed_home: Path, keys: Keys) -> Iterator[InProcess]:
    """The keyed app logging every request of ``credit`` and writing the log every 0.1 s; credit@2's
    reference profile also names a feature whose name is markup (never logged, so never compared)."""
    assert invoke_cli(keyed_home, "log-policy", "credit", "--sample", "1").returncode == 0
    registry = open_home(keyed_home)
    try:
        profile = registry.store.monitoring.profiles("credit")[2]
        profile["features"][HOSTILE] = profile["features"]["f1"]
        registry.store.monitoring.set_profile("credit", 2, profile, actor="local:test")
    finally:
        registry.close()
    settings = {
        "default_model": "credit@production",
        "auth_failure_burst": AUTH_FAILURE_BURST,
        "prediction_log_flush_seconds": 0.1,
    }
    with serve_in_process(keyed_home, insecure_dev=False, **settings) as served:
        yield served


def _infer(client: httpx.Client, path: str, rows: pd.DataFrame, request_id: str) -> None:
    matrix = rows[FEATURES].to_numpy(dtype=np.float64)
    body = {
        "inputs": [
            {"name": "input", "datatype": "FP64", "shape": list(matrix.shape), "data": matrix.tolist()}
        ]
    }
    answered = client.post(path, json=body, headers={"X-Request-ID": request_id})
    assert answered.status_code == 200, answered.text


@pytest.fixture(scope="module")
def report(app: InProcess, keys: Keys, data: pd.DataFrame) -> dict[str, Any]:
    """Traffic to v1 (production) with f0 moved by three standard deviations and to v2 (staging) as
    trained, every v1 row's true label sent back; the API's drift report once all of it is counted."""
    shifted = data.iloc[:V1_ROWS].copy()
    shifted[SHIFTED] += 3.0
    calm = data.iloc[V1_ROWS : V1_ROWS + V2_ROWS]
    with app.client(keys.admin) as api:
        for i in range(4):
            _infer(api, "/v2/models/credit/infer", shifted.iloc[i * 50 : (i + 1) * 50], f"shift-{i}")
        _infer(api, "/v2/models/credit/versions/2/infer", calm, "calm-0")
        labels = [
            {"request_id": f"shift-{i // 50}", "row": i % 50, "label": shifted["label"].iloc[i]}
            for i in range(V1_ROWS)
        ]
        stored = api.post("/api/v1/feedback", json={"model": "credit", "labels": labels})
        assert stored.status_code == 200, stored.text

        def counted() -> dict[str, Any] | None:
            answer = api.get("/api/v1/models/credit/drift", params={"windows": "12"})
            assert answer.status_code == 200, answer.text
            found = answer.json()
            rows = {v["version"]: v["windows"][-1]["rows"] for v in found["versions"] if v["windows"]}
            labelled = {a["version"]: a["rows"] for a in found["accuracy"]["versions"]}
            return found if rows == {1: V1_ROWS, 2: V2_ROWS} and labelled == {1: V1_ROWS} else None

        return dict(until(counted, timeout=60, interval=0.2))


def _section(html: str, version: int) -> str:
    """The drift section of one version (a section holds no other)."""
    start = html.index(f'<section aria-labelledby="drift-v{version}"')
    return html[start : html.index("</section>", start)]


def _latest(section: str) -> dict[str, dict[str, str]]:
    """The latest-window table: feature → its PSI, KS and drifting cells and whether the row is marked."""
    table = section[section.index('<table class="grid drift-latest">') :]
    found = {}
    for feature, marked, psi, ks, drifting in re.findall(
        r'<tr data-feature="([^"]*)"( class="state-bad")?>\s*<th scope="row">.*?</th>\s*'
        r'<td class="psi">([^<]*)</td>\s*<td class="ks">([^<]*)</td>\s*<td class="drifting">(\w+)</td>',
        table,
        re.S,
    ):
        found[unescape(feature)] = {
            "psi": psi,
            "ks": ks,
            "drifting": drifting,
            "marked": "yes" if marked else "no",
        }
    return found


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def test_the_page_shows_the_api_numbers_and_marks_the_drifting_feature(
    app: InProcess, keys: Keys, report: dict[str, Any]
) -> None:
    with sign_in(app, keys.consumer) as client:
        assert f'href="{PAGE}"' in client.get("/ui/models/credit").text  # linked from the model page
        page = client.get(PAGE)
        assert page.status_code == 200
        assert_secure_headers(page)
        assert page.headers["cache-control"] == "no-store"
        html = page.text
    assert not re.search(r"<script(?![^>]*\bsrc=)", html) and " style=" not in html  # the CSP holds
    assert "does not log" not in html and "Monitoring is off" not in html
    by_version = {v["version"]: v for v in report["versions"]}
    for number, entry in by_version.items():
        section = _section(html, number)
        assert '<svg class="chart"' in section and "threshold 0.2" in section
        assert section.count('<th scope="col"><time') == 12  # the chart's table: one column per window
        window = entry["windows"][-1]
        shown = _latest(section)
        expected = {
            f["feature"]: {
                "psi": _number(f["psi"]),
                "ks": _number(f["ks"]),
                "drifting": "yes" if f["drifting"] else "no",
                "marked": "yes" if f["drifting"] else "no",
            }
            for f in [*window["features"], window["prediction"]]
        }
        assert shown == expected
    v1 = {f["feature"]: f for f in by_version[1]["windows"][-1]["features"]}
    assert [f for f, found in v1.items() if found["drifting"]] == [SHIFTED]
    assert v1[SHIFTED]["psi"] >= 0.2 and v1[SHIFTED]["ks"] > 0.5
    assert by_version[1]["windows"][-1]["prediction"]["psi"] is not None  # prediction drift, in the table too
    assert not [f for f in by_version[2]["windows"][-1]["features"] if f["drifting"]]

    (accuracy,) = report["accuracy"]["versions"]
    row = html[html.index('<tr data-version="1"') :]
    row = row[: row.index("</tr>")]
    assert f"{accuracy['accuracy'] * 100:.2f} %" in row and f"{accuracy['log_loss']:.4f}" in row
    assert f"{accuracy['reference_accuracy'] * 100:.2f} %" in row and f"<td>{V1_ROWS}</td>" in row
    # f0 moved, the answers with it: accuracy fell more than 5 points (the alert's rule), marked
    assert accuracy["reference_accuracy"] - accuracy["accuracy"] > 0.05 and 'class="state-bad"' in row
    lag = accuracy["label_lag"]
    assert lag["rows"] == V1_ROWS and 0 < lag["median_seconds"] <= lag["p90_seconds"] < 60
    assert f'<td class="lag-median">{duration(lag["median_seconds"])}</td>' in row
    assert f'<td class="lag-p90">{duration(lag["p90_seconds"])}</td>' in row
    assert f'datetime="{lag["latest_label_at"]}"' in row


def test_windows_choose_the_history_and_bad_ones_are_refused(
    app: InProcess, keys: Keys, report: dict[str, Any]
) -> None:
    with sign_in(app, keys.consumer) as client:
        three = client.get(PAGE, params={"windows": "3"})
        assert three.status_code == 200
        assert _section(three.text, 1).count('<th scope="col"><time') == 3
        assert client.get(PAGE, params={"windows": "48"}).status_code == 200
        for bad in ("0", "49", "abc", "-1", "1e3", "4" * 40):
            refused = client.get(PAGE, params={"windows": bad})
            assert refused.status_code == 400, bad
            assert_secure_headers(refused)
            assert "windows must be a number from 1 to 48" in refused.text


def test_scopes_unknown_models_and_signed_out_visitors(app: InProcess, keys: Keys) -> None:
    with sign_in(app, keys.other) as client, app.client(keys.other) as api:  # fraud only
        assert client.get(PAGE).status_code == api.get("/api/v1/models/credit/drift").status_code == 404
        assert client.get("/ui/models/fraud/monitoring").status_code == 200
    with sign_in(app, keys.admin) as client:
        unknown = client.get("/ui/models/nosuch/monitoring")
        assert unknown.status_code == 404
        assert_secure_headers(unknown)
        assert client.get("/ui/models/%3Cscript%3E/monitoring").status_code == 404  # not a model name
    with app.client() as anonymous:
        signed_out = anonymous.get(PAGE)
        assert signed_out.status_code == 303 and signed_out.headers["location"] == "/ui/login"
        with_key = anonymous.get(PAGE, headers=bearer(keys.admin))  # an API key is not a session
        assert with_key.status_code == 303 and with_key.headers["location"] == "/ui/login"


def test_a_feature_name_with_markup_is_escaped(app: InProcess, keys: Keys, report: dict[str, Any]) -> None:
    (v2,) = [v for v in report["versions"] if v["version"] == 2]
    assert HOSTILE in [f["feature"] for f in v2["windows"][-1]["features"]]
    with sign_in(app, keys.admin) as client:
        html = client.get(PAGE).text
    assert "<script>alert" not in html and "<img src=x" not in html
    section = _section(html, 2)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in section  # in the chart's legend and the tables
    assert "not logged (redacted)" in section


def test_a_model_that_logs_nothing_says_how_to_start(app: InProcess, keys: Keys, keyed_home: Path) -> None:
    fraud = "/ui/models/fraud/monitoring"
    with sign_in(app, keys.admin) as client:
        html = client.get(fraud).text
        assert "fraud does not log its predictions" in html
        assert "modelport log-policy fraud --sample 0.1" in html
        assert "No predictions of fraud were logged in the last 12 windows yet." in html
        assert "No labelled predictions yet" in html
        assert invoke_cli(keyed_home, "log-policy", "fraud", "--sample", "1").returncode == 0
        try:
            html = client.get(fraud).text
            assert "does not log" not in html
            assert "No predictions of fraud were logged in the last 12 windows yet: they appear" in html
        finally:
            assert invoke_cli(keyed_home, "log-policy", "fraud", "--sample", "0").returncode == 0


def test_monitoring_off_is_said_plainly(keyed_home: Path, keys: Keys) -> None:
    with serve_in_process(keyed_home, insecure_dev=False, metrics=False) as off:
        with sign_in(off, keys.consumer) as client:
            page = client.get(PAGE)
            assert page.status_code == 200
            assert_secure_headers(page)
            assert "Monitoring is off on this server" in page.text and "MODELPORT_METRICS=false" in page.text
            assert "<svg" not in page.text
            assert client.get(PAGE, params={"windows": "0"}).status_code == 400
        with sign_in(off, keys.admin) as client:
            assert client.get("/ui/models/nosuch/monitoring").status_code == 404
        with sign_in(off, keys.other) as client:
            assert client.get(PAGE).status_code == 404
