"""MLflow scoring protocol, driven by MLflow's own scoring client and response parser."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from mlflow.deployments import PredictionsResponse
from mlflow.pyfunc.scoring_server.client import ScoringServerClient
from mlflow.utils.proto_json_utils import dump_input_data

from tests.conftest import FEATURES, invoke_cli
from tests.serving.conftest import Server


@pytest.fixture(scope="module")
def rows(data: pd.DataFrame) -> pd.DataFrame:
    return data[FEATURES].iloc[10:16].reset_index(drop=True)


@pytest.fixture(scope="module")
def cli_predictions(
    server: Server, rows: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory
) -> pd.DataFrame:
    """What `modelport predict` prints for the same rows."""
    path = tmp_path_factory.mktemp("mlflow") / "rows.csv"
    rows.to_csv(path, index=False)
    done = invoke_cli(server.home, "predict", "credit@production", "--input", str(path))
    assert done.returncode == 0, done.stderr
    return pd.DataFrame(json.loads(done.stdout))


def _same(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(got.columns) == list(expected.columns)
    assert list(got["label"]) == list(expected["label"])
    probabilities = [c for c in expected.columns if c.startswith("p_")]
    np.testing.assert_allclose(
        got[probabilities].to_numpy(float), expected[probabilities].to_numpy(float), atol=1e-9
    )


def test_mlflow_client_dataframe_split(
    server: Server, rows: pd.DataFrame, cli_predictions: pd.DataFrame
) -> None:
    client = ScoringServerClient("127.0.0.1", server.port)
    client.wait_server_ready(timeout=10)
    assert client.get_version()
    _same(client.invoke(rows).get_predictions(), cli_predictions)


@pytest.mark.parametrize("form", ["inputs-records", "inputs-matrix", "instances", "dataframe_records", "csv"])
def test_every_format_gives_the_cli_predictions(
    server: Server, rows: pd.DataFrame, cli_predictions: pd.DataFrame, form: str
) -> None:
    headers = {"Content-Type": "application/json"}
    body: Any
    if form == "inputs-records":
        body = dump_input_data(rows.to_dict(orient="records"))
    elif form == "inputs-matrix":
        body = dump_input_data(rows.to_numpy())
    elif form == "instances":
        body = dump_input_data(rows.to_dict(orient="records"), inputs_key="instances")
    elif form == "dataframe_records":
        body = json.dumps({"dataframe_records": rows.to_dict(orient="records"), "params": {"threshold": 0.5}})
    else:
        body, headers = rows.to_csv(index=False), {"Content-Type": "text/csv"}
    response = httpx.post(f"{server.url}/invocations", content=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    _same(PredictionsResponse.from_json(response.text).get_predictions(), cli_predictions)


def test_endpoints_route_and_errors(server: Server, rows: pd.DataFrame) -> None:
    with server.client() as http:
        staging = http.post(
            "/endpoints/credit@staging/invocations",
            json={"dataframe_records": rows.to_dict(orient="records")},
        )
        assert staging.status_code == 200 and staging.headers["x-model-version"] == "2"
        assert http.get("/ping").status_code == 200 and http.get("/health").status_code == 200
        assert http.get("/version").text
        for content, ctype, status, code in (
            ("x", "text/plain", 415, "BAD_REQUEST"),
            ("{}", "application/json", 400, "BAD_REQUEST"),
            ('{"inputs": 1, "instances": 2}', "application/json", 400, "BAD_REQUEST"),
            (
                '{"dataframe_split": {"data": [[1]], "columns": ["zz"]}}',
                "application/json",
                400,
                "BAD_REQUEST",
            ),
        ):
            response = http.post("/invocations", content=content, headers={"Content-Type": ctype})
            assert response.status_code == status, response.text
            assert response.json()["error_code"] == code and response.json()["message"]
        missing = http.post("/endpoints/nope@production/invocations", json={"inputs": [[0] * 6]})
        assert missing.status_code == 404 and missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
