"""Feedback and drift over HTTP and the CLI: who may send labels, what a malformed, oversized or hostile
body gets (a precise 4xx, nothing stored, the app keeps serving; in-process), and the same for the commands."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelport.app import open_registry
from modelport.settings import Settings
from tests.conftest import invoke_cli as cli
from tests.security.conftest import INFER, Keys, bearer, keyed_app, keyed_home, keys
from tests.serving.conftest import InProcess

__all__ = ["keyed_app", "keyed_home", "keys"]


def _stored(home: Path, model: str = "credit") -> dict[tuple[str, int], str]:
    registry = open_registry(Settings(home=home))
    try:
        return registry.store.monitoring.feedback_labels(model)
    finally:
        registry.close()


@pytest.fixture
def http(keyed_app: InProcess) -> Iterator[httpx.Client]:
    """A client of the keyed app (in-process), without a key of its own."""
    with keyed_app.client() as client:
        yield client


def _post(http: httpx.Client, token: str, body: object, **headers: str) -> httpx.Response:
    return http.post(
        "/api/v1/feedback",
        content=json.dumps(body),
        headers={**bearer(token), "content-type": "application/json", **headers},
    )


def test_labels_are_stored_by_request_id_and_a_later_label_replaces(
    http: httpx.Client, keyed_home: Path, keys: Keys
) -> None:
    answered = http.post(
        "/v2/models/credit/infer",
        json=INFER,
        headers={**bearer(keys.consumer), "X-Request-ID": "loan-7"},
    )
    assert answered.status_code == 200 and answered.headers["x-request-id"] == "loan-7"
    first = _post(http, keys.consumer, {"model": "credit", "labels": [{"request_id": "loan-7", "label": 0}]})
    assert first.status_code == 200 and first.json() == {"model": "credit", "stored": 1}
    again = _post(
        http, keys.consumer, {"model": "credit", "labels": [{"request_id": "loan-7", "row": 0, "label": 1}]}
    )
    assert again.status_code == 200
    assert _stored(keyed_home)[("loan-7", 0)] == "1"


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"model": "credit"}, 400, '"labels" must be a non-empty list'),
        ({"model": "credit", "labels": []}, 400, '"labels" must be a non-empty list'),
        ({"labels": [{"request_id": "a", "label": 1}]}, 400, '"model" is required'),
        ({"model": "credit", "labels": [{"request_id": "a"}]}, 400, "the label must be a string or a number"),
        ({"model": "credit", "labels": [{"request_id": "a", "label": True}]}, 400, "string or a number"),
        ({"model": "credit", "labels": [{"request_id": "a", "label": {"x": 1}}]}, 400, "string or a number"),
        (
            {"model": "credit", "labels": [{"request_id": "a", "label": "x" * 201}]},
            400,
            "1 to 200 characters",
        ),
        ({"model": "credit", "labels": [{"request_id": "a b<script>", "label": 1}]}, 400, "X-Request-ID"),
        ({"model": "credit", "labels": [{"request_id": "a" * 129, "label": 1}]}, 400, "X-Request-ID"),
        ({"model": "credit", "labels": [{"request_id": "a", "row": -1, "label": 1}]}, 400, "0-based row"),
        ({"model": "credit", "labels": [{"request_id": "a", "row": "0", "label": 1}]}, 400, "0-based row"),
        (
            {"model": "credit", "labels": [{"request_id": "a", "label": 1, "extra": 2}]},
            400,
            "labels[0] must be",
        ),
        ({"model": "credit", "labels": [{"request_id": "a", "label": 1}], "x": 1}, 400, "unexpected field"),
        ({"model": "credit", "labels": [{"request_id": "a", "label": 1}] * 10_001}, 400, "at most 10,000"),
        ({"model": "nosuch", "labels": [{"request_id": "a", "label": 1}]}, 404, "no model named"),
        ({"model": "../../etc", "labels": [{"request_id": "a", "label": 1}]}, 400, "path characters"),
        ([1, 2], 400, "must be a JSON object"),
    ],
)
def test_bad_feedback_is_refused_and_stores_nothing(
    http: httpx.Client, keyed_home: Path, keys: Keys, body: object, status: int, message: str
) -> None:
    before = _stored(keyed_home)
    response = _post(http, keys.admin, body)
    assert response.status_code == status and message in response.json()["error"], response.text
    assert _stored(keyed_home) == before
    assert http.get("/v2/health/ready").status_code == 200


def test_feedback_needs_json_a_key_and_the_model_in_scope(
    http: httpx.Client, keyed_home: Path, keys: Keys
) -> None:
    body = {"model": "credit", "labels": [{"request_id": "scope-1", "label": 1}]}
    assert _post(http, keys.other, body).status_code == 404  # a key for `fraud` does not learn of `credit`
    assert _post(http, "mpk_abcdefghijkl_wrong", body).status_code == 401
    form = http.post(
        "/api/v1/feedback",
        content=json.dumps(body),
        headers={**bearer(keys.consumer), "content-type": "text/plain"},
    )
    assert form.status_code == 415  # no cross-site "simple request" can write labels
    broken = _post(http, keys.consumer, "{not json")
    assert broken.status_code == 400
    raw = http.post(
        "/api/v1/feedback",
        content=b'{"model": "credit", "labels": [',
        headers={**bearer(keys.consumer), "content-type": "application/json"},
    )
    assert raw.status_code == 400 and "not valid JSON" in raw.json()["error"]
    assert ("scope-1", 0) not in _stored(keyed_home)


def test_drift_over_http(http: httpx.Client, keys: Keys) -> None:
    url = "/api/v1/models/credit/drift"
    shown = http.get(url, headers=bearer(keys.consumer))
    assert shown.status_code == 200
    report = shown.json()
    assert report["model"] == "credit" and report["logging"] is False and "accuracy" in report
    assert http.get(url, params={"windows": "0"}, headers=bearer(keys.consumer)).status_code == 400
    assert http.get(url, params={"windows": "x"}, headers=bearer(keys.consumer)).status_code == 400
    assert http.get(url, params={"version": "-1"}, headers=bearer(keys.consumer)).status_code == 400
    assert http.get(url, headers=bearer(keys.other)).status_code == 404
    assert http.get(url.replace("credit", "nosuch"), headers=bearer(keys.admin)).status_code == 404


def test_cli_bad_input(keyed_home: Path, tmp_path: Path) -> None:
    unknown = cli(keyed_home, "drift", "nosuch")
    assert unknown.returncode == 3 and "no model named" in unknown.stderr
    window = cli(keyed_home, "drift", "credit", "--window", "soon")
    assert window.returncode == 2 and "--window is a span" in window.stderr
    assert cli(keyed_home, "drift", "credit", "--threshold", "0").returncode == 2
    nowhere = cli(keyed_home, "drift", "credit", "--png", str(tmp_path / "missing" / "chart.png"))
    assert nowhere.returncode == 2 and "no folder" in nowhere.stderr
    empty = cli(keyed_home, "drift", "credit")
    assert empty.returncode == 0 and "logs no predictions" in empty.stdout

    assert cli(keyed_home, "feedback", "credit", "--file", str(tmp_path / "none.csv")).returncode == 2
    wrong_columns = tmp_path / "labels.csv"
    wrong_columns.write_text("id,answer\nx,1\n")
    shown = cli(keyed_home, "feedback", "credit", "--file", str(wrong_columns))
    assert shown.returncode == 2 and "request_id" in shown.stderr
    bad_row = tmp_path / "rows.csv"
    bad_row.write_text("request_id,row,label\nr-1,zero,1\n")
    assert cli(keyed_home, "feedback", "credit", "--file", str(bad_row)).returncode == 2
    not_json = tmp_path / "labels.json"
    not_json.write_text("{")
    assert cli(keyed_home, "feedback", "credit", "--file", str(not_json)).returncode == 2
    before = _stored(keyed_home)
    good = tmp_path / "good.csv"
    good.write_text("request_id,row,label\ncli-1,0,1\ncli-2,,0\n")
    assert cli(keyed_home, "feedback", "nosuch", "--file", str(good)).returncode == 3
    assert _stored(keyed_home) == before
    done = cli(keyed_home, "feedback", "credit", "--file", str(good))
    assert done.returncode == 0 and "stored 2 label" in done.stdout
    assert {k: v for k, v in _stored(keyed_home).items() if k[0].startswith("cli-")} == {
        ("cli-1", 0): "1",
        ("cli-2", 0): "0",
    }

    sample = tmp_path / "sample.csv"
    sample.write_text("f0,f1\n1,2\n")
    lacking = cli(keyed_home, "profile", "credit@production", "--sample", str(sample))
    assert lacking.returncode == 2 and "lacks feature" in lacking.stderr
