"""Batch jobs over the API (docs/batch.md): submitted by a publisher key to a real server (one worker,
keys on), run by the server in a child process, downloaded; paths confined to MODELPORT_BATCH_ROOTS
against `..`, absolute paths, symlinks and globs; other keys' jobs undisclosed; usage and audit
recorded; a job whose runner died is resumed by the next server."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pyarrow.parquet as pq
import pytest

from tests.batch.conftest import book, leftovers, write_csv
from tests.conftest import invoke_cli as cli
from tests.conftest import until
from tests.security.conftest import bearer, make_key
from tests.serving.conftest import Server, registered_home, start_server, stop_server

HEARTBEAT = "0.4"  # a dead runner is noticed after five of these


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory, data: Any, sklearn_model: object) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("jobs")
    home = registered_home("keyed", base / "home", tmp_path_factory, data, sklearn_model)
    root, outside = base / "root", base / "outside"
    (root / "in").mkdir(parents=True)
    (root / "out").mkdir()
    outside.mkdir()
    loans = book(20_000, seed=5)
    write_csv(loans, root / "in" / "loans.csv")
    write_csv(loans.head(100), outside / "secret.csv")
    os.symlink(outside / "secret.csv", root / "in" / "link.csv")  # a symlink out of the root
    os.symlink(outside, root / "escape")  # a folder symlink out of the root
    return {
        "home": home,
        "root": root,
        "outside": outside,
        "loans": loans,
        "admin": make_key(home, "admin"),
        "publisher": make_key(home, "publisher", ["credit*"]),
        "fraud_publisher": make_key(home, "publisher", ["fraud"]),
        "consumer": make_key(home, "consumer", ["credit*"]),
    }


def _serve(place: dict[str, Any]) -> Server:
    env = {
        "MODELPORT_BATCH_ROOTS": json.dumps([str(place["root"])]),
        "MODELPORT_BATCH_HEARTBEAT_SECONDS": HEARTBEAT,
    }
    return start_server(place["home"], insecure_dev=False, env=env)


@pytest.fixture(scope="module")
def server(place: dict[str, Any]) -> Iterator[Server]:
    running = _serve(place)
    yield running
    stop_server(running)


def _client(server: Server, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30, headers=bearer(token))


def _job(**fields: Any) -> dict[str, Any]:
    return {
        "model": "credit@production",
        "input": "in/loans.csv",
        "output": "out/scores.parquet",
        "keep": ["id", "branch"],
        "on_violation": "flag",
        **fields,
    }


def _done(client: httpx.Client, job_id: str) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        return job if job["status"] in ("done", "failed", "cancelled") else None

    done: dict[str, Any] = until(ended, timeout=120, interval=0.1)
    return done


def test_a_publisher_submits_follows_and_downloads_a_job(server: Server, place: dict[str, Any]) -> None:
    with _client(server, place["publisher"]) as client:
        answer = client.post("/api/v1/jobs", json=_job(chunk_rows=5_000))
        assert answer.status_code == 202, answer.text
        job = answer.json()
        assert answer.headers["location"] == f"/api/v1/jobs/{job['id']}"
        assert (job["status"], job["runner"], job["version"]) == ("queued", "server", 1)
        job = _done(client, job["id"])
        assert job["status"] == "done", job["error"]
        assert (job["rows_scored"], job["chunks_total"]) == (20_000, 4)
        download = client.get(f"/api/v1/jobs/{job['id']}/output")
        assert (
            download.status_code == 200
            and download.headers["content-type"] == "application/vnd.apache.parquet"
        )
        assert download.content == (place["root"] / "out" / "scores.parquet").read_bytes()
        table = pq.read_table(io.BytesIO(download.content))
        assert table.column("id").to_pylist() == list(place["loans"]["id"])
        assert set(table.column("job_id").to_pylist()) == {job["id"]}
        mine = client.get("/api/v1/jobs").json()["jobs"]
        assert [j["id"] for j in mine] == [job["id"]]
        usage = client.get("/api/v1/usage").json()
        rows = sum(u["rows"] for u in usage["usage"] if u["model"] == "credit")
        assert rows >= 20_000  # the job's rows count in the key's usage
    key_id = place["publisher"].split("_")[1]
    trail = json.loads(cli(place["home"], "audit", "list", "--actor", f"key:{key_id}", "--json").stdout)
    assert [r["action"] for r in trail if r["action"].startswith("job.")] == [
        "job.queued",
        "job.started",
        "job.finished",
    ]
    # another key's job is not disclosed; an admin sees it
    with _client(server, place["fraud_publisher"]) as other:
        assert other.get(f"/api/v1/jobs/{job['id']}").status_code == 404
        assert other.get(f"/api/v1/jobs/{job['id']}/output").status_code == 404
        assert other.get("/api/v1/jobs").json()["jobs"] == []
    with _client(server, place["admin"]) as admin:
        assert admin.get(f"/api/v1/jobs/{job['id']}").json()["status"] == "done"
    with _client(server, place["consumer"]) as consumer:
        assert consumer.post("/api/v1/jobs", json=_job()).status_code == 403
        assert consumer.get("/api/v1/jobs").status_code == 403


@pytest.mark.parametrize(
    "fields, status, message",
    [
        ({"input": "../outside/secret.csv"}, 400, "may not contain '..'"),
        ({"input": "in/../../outside/secret.csv"}, 400, "may not contain '..'"),
        ({"output": "out/../../outside/x.parquet"}, 400, "may not contain '..'"),
        ({"input": "/etc/passwd"}, 403, "outside the folders"),
        ({"input": "in/link.csv"}, 403, "outside the folders"),  # a symlink out of the root
        ({"input": "escape/secret.csv"}, 403, "outside the folders"),  # through a folder symlink
        ({"input": "in/*.csv"}, 403, "outside the folders"),  # a glob that matches the symlink
        ({"output": "escape/x.parquet"}, 403, "outside the folders"),
        ({"output": "/tmp/x.parquet"}, 403, "outside the folders"),
        ({"input": "in/loans.csv\u0000.parquet"}, 400, "may not contain"),
        ({"input": "in/nosuch.csv"}, 404, "does not exist"),
        ({"output": "nofolder/x.parquet"}, 404, "does not exist"),
        ({"output": "out/x.json"}, 400, "write .parquet or .csv"),
        ({"output": "in/loans.csv"}, 400, "write it elsewhere"),
        ({"model": "fraud@production"}, 404, "no model named 'fraud'"),  # not in the key's scope
        ({"model": "credit@9"}, 404, "no version 9"),
        ({"on_violation": "ignore"}, 400, "one of reject, flag, skip"),
        ({"chunk_rows": 10}, 400, "chunk_rows"),
        ({"keep": "id"}, 400, "list of column names"),
        ({"engine": "dask"}, 400, "unexpected field"),
    ],
)
def test_hostile_and_wrong_submissions_are_refused_and_leave_nothing(
    server: Server, place: dict[str, Any], fields: dict[str, Any], status: int, message: str
) -> None:
    before = {p for p in place["root"].rglob("*")}
    with _client(server, place["publisher"]) as client:
        answer = client.post("/api/v1/jobs", json=_job(**fields))
        assert answer.status_code == status, answer.text
        assert message in answer.text, answer.text
        assert str(place["outside"]) not in answer.text and "Traceback" not in answer.text
        assert client.get("/v2/health/ready").status_code == 200  # still serving
    assert {p for p in place["root"].rglob("*")} == before
    assert sorted(p.name for p in place["outside"].iterdir()) == ["secret.csv"]


def test_malformed_bodies_and_unknown_jobs(server: Server, place: dict[str, Any]) -> None:
    with _client(server, place["publisher"]) as client:
        assert (
            client.post(
                "/api/v1/jobs", content=b"model=credit", headers={"content-type": "text/plain"}
            ).status_code
            == 415
        )
        assert (
            client.post(
                "/api/v1/jobs", content=b"{", headers={"content-type": "application/json"}
            ).status_code
            == 400
        )
        assert client.post("/api/v1/jobs", json={"model": "credit"}).status_code == 400
        assert client.get("/api/v1/jobs/job-0123456789ab").status_code == 404
        assert client.get("/api/v1/jobs/../keys").status_code in (401, 403, 404)
        assert client.get("/api/v1/jobs/job-%2e%2e").status_code == 404


def test_a_running_job_is_cancelled(server: Server, place: dict[str, Any]) -> None:
    write_csv(book(300_000, seed=6), place["root"] / "in" / "big.csv")
    with _client(server, place["publisher"]) as client:
        job = client.post(
            "/api/v1/jobs", json=_job(input="in/big.csv", output="out/big.csv", chunk_rows=1_000)
        ).json()
        until(
            lambda: client.get(f"/api/v1/jobs/{job['id']}").json()["chunks_done"] > 2,
            timeout=60,
            interval=0.05,
        )
        cancelling = client.post(f"/api/v1/jobs/{job['id']}/cancel", json={})
        assert cancelling.status_code == 202 and cancelling.json()["status"] in ("cancelling", "cancelled")
        ended = _done(client, job["id"])
        assert ended["status"] == "cancelled"
        assert client.post(f"/api/v1/jobs/{job['id']}/cancel", json={}).status_code == 409
        assert client.get(f"/api/v1/jobs/{job['id']}/output").status_code == 409
    assert not (place["root"] / "out" / "big.csv").exists()
    assert leftovers(place["root"] / "out") == []


def test_a_job_whose_runner_died_is_resumed_by_the_next_server(place: dict[str, Any]) -> None:
    write_csv(book(400_000, seed=8), place["root"] / "in" / "restart.csv")
    first = _serve(place)
    try:
        with _client(first, place["publisher"]) as client:
            job = client.post(
                "/api/v1/jobs",
                json=_job(input="in/restart.csv", output="out/restart.parquet", chunk_rows=1_000),
            ).json()

            def runner() -> psutil.Process | None:
                # any server of this registry may have claimed it (the module's server runs too)
                for process in psutil.process_iter():
                    with contextlib.suppress(psutil.Error):
                        if job["id"] in " ".join(process.cmdline()):
                            return process
                return None

            found = until(runner, timeout=60, interval=0.02)
            until(
                lambda: client.get(f"/api/v1/jobs/{job['id']}").json()["chunks_done"] >= 10,
                timeout=60,
                interval=0.02,
            )
            found.send_signal(signal.SIGKILL)  # the runner dies mid-job …
            found.wait(timeout=30)
            assert client.get(f"/api/v1/jobs/{job['id']}").json()["status"] == "running"
    finally:
        stop_server(first)  # … and its server stops
    second = _serve(place)  # the next server finds the job silent and resumes it
    try:
        with _client(second, place["publisher"]) as client:
            ended = _done(client, job["id"])
    finally:
        stop_server(second)
    assert ended["status"] == "done", ended["error"]
    table = pq.read_table(place["root"] / "out" / "restart.parquet")
    keys = table.column("id").to_pylist()
    assert len(keys) == len(set(keys)) == 400_000
    trail = json.loads(cli(place["home"], "audit", "list", "--action", "job.resumed", "--json").stdout)
    assert [r["target"] for r in trail if (r["before"] or {}).get("job") == job["id"]] == ["credit@1"]


def test_without_roots_the_api_runs_no_jobs(place: dict[str, Any]) -> None:
    server = start_server(place["home"], insecure_dev=False)
    try:
        with _client(server, place["publisher"]) as client:
            answer = client.post("/api/v1/jobs", json=_job())
            assert answer.status_code == 403 and "MODELPORT_BATCH_ROOTS" in answer.text
    finally:
        stop_server(server)


def test_paths_are_checked_again_when_the_runner_starts(
    place: dict[str, Any],
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    data: Any,
    sklearn_model: object,
) -> None:
    """A file swapped for a link out of the roots after the job was accepted is not read. (A registry of
    its own: no server of this module may claim the job.)"""
    from modelport.app import open_registry
    from modelport.batch.job import ScoreOptions, run_job
    from modelport.batch.runner import submit
    from modelport.errors import Forbidden
    from modelport.settings import Settings

    root = place["root"]
    write_csv(place["loans"].head(2_000), root / "in" / "swapped.csv")
    home = registered_home("keyed", tmp_path / "home", tmp_path_factory, data, sklearn_model)
    settings = Settings(home=home, batch_roots=[root])
    registry = open_registry(settings)
    try:
        job = submit(
            registry,
            settings,
            "credit",
            "in/swapped.csv",
            "out/swapped.csv",
            ScoreOptions(keep=["id", "branch"], on_violation="flag"),
            actor="key:test",
        )
        (root / "in" / "swapped.csv").unlink()
        os.symlink(place["outside"] / "secret.csv", root / "in" / "swapped.csv")
        with pytest.raises(Forbidden, match="outside the folders"):
            run_job(registry, job.id, actor="server")
        assert registry.store.jobs.get(job.id).status == "failed"
    finally:
        registry.close()
    assert not (root / "out" / "swapped.csv").exists()
