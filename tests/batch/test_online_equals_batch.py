"""Batch equals online, bit for bit (docs/batch.md): 10,000 rows scored by `modelport score` from CSV
and Parquet into CSV and Parquet, and by a real server over V2 REST JSON, V2 binary (tritonclient),
gRPC (tritonclient) and MLflow (JSON and CSV), in requests of 1 to 10,000 rows. Every label and every
probability's 64 bits are the same."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http

from tests.batch.conftest import book, read_csv
from tests.conftest import FEATURES
from tests.conftest import invoke_cli as cli
from tests.serving.conftest import Server, free_port, registered_home, start_server, stop_server

ROWS = 10_000
CLASSES = ["c0", "c1", "c2"]


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory, data: object, sklearn_model: object) -> Iterator[dict]:  # type: ignore[type-arg]
    """The inputs, the batch outputs and a real server (V2, gRPC, MLflow) on the same registry."""
    folder = tmp_path_factory.mktemp("online")
    home = registered_home("served", folder / "home", tmp_path_factory, data, sklearn_model)  # type: ignore[arg-type]
    loans = book(ROWS, seed=7)
    loans.to_csv(folder / "loans.csv", index=False)
    # What every client sends: the CSV's numbers as read with correct rounding (pyarrow, as `score` reads)
    exact = pacsv.read_csv(
        folder / "loans.csv",
        convert_options=pacsv.ConvertOptions(column_types={"id": pa.string(), "branch": pa.string()}),
    )
    pq.write_table(exact, folder / "loans.parquet", row_group_size=3_000)
    outputs = {}
    for source, target, chunk in (
        ("loans.csv", "csv-to.csv", "1000"),
        ("loans.csv", "csv-to.parquet", "65536"),
        ("loans.parquet", "parquet-to.parquet", "3000"),
        ("loans.parquet", "parquet-to.csv", "3000"),
    ):
        done = cli(
            home,
            "score",
            "credit@production",
            str(folder / source),
            "-o",
            str(folder / target),
            "--keep",
            "id,branch",
            "--on-violation",
            "flag",
            "--chunk-rows",
            chunk,
        )
        assert done.returncode == 0, done.stderr
        outputs[target] = (
            read_csv(folder / target) if target.endswith(".csv") else pq.read_table(folder / target)
        )
    port = free_port()
    server = start_server(home, "--grpc-port", str(port))
    try:
        yield {
            "exact": exact,
            "csv": (folder / "loans.csv").read_bytes(),
            "outputs": outputs,
            "server": server,
            "grpc": port,
        }
    finally:
        stop_server(server)


def _matrix(exact: pa.Table) -> np.ndarray:
    return np.column_stack([exact.column(f).to_numpy() for f in FEATURES])


def _same(batch: pa.Table, labels: list[str], probabilities: np.ndarray, rows: slice = slice(None)) -> None:
    expected = np.column_stack([batch.column(f"p_{c}").to_numpy() for c in CLASSES])[rows]
    assert batch.column("label").to_pylist()[rows] == labels
    assert probabilities.dtype == np.float64 and probabilities.shape == expected.shape
    differing = np.flatnonzero((probabilities.view(np.uint64) != expected.view(np.uint64)).any(axis=1))
    assert differing.size == 0, f"{differing.size} row(s) differ, first {differing[:5]}"


def test_batch_outputs_agree_with_each_other(scored: dict) -> None:  # type: ignore[type-arg]
    tables = list(scored["outputs"].values())
    first = tables[0]
    for other in tables[1:]:
        for name in ("id", "branch", "label", "p_c0", "p_c1", "p_c2", "flags"):
            assert other.column(name).to_pylist() == first.column(name).to_pylist(), name
            if name.startswith("p_"):
                assert other.column(name).to_numpy().tobytes() == first.column(name).to_numpy().tobytes()


def test_v2_json_in_requests_of_1000_rows_and_of_one_row(scored: dict) -> None:  # type: ignore[type-arg]
    server: Server = scored["server"]
    matrix = _matrix(scored["exact"])
    labels: list[str] = []
    probabilities = []
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for start in range(0, ROWS, 1_000):
            rows = matrix[start : start + 1_000]
            body = {
                "inputs": [
                    {"name": "input", "datatype": "FP64", "shape": list(rows.shape), "data": rows.tolist()}
                ]
            }
            answer = client.post("/v2/models/credit/infer", content=orjson.dumps(body))
            assert answer.status_code == 200, answer.text
            outputs = {o["name"]: o for o in json.loads(answer.content)["outputs"]}
            labels += outputs["label"]["data"]
            probabilities.append(np.array(outputs["probabilities"]["data"], dtype=np.float64).reshape(-1, 3))
        for table in scored["outputs"].values():
            _same(table, labels, np.vstack(probabilities))
        singles_labels, singles = [], []
        for row in matrix[:200]:  # one row per request: the one-row path of the runtime
            body = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 6], "data": row.tolist()}]}
            outputs = {
                o["name"]: o
                for o in client.post("/v2/models/credit/infer", content=orjson.dumps(body)).json()["outputs"]
            }
            singles_labels += outputs["label"]["data"]
            singles.append(outputs["probabilities"]["data"])
    _same(scored["outputs"]["csv-to.csv"], singles_labels, np.array(singles, dtype=np.float64), slice(0, 200))


def test_v2_binary_with_tritonclient_in_one_request(scored: dict) -> None:  # type: ignore[type-arg]
    server: Server = scored["server"]
    matrix = _matrix(scored["exact"])
    with triton_http.InferenceServerClient(url=f"127.0.0.1:{server.port}", network_timeout=60) as client:
        tensor = triton_http.InferInput("input", list(matrix.shape), "FP64")
        tensor.set_data_from_numpy(matrix, binary_data=True)
        wanted = [triton_http.InferRequestedOutput(n, binary_data=True) for n in ("label", "probabilities")]
        result = client.infer("credit", [tensor], outputs=wanted)
    labels = [v.decode() for v in result.as_numpy("label")]
    _same(scored["outputs"]["parquet-to.parquet"], labels, result.as_numpy("probabilities"))


def test_grpc_with_tritonclient_in_requests_of_2500_rows(scored: dict) -> None:  # type: ignore[type-arg]
    matrix = _matrix(scored["exact"])
    labels: list[str] = []
    probabilities = []
    with triton_grpc.InferenceServerClient(url=f"127.0.0.1:{scored['grpc']}") as client:
        for start in range(0, ROWS, 2_500):
            rows = np.ascontiguousarray(matrix[start : start + 2_500])
            tensor = triton_grpc.InferInput("input", list(rows.shape), "FP64")
            tensor.set_data_from_numpy(rows)
            result = client.infer("credit", [tensor])
            labels += [v.decode() for v in result.as_numpy("label")]
            probabilities.append(result.as_numpy("probabilities"))
    _same(scored["outputs"]["csv-to.parquet"], labels, np.vstack(probabilities))


def test_mlflow_json_and_csv(scored: dict) -> None:  # type: ignore[type-arg]
    server: Server = scored["server"]
    exact: pa.Table = scored["exact"]
    with httpx.Client(base_url=server.url, timeout=60) as client:
        labels: list[str] = []
        probabilities: list[list[float]] = []
        for start in range(0, ROWS, 2_500):
            part = exact.slice(start, 2_500)
            body = {"dataframe_split": {"columns": FEATURES, "data": _matrix(part).tolist()}}
            answer = client.post(
                "/endpoints/credit@production/invocations",
                content=orjson.dumps(body),
                headers={"Content-Type": "application/json"},
            )
            assert answer.status_code == 200, answer.text
            for record in json.loads(answer.content)["predictions"]:
                labels.append(record["label"])
                probabilities.append([record[f"p_{c}"] for c in CLASSES])
        _same(scored["outputs"]["parquet-to.csv"], labels, np.array(probabilities, dtype=np.float64))
        # the very CSV file the batch jobs read, as one request body (its id and branch columns dropped)
        features_only = pacsv.read_csv(
            pa.BufferReader(scored["csv"]),
            convert_options=pacsv.ConvertOptions(
                include_columns=FEATURES, column_types={f: pa.string() for f in FEATURES}
            ),
        )
        sink = pa.BufferOutputStream()
        pacsv.write_csv(features_only, sink, write_options=pacsv.WriteOptions(quoting_style="none"))
        answer = client.post(
            "/endpoints/credit@production/invocations",
            content=sink.getvalue().to_pybytes(),
            headers={"Content-Type": "text/csv"},
        )
        assert answer.status_code == 200, answer.text
        records = json.loads(answer.content)["predictions"]
    _same(
        scored["outputs"]["csv-to.csv"],
        [r["label"] for r in records],
        np.array([[r[f"p_{c}"] for c in CLASSES] for r in records], dtype=np.float64),
    )
