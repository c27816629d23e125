"""modelport.Client and AsyncClient against a real keyed server (one for the module): predictions equal
the registry's own, references, browsing, aliases and releases, a real 429 waited out, errors mapped to
the server's classes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

import modelport
from modelport.client import Retries
from modelport.errors import (
    AliasNotFound,
    Forbidden,
    InvalidInput,
    ModelNotFound,
    RateLimited,
    Unauthenticated,
    VersionNotFound,
)
from modelport.settings import Settings
from tests.conftest import FEATURES, until
from tests.security.conftest import Keys, make_key
from tests.serving.conftest import Server, start_server, stop_server


@pytest.fixture(scope="module")
def limited(keyed_home: Path, keys: Keys) -> str:
    """A consumer key allowed one request a second (a one-second burst: one token)."""
    return make_key(keyed_home, "consumer", ["credit*"], rate=1.0)


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory, data: pd.DataFrame) -> Path:
    root = tmp_path_factory.mktemp("batch")
    data[FEATURES].head(50).to_csv(root / "book.csv", index=False)
    return root


@pytest.fixture(scope="module")
def server(keyed_home: Path, keys: Keys, limited: str, roots: Path) -> Iterator[Server]:
    env = {"MODELPORT_AUTH_FAILURE_BURST": "100000", "MODELPORT_BATCH_ROOTS": json.dumps([str(roots)])}
    running = start_server(keyed_home, insecure_dev=False, env=env)
    yield running
    stop_server(running)


@pytest.fixture
def rows(data: pd.DataFrame) -> pd.DataFrame:
    return data[FEATURES].head(20).reset_index(drop=True)


def local(home: Path, ref: str, frame: pd.DataFrame) -> pd.DataFrame:
    registry = modelport.open_registry(Settings(home=home))
    try:
        return registry.predict(ref, frame)
    finally:
        registry.close()


def _answering(predict: Callable[[str, pd.DataFrame], pd.DataFrame], ref: str, rows: pd.DataFrame) -> Any:
    """The version that answers ``ref``, or None while the server does not route it yet."""
    try:
        return predict(ref, rows).attrs["model_version"]
    except AliasNotFound:
        return None


class Counting(httpx.HTTPTransport):
    """The real network transport, counting what it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, str, int]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.sent.append((request.method, request.url.path, response.status_code))
        return response


def test_predict_equals_the_registrys_own_answers(
    server: Server, keys: Keys, keyed_home: Path, rows: pd.DataFrame
) -> None:
    with modelport.Client(server.url, key=keys.consumer) as client:
        shuffled = rows[list(reversed(FEATURES))].assign(extra="ignored")  # order and extras do not matter
        answers = client.predict("credit@production", shuffled)
        assert answers.attrs["model_version"] == 1 and answers.attrs["model"] == "credit"
        assert answers.attrs["request_id"]
        expected = local(keyed_home, "credit@production", rows)
        assert list(answers.columns) == list(expected.columns)
        pd.testing.assert_frame_equal(answers, expected, check_dtype=False, atol=1e-9)
        # a dict of columns, one row as a dict, and an array in feature order say the same
        as_dict = client.predict("credit@production", rows.to_dict(orient="list"))
        pd.testing.assert_frame_equal(as_dict, answers)
        one = client.predict("credit@production", rows.iloc[0].to_dict())
        pd.testing.assert_frame_equal(one, answers.head(1))
        as_array = client.predict("credit@production", rows.to_numpy())
        pd.testing.assert_frame_equal(as_array, answers)


def test_reference_forms_and_the_v2_json_answer(
    server: Server, keys: Keys, keyed_home: Path, rows: pd.DataFrame
) -> None:
    with modelport.Client(server.url, key=keys.consumer) as client:
        assert client.predict("credit", rows).attrs["model_version"] == 1  # the default: production
        staging = client.predict("credit@staging", rows)
        assert staging.attrs["model_version"] == 2
        pd.testing.assert_frame_equal(client.predict("credit@2", rows), staging)
        pd.testing.assert_frame_equal(
            staging, local(keyed_home, "credit@2", rows), check_dtype=False, atol=1e-9
        )
        assert client.metadata("credit@2")["parameters"]["features"] == FEATURES
    body = {
        "inputs": [
            {"name": "input", "datatype": "FP64", "shape": [len(rows), 6], "data": rows.to_numpy().tolist()}
        ]
    }
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {keys.consumer}"}) as http:
        answer = http.post("/v2/models/credit/versions/staging/infer", json=body).json()
    outputs = {o["name"]: o for o in answer["outputs"]}
    probabilities = np.array(outputs["probabilities"]["data"]).reshape(outputs["probabilities"]["shape"])
    np.testing.assert_allclose(staging.filter(like="p_").to_numpy(), probabilities, atol=1e-12)
    assert staging["label"].tolist() == outputs["label"]["data"]


def test_browse_models(server: Server, keys: Keys) -> None:
    with modelport.Client(server.url, key=keys.admin) as admin:
        assert {m.name for m in admin.models()} == {"credit", "fraud"}
        credit = admin.model("credit")
        assert credit.latest_version == 2 and credit.aliases["production"] == 1
    with modelport.Client(server.url, key=keys.consumer) as consumer:
        assert [m.name for m in consumer.models()] == ["credit"]  # its scope only
        with pytest.raises(ModelNotFound):
            consumer.model("fraud")


def test_alias_moves_with_a_publisher_key_only(server: Server, keys: Keys, rows: pd.DataFrame) -> None:
    with modelport.Client(server.url, key=keys.publisher) as publisher:
        moved = publisher.set_alias("credit", "candidate", 2)
        assert moved["status"] == "applied"
        assert publisher.model("credit").aliases["candidate"] == 2
        # the server's routes follow the registry within a moment (its pool polls for alias moves)
        assert until(lambda: _answering(publisher.predict, "credit@candidate", rows), 10) == 2
        assert [e["version"] for e in publisher.alias_history("credit", "candidate")][-1:] == [2]
        with modelport.Client(server.url, key=keys.consumer) as consumer, pytest.raises(Forbidden):
            consumer.set_alias("credit", "candidate", 1)
        publisher.remove_alias("credit", "candidate")
        assert "candidate" not in publisher.model("credit").aliases
        assert isinstance(publisher.approvals(status="pending"), list)


def test_release_start_status_promote_rollback(server: Server, keys: Keys) -> None:
    with modelport.Client(server.url, key=keys.publisher) as client:
        client.set_alias("credit", "trial", 1)
        started = client.start_release("credit", "trial", canary=2, weight=50)
        assert started["status"] == "applied"
        status = client.release_status("credit", "trial")
        assert status["version"] == 1 and status["release"]["canary"] == 2
        client.promote("credit", "trial")
        assert client.release_status("credit", "trial")["version"] == 2
        client.rollback("credit", "trial", reason="test")
        assert client.release_status("credit", "trial")["version"] == 1
        client.start_release("credit", "trial", shadow=2)
        assert client.release_status("credit", "trial")["release"] is not None
        client.stop_release("credit", "trial")
        assert client.release_status("credit", "trial")["release"] is None


def test_a_429_is_waited_out(server: Server, limited: str, rows: pd.DataFrame) -> None:
    counting = Counting()
    with modelport.Client(
        server.url, key=limited, transport=counting, retries=Retries(max_wait=20)
    ) as client:
        for _ in range(3):  # metadata + three inferences at one a second: some are refused, then waited
            assert client.predict("credit@production", rows).attrs["model_version"] == 1
    statuses = [status for _, _, status in counting.sent]
    assert statuses.count(200) == 4 and statuses.count(429) >= 2, counting.sent
    with modelport.Client(server.url, key=limited, retries=Retries(attempts=1)) as impatient:
        with pytest.raises(RateLimited) as refused:
            for _ in range(3):
                impatient.predict("credit@production", rows)
        assert refused.value.retry_after >= 1


def test_errors_are_the_servers_classes(server: Server, keys: Keys, rows: pd.DataFrame) -> None:
    with modelport.Client(server.url, key=keys.consumer) as client:
        with pytest.raises(ModelNotFound):
            client.predict("credit-nope", rows)
        with pytest.raises(VersionNotFound):
            client.predict("credit@99", rows)
        with pytest.raises(InvalidInput, match="missing column"):
            client.predict("credit", rows.drop(columns=["f0"]))
    bad = "mp_abcdefabcdef_" + "x" * 40
    client = modelport.Client(server.url, key=bad)
    with client, pytest.raises(Unauthenticated) as refused:
        client.models()
    assert bad not in repr(client) and bad not in str(refused.value) and "<set>" in repr(client)


def test_jobs_usage_and_feedback(server: Server, keys: Keys, rows: pd.DataFrame, tmp_path: Path) -> None:
    with modelport.Client(server.url, key=keys.publisher) as client:
        job = client.submit_job("credit@production", "book.csv", "scores.csv", on_violation="flag")
        assert job["id"] in {j["id"] for j in client.jobs()}
        done = until(lambda: client.job(job["id"]) if client.job(job["id"])["status"] == "done" else None, 30)
        assert done["status"] == "done"
        scored = pd.read_csv(client.job_output(job["id"], tmp_path / "scores.csv"))
        assert len(scored) == 50 and "label" in scored.columns
    with modelport.Client(server.url, key=keys.consumer) as consumer:
        answers = consumer.predict("credit", rows.head(2))
        labels = [{"request_id": answers.attrs["request_id"], "row": 0, "label": answers["label"][0]}]
        assert consumer.feedback("credit", labels) == 1
        assert consumer.usage() and all(row["model"] == "credit" for row in consumer.usage())
        assert consumer.drift("credit")["model"] == "credit"


def test_the_async_client(server: Server, keys: Keys, keyed_home: Path, rows: pd.DataFrame) -> None:
    async def main() -> None:
        async with modelport.AsyncClient(server.url, key=keys.consumer) as client:
            answers, staging = await asyncio.gather(
                client.predict("credit@production", rows), client.predict("credit@2", rows)
            )
            pd.testing.assert_frame_equal(
                answers, local(keyed_home, "credit@production", rows), check_dtype=False, atol=1e-9
            )
            assert staging.attrs["model_version"] == 2
            assert [m.name for m in await client.models()] == ["credit"]
            with pytest.raises(ModelNotFound):
                await client.predict("nope", rows)
            with pytest.raises(Forbidden):
                await client.set_alias("credit", "candidate", 1)

    asyncio.run(main())


def test_register_over_http_then_predict(server: Server, keys: Keys, tmp_path: Path) -> None:
    """A notebook registers a skops file on the shared server (no database URL, no store credentials)
    and calls the new version; the server's refusals come back as the same error classes."""
    import numpy as np
    import skops.io
    from sklearn.linear_model import LogisticRegression

    from modelport.errors import Forbidden, UnsafeFormat

    frame = pd.DataFrame(np.random.default_rng(5).normal(size=(150, 6)), columns=[f"f{i}" for i in range(6)])
    model = LogisticRegression().fit(frame, np.where(frame["f1"] > 0, "up", "down"))
    path = tmp_path / "model.skops"
    path.write_bytes(skops.io.dumps(model))
    with modelport.Client(server.url, key=keys.publisher) as publisher:
        version = publisher.register(
            path, name="credit-notebook", sample=frame, alias="staging", metrics={"auc": 0.8}
        )
        assert version["number"] == 1 and version["creator"] == f"key:{Keys.id_of(keys.publisher)}"
        answers = publisher.predict("credit-notebook@staging", frame.head(3))
        assert list(answers["label"]) == list(model.predict(frame.head(3)))
        pickled = tmp_path / "model.pkl"
        pickled.write_bytes(b"\x80\x04K\x01.")
        with pytest.raises(UnsafeFormat, match="never registered over HTTP"):  # the class, by its header
            publisher.register(pickled, name="credit-notebook", sample=frame)
    with modelport.Client(server.url, key=keys.consumer) as consumer, pytest.raises(Forbidden):
        consumer.register(path, name="credit-notebook", sample=frame)


def test_versions_are_listed_a_page_at_a_time(server: Server, keys: Keys) -> None:
    with modelport.Client(server.url, key=keys.admin) as admin:
        listed = admin.versions("credit")
        assert [v["number"] for v in listed] == sorted((v["number"] for v in listed), reverse=True)
        assert {1, 2} <= {v["number"] for v in listed}
        assert "production" in next(v for v in listed if v["number"] == 1)["aliases"]
        assert len(admin.versions("credit", limit=1)) == 1
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {keys.admin}"}) as raw:
        page = raw.get("/api/v1/models/credit/versions", params={"limit": 1}).json()
        assert len(page["versions"]) == 1 and page["next"] == page["versions"][0]["number"]
        assert raw.get("/api/v1/models/credit/versions", params={"limit": 0}).status_code == 400
        assert raw.get("/api/v1/models/credit/versions", params={"before": "x"}).status_code == 400
        assert raw.get("/api/v1/models/nope/versions").status_code == 404
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {keys.other}"}) as other:
        assert other.get("/api/v1/models/credit/versions").status_code == 404  # outside its patterns


def test_the_cli_registers_on_a_server_without_a_registry_here(
    server: Server, keys: Keys, tmp_path: Path
) -> None:
    """``modelport register --server``: an empty MODELPORT_HOME here (no database, no store), the key
    from MODELPORT_KEY; local-only options are refused with a message, not ignored."""
    import os
    import subprocess
    import sys

    import skops.io
    from sklearn.linear_model import LogisticRegression

    frame = pd.DataFrame(np.random.default_rng(9).normal(size=(120, 6)), columns=[f"f{i}" for i in range(6)])
    model_file, sample_file = tmp_path / "m.skops", tmp_path / "sample.csv"
    model_file.write_bytes(skops.io.dumps(LogisticRegression().fit(frame, frame["f2"] > 0)))
    frame.to_csv(sample_file, index=False)
    exe = str(Path(sys.executable).with_name("modelport"))
    env = {**os.environ, "MODELPORT_HOME": str(tmp_path / "nothing-here"), "MODELPORT_KEY": keys.publisher}
    command = [
        exe,
        "register",
        "credit-cli",
        str(model_file),
        "--sample",
        str(sample_file),
        "--server",
        server.url,
    ]
    done = subprocess.run(
        [*command, "--alias", "staging", "--json"], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["number"] == 1
    refused = subprocess.run(
        [*command, "--trust-pickle"], env=env, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode != 0 and "--trust-pickle: not over --server" in refused.stderr
    assert "Traceback" not in refused.stderr
    with modelport.Client(server.url, key=keys.admin) as admin:
        assert admin.model("credit-cli").aliases == {"staging": 1}
