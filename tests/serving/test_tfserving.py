"""The TensorFlow Serving / KServe V1 REST protocol (docs/serving.md), in-process through the real ASGI
app: the REST API documentation's examples adapted to the model's features, answers equal to V2's for
the same rows, TF's ``{"error": …}`` shape with the right statuses, and the server serving on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelport.serving.tfserving import SIGNATURE_NAME
from tests.conftest import FEATURES
from tests.serving.conftest import InProcess, serve_in_process

ROWS = [[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [-1.0, 0.5, 2.0, 0.0, -0.3, 1.2], [1.5, -0.7, 0.1, 0.9, 0.0, -2.0]]


def _records(rows: list[list[float]]) -> list[dict[str, float]]:
    return [dict(zip(FEATURES, row, strict=True)) for row in rows]


def _v2(client: httpx.Client, rows: list[list[float]], path: str = "/v2/models/credit/infer") -> list[Any]:
    """V2's answer for ``rows``, as TF Serving row-form predictions."""
    tensor = {"name": "input", "datatype": "FP64", "shape": [len(rows), len(FEATURES)], "data": rows}
    answer = client.post(path, json={"inputs": [tensor]})
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o["data"] for o in answer.json()["outputs"]}
    width = len(outputs["probabilities"]) // len(rows)
    return [
        {"label": label, "probabilities": outputs["probabilities"][i * width : (i + 1) * width]}
        for i, label in enumerate(outputs["label"])
    ]


def _close(got: list[Any], expected: list[Any]) -> None:
    assert [p["label"] for p in got] == [p["label"] for p in expected]
    for a, b in zip(got, expected, strict=True):
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-9)


@pytest.fixture(scope="module")
def client(app: InProcess) -> Any:
    with app.client() as c:
        yield c


def test_row_form_with_objects_answers_as_v2(client: httpx.Client) -> None:
    answer = client.post("/v1/models/credit:predict", json={"instances": _records(ROWS)})
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-model-version"] == "1"
    body = answer.json()
    assert set(body) == {"predictions"}
    _close(body["predictions"], _v2(client, ROWS))


def test_row_form_with_lists_in_signature_order(client: httpx.Client) -> None:
    answer = client.post(
        "/v1/models/credit:predict", json={"signature_name": SIGNATURE_NAME, "instances": ROWS}
    )
    assert answer.status_code == 200, answer.text
    _close(answer.json()["predictions"], _v2(client, ROWS))


def test_columnar_forms(client: httpx.Client) -> None:
    expected = _v2(client, ROWS)
    by_feature = {name: [row[i] for row in ROWS] for i, name in enumerate(FEATURES)}
    for inputs in (by_feature, ROWS):
        answer = client.post("/v1/models/credit:predict", json={"inputs": inputs})
        assert answer.status_code == 200, answer.text
        outputs = answer.json()["outputs"]
        assert set(outputs) == {"label", "probabilities"}
        rows = [{"label": lab, "probabilities": p} for lab, p in zip(*outputs.values(), strict=True)]
        _close(rows, expected)
    # one row as one value per feature (TF's columnar form for a batch of one)
    single = client.post(
        "/v1/models/credit:predict", json={"inputs": dict(zip(FEATURES, ROWS[0], strict=True))}
    )
    assert single.status_code == 200, single.text
    assert single.json()["outputs"]["label"] == [expected[0]["label"]]


def test_versions_and_labels_paths(client: httpx.Client) -> None:
    instances = {"instances": _records(ROWS)}
    v2 = _v2(client, ROWS, "/v2/models/credit/versions/2/infer")
    for path in ("/v1/models/credit/versions/2:predict", "/v1/models/credit/labels/staging:predict"):
        answer = client.post(path, json=instances)
        assert answer.status_code == 200, (path, answer.text)
        assert answer.headers["x-model-version"] == "2"
        _close(answer.json()["predictions"], v2)
    production = client.post("/v1/models/credit/labels/production:predict", json=instances)
    assert production.headers["x-model-version"] == "1"


def test_model_status_and_metadata(client: httpx.Client) -> None:
    status = client.get("/v1/models/credit/versions/1")
    assert status.status_code == 200, status.text
    assert status.json() == {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    every = client.get("/v1/models/credit").json()["model_version_status"]
    assert [s["version"] for s in every] == ["1", "2"]
    assert client.get("/v1/models/credit/labels/staging").json()["model_version_status"][0]["version"] == "2"
    metadata = client.get("/v1/models/credit/metadata").json()
    assert metadata["model_spec"]["version"] == "1"
    definition = metadata["metadata"]["signature_def"]["signature_def"][SIGNATURE_NAME]
    assert sorted(definition["inputs"]) == FEATURES
    assert sorted(definition["outputs"]) == ["label", "probabilities"]


@pytest.mark.parametrize(
    "body, status, words",
    [
        (b'{"instances": [', 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b'{"instances": [], "inputs": []}', 400, "exactly one"),
        (b'{"instances": [[1,2,3,4,5,6]], "signature_name": "classify"}', 400, "signature_name"),
        (b'{"instances": [[1,2,3,4,5,6]], "extra": 1}', 400, "unexpected key"),
        (
            json.dumps({"instances": [{n: 0.1 for n in FEATURES[:5]}]}).encode(),
            400,
            "missing feature(s) 'f5'",
        ),
        (
            json.dumps({"instances": [{**{n: 0.1 for n in FEATURES}, "f9": 1}]}).encode(),
            400,
            "unknown feature(s) 'f9'",
        ),
        (json.dumps({"inputs": {n: [0.1] for n in [*FEATURES[:5], "zz"]}}).encode(), 400, "'zz'"),
        (json.dumps({"instances": [[0.1, "abc", 0.3, 0.4, 0.5, 0.6]]}).encode(), 400, "f1"),
        (json.dumps({"instances": [[0.1, [1, 2], 0.3, 0.4, 0.5, 0.6]]}).encode(), 400, "'f1' holds a list"),
        (
            json.dumps({"instances": [{**{n: 0.1 for n in FEATURES}, "f2": {"a": 1}}]}).encode(),
            400,
            "'f2' holds an object",
        ),
        (json.dumps({"instances": [[0.1, 0.2]]}).encode(), 400, "row 1 has 2 value(s)"),
        (
            json.dumps({"inputs": {n: [0.1] * (2 if n == "f0" else 1) for n in FEATURES}}).encode(),
            400,
            "same number",
        ),
    ],
)
def test_refusals_have_tf_error_shape(client: httpx.Client, body: bytes, status: int, words: str) -> None:
    answer = client.post(
        "/v1/models/credit:predict", content=body, headers={"content-type": "application/json"}
    )
    assert answer.status_code == status, answer.text[:300]
    assert set(answer.json()) == {"error"}
    assert words in answer.json()["error"], answer.json()
    # and the server keeps serving
    assert client.post("/v1/models/credit:predict", json={"instances": ROWS[:1]}).status_code == 200


def test_element_limit_is_checked_before_the_rows(served_home: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(served_home, home)
    with serve_in_process(home, max_elements=60) as running, running.client() as c:
        eleven = c.post("/v1/models/credit:predict", json={"instances": ROWS * 4})  # 12 rows × 6
        assert eleven.status_code == 400
        assert "72 value" not in eleven.json()["error"]
        assert "over the limit of 60 values" in eleven.json()["error"]
        assert c.post("/v1/models/credit:predict", json={"instances": ROWS * 3}).status_code == 200


def test_unknown_models_and_routes(client: httpx.Client) -> None:
    for path in (
        "/v1/models/nothing:predict",
        "/v1/models/credit/versions/9:predict",
        "/v1/models/credit/labels/nope:predict",
    ):
        answer = client.post(path, json={"instances": ROWS})
        assert answer.status_code == 404, (path, answer.text)
        assert set(answer.json()) == {"error"}
    assert client.get("/v1/models/nothing").status_code == 404
    assert client.post("/v1/models/credit:classify", json={"instances": ROWS}).status_code == 404
    wrong = client.get("/v1/models/credit:predict")
    assert wrong.status_code == 405 and set(wrong.json()) == {"error"}


def test_keys_are_required(served_home: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(served_home, home)
    with serve_in_process(home, insecure_dev=False) as running, running.client() as c:
        for method, path in (("POST", "/v1/models/credit:predict"), ("GET", "/v1/models/credit")):
            answer = c.request(method, path, json={"instances": ROWS})
            assert answer.status_code == 401, answer.text
            assert "API key" in answer.json()["error"]
            assert answer.headers["www-authenticate"].startswith("Bearer")


def test_requests_are_counted_as_tfserving(client: httpx.Client) -> None:
    assert client.post("/v1/models/credit:predict", json={"instances": ROWS}).status_code == 200
    metrics = client.get("/metrics").text
    assert 'protocol="tfserving"' in metrics


def test_a_canary_splits_v1_traffic_as_v2(served_home: Path, tmp_path: Path) -> None:
    from modelport.app import open_registry
    from modelport.releases.manager import ReleaseManager
    from modelport.settings import Settings

    home = tmp_path / "home"
    shutil.copytree(served_home, home)
    registry = open_registry(Settings(home=home))
    try:
        ReleaseManager(registry).start("credit", "production", actor="local:test", canary=2, weight=50)
    finally:
        registry.close()
    with serve_in_process(home) as running, running.client() as c:
        answered = {
            c.post("/v1/models/credit/labels/production:predict", json={"instances": ROWS}).headers[
                "x-model-version"
            ]
            for _ in range(60)
        }
        assert answered == {"1", "2"}  # the arms answer /v1 as they answer V2 (50 %, canary v2)
