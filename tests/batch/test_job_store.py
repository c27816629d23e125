"""The job record's life, on a real registry database: a job that is stopping stays alive while its
runner beats, and a job ends once — a runner that outlives a cancellation cannot turn it into done."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from modelport.app import open_registry
from modelport.batch.store import JobStore
from modelport.registry.service import Registry
from modelport.settings import Settings


@pytest.fixture
def registry(home: Path) -> Iterator[Registry]:
    opened = open_registry(Settings(home=home))
    try:
        yield opened
    finally:
        opened.close()


def _server_job(jobs: JobStore, job_id: str) -> None:
    jobs.create(
        job_id,
        "credit",
        1,
        actor="local:test",
        engine="local",
        input="in.csv",
        output="out.csv",
        options={},
        runner="server",
    )
    jobs.resume(job_id, "server")  # its runner started: running


def test_a_stopping_job_beats_so_no_server_takes_it_for_dead(registry: Registry) -> None:
    jobs = registry.store.jobs
    _server_job(jobs, "job-beats")
    jobs.cancel("job-beats", "local:test")
    assert jobs.get("job-beats").status == "cancelling"
    before = jobs.get("job-beats").updated_at
    assert jobs.heartbeat("job-beats") == "cancelling"
    after = jobs.get("job-beats").updated_at
    assert after > before
    # a server looking for runners silent since just before the beat does not find this one
    assert "job-beats" not in [job.id for job in jobs.waiting(after - timedelta(milliseconds=1))]
    # …and one that went silent (no beat since) is found, to be ended by that server
    later = datetime.now(UTC) + timedelta(seconds=1)
    assert "job-beats" in [job.id for job in jobs.waiting(later)]


def test_a_job_ends_once(registry: Registry) -> None:
    jobs = registry.store.jobs
    _server_job(jobs, "job-once")
    jobs.cancel("job-once", "local:test")
    jobs.cancelled("job-once", "server")
    jobs.finish("job-once", "local:runner", output_digest="sha256:" + "0" * 64, rows_scored=10)
    jobs.fail("job-once", "local:runner", "late")
    ended = jobs.get("job-once")
    assert (ended.status, ended.error, ended.output_digest) == ("cancelled", "cancelled", None)
    actions = [entry.action for entry in registry.store.audit_records() if entry.target == "credit@1"]
    assert actions.count("job.cancelled") == 1
    assert "job.finished" not in actions and "job.failed" not in actions
