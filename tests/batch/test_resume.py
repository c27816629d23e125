"""Exactly once: a `modelport score` killed with SIGKILL half-way is resumed; the output is complete,
without a missing or a duplicated key, equal to an uninterrupted run's, and nothing half-written was
ever visible at OUTPUT (docs/batch.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.batch.conftest import book, leftovers, write_csv
from tests.conftest import invoke_cli as cli
from tests.conftest import until

ROWS = 100_000
CHUNK = 1_000  # 100 chunks: killed at half, at most a few chunks in flight are scored again


def _score(home: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "MODELPORT_HOME": str(home)}
    return subprocess.Popen(
        [sys.executable, "-m", "modelport.cli.main", "score", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_killed_at_half_then_resumed_scores_each_row_exactly_once(
    home: Path, tmp_path: Path, kind: str
) -> None:
    loans = book(ROWS, seed=3)
    source = write_csv(loans, tmp_path / "loans.csv")
    output = tmp_path / f"scores.{kind}"
    args = [str(source), "-o", str(output), "--keep", "id,branch", "--on-violation", "flag"]
    running = _score(home, "credit@production", *args, "--chunk-rows", str(CHUNK), "--threads", "1")
    try:
        work = until(lambda: next(tmp_path.glob(f".scores.{kind}.job-*"), None), timeout=60, interval=0.01)
        parts = f"chunk-*.{'csv' if kind == 'csv' else 'arrow'}"
        until(
            lambda: len(list(work.glob(parts))) >= ROWS // CHUNK // 2 or running.poll() is not None,
            timeout=120,
            interval=0.005,
        )
        running.send_signal(signal.SIGKILL)
    finally:
        if running.poll() is None:
            running.kill()
        told = running.communicate(timeout=30)[1]
    assert running.returncode == -signal.SIGKILL, f"the job ended before it was killed: {told}"
    assert not output.exists()  # never half-written at OUTPUT
    job_id = work.name.rsplit(".", 1)[1]
    stopped = json.loads(cli(home, "jobs", "--job", job_id, "--json").stdout)[0]
    assert stopped["status"] == "running" and stopped["version"] == 1  # it had no chance to say more

    # an alias move in between changes nothing: the job keeps its version
    assert cli(home, "alias", "set", "credit@2", "production").returncode == 0
    resumed = cli(home, "score", "--resume", job_id, "--json")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["version"] == 1 and summary["rows"] == summary["scored"] == ROWS
    assert summary["rows_this_run"] <= 0.55 * ROWS, summary  # only what was not done, and what was in flight
    assert summary["chunks_this_run"] < summary["chunks"]

    table = pq.read_table(output) if kind == "parquet" else _csv(output)
    keys = table.column("id").to_pylist()
    assert (
        len(keys) == ROWS and len(set(keys)) == ROWS and keys == list(loans["id"])
    )  # none missing, none twice
    assert set(table.column("job_id").to_pylist()) == {job_id}
    # the same numbers as a run that was never interrupted
    whole = tmp_path / f"whole.{kind}"
    again = cli(
        home,
        "score",
        "credit@1",
        str(source),
        "-o",
        str(whole),
        "--keep",
        "id,branch",
        "--on-violation",
        "flag",
        "--chunk-rows",
        "50000",
    )
    assert again.returncode == 0, again.stderr
    other = pq.read_table(whole) if kind == "parquet" else _csv(whole)
    for name in ("label", "p_c0", "p_c1", "p_c2", "flags"):
        assert table.column(name).equals(other.column(name)), name
    assert leftovers(tmp_path) == []
    job = json.loads(cli(home, "jobs", "--job", job_id, "--json").stdout)[0]
    assert (
        job["status"] == "done" and job["rows_scored"] == ROWS and job["chunks_done"] == job["chunks_total"]
    )
    trail = json.loads(cli(home, "audit", "list", "--action", "job.resumed", "--json").stdout)
    assert [r["target"] for r in trail] == ["credit@1"]


def test_resume_refuses_a_changed_input_and_a_second_run(home: Path, tmp_path: Path) -> None:
    loans = book(60_000, seed=4)
    source = write_csv(loans, tmp_path / "loans.csv")
    output = tmp_path / "scores.parquet"
    running = _score(
        home,
        "credit",
        str(source),
        "-o",
        str(output),
        "--keep",
        "id,branch",
        "--on-violation",
        "flag",
        "--chunk-rows",
        "1000",
        "--threads",
        "1",
    )
    try:
        work = until(lambda: next(tmp_path.glob(".scores.parquet.job-*"), None), timeout=60, interval=0.01)
        until(
            lambda: any(work.glob("chunk-*.arrow")) or running.poll() is not None, timeout=60, interval=0.005
        )
        job_id = work.name.rsplit(".", 1)[1]
        # a second run of the same job while the first holds it is refused
        second = cli(home, "score", "--resume", job_id)
        if running.poll() is None:
            assert second.returncode == 1 and "is running in another process" in second.stderr, second.stderr
        running.send_signal(signal.SIGKILL)
    finally:
        if running.poll() is None:
            running.kill()
        told = running.communicate(timeout=30)[1]
    if running.returncode != -signal.SIGKILL:
        pytest.fail(f"the job ended before it was killed: {told}")
    write_csv(loans.assign(f0=loans["f0"] + 1e-9), source)  # the same shape, other values
    changed = cli(home, "score", "--resume", job_id)
    assert (
        changed.returncode == 1
        and "the input of" in changed.stderr
        and "changed since the job started" in changed.stderr
    )
    assert not output.exists()
    assert json.loads(cli(home, "jobs", "--job", job_id, "--json").stdout)[0]["status"] == "failed"


def _csv(path: Path):  # type: ignore[no-untyped-def]
    from tests.batch.conftest import read_csv

    return read_csv(path)
