"""SQL for batch jobs (docs/batch.md): one row per job in ``batch_jobs``; its start and its end are
audited in the same transaction as the row they change."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from modelport.errors import Conflict, NotFound
from modelport.registry.schema import batch_jobs, model_versions, models

if TYPE_CHECKING:
    from modelport.registry.store import RegistryStore

__all__ = ["CANCELLED", "ENDED", "JobRecord", "JobStore"]

STATUSES = ("queued", "starting", "running", "cancelling", "cancelled", "done", "failed")
ENDED = ("cancelled", "done", "failed")
CANCELLED = ("cancelling", "cancelled")  # asked to stop, or stopped: a runner stops writing


@dataclass(frozen=True, slots=True)
class JobRecord:
    id: str
    model: str
    version: int
    actor: str
    engine: str
    runner: str
    status: str
    input: str
    input_digest: str
    output: str
    output_digest: str | None
    options: dict[str, Any]
    rows_total: int
    rows_scored: int
    rows_flagged: int
    rows_skipped: int
    chunks_total: int
    chunks_done: int
    error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    seconds: float

    @property
    def ref(self) -> str:
        return f"{self.model}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "version": self.version,
            "actor": self.actor,
            "engine": self.engine,
            "runner": self.runner,
            "status": self.status,
            "input": self.input,
            "input_digest": self.input_digest,
            "output": self.output,
            "output_digest": self.output_digest,
            "options": self.options,
            "rows_total": self.rows_total,
            "rows_scored": self.rows_scored,
            "rows_flagged": self.rows_flagged,
            "rows_skipped": self.rows_skipped,
            "chunks_total": self.chunks_total,
            "chunks_done": self.chunks_done,
            "error": self.error,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "seconds": round(self.seconds, 3),
        }


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _record(row: Any) -> JobRecord:
    values = dict(row)
    for name in ("created_at", "updated_at", "finished_at"):
        values[name] = _utc(values[name])
    values["options"] = dict(values["options"] or {})
    return JobRecord(**values)


_COLUMNS = [c for c in batch_jobs.c if c.name != "version_id"]


class JobStore:
    """The registry's batch jobs, sharing its database and audit chain."""

    def __init__(self, store: RegistryStore) -> None:
        self.store = store
        self.db = store.db

    def _select(self) -> Any:
        return (
            select(*_COLUMNS, models.c.name.label("model"), model_versions.c.number.label("version"))
            .join(model_versions, model_versions.c.id == batch_jobs.c.version_id)
            .join(models, models.c.id == model_versions.c.model_id)
        )

    def create(
        self,
        job_id: str,
        model: str,
        version: int,
        *,
        actor: str,
        engine: str,
        input: str,
        output: str,
        options: dict[str, Any],
        runner: str = "cli",
    ) -> None:
        """Record a job as soon as its version is known (its input is planned next: :meth:`planned`)."""
        now = datetime.now(UTC)
        with self.db.write() as tx:
            version_id = self.store.version_id(tx, model, version)
            tx.execute(
                batch_jobs.insert().values(
                    id=job_id,
                    version_id=version_id,
                    actor=actor[:200],
                    engine=engine,
                    runner=runner,
                    status="running" if runner == "cli" else "queued",
                    input=input,
                    input_digest="",
                    output=output,
                    output_digest=None,
                    options=options,
                    rows_total=0,
                    rows_scored=0,
                    rows_flagged=0,
                    rows_skipped=0,
                    chunks_total=0,
                    chunks_done=0,
                    error=None,
                    created_at=now,
                    updated_at=now,
                    finished_at=None,
                    seconds=0.0,
                )
            )
            tx.audit(
                actor,
                "job.started" if runner == "cli" else "job.queued",
                f"{model}@{version}",
                after={
                    "job": job_id,
                    "input": input,
                    "output": output,
                    **options,
                },
            )

    def planned(self, job_id: str, *, input_digest: str, rows_total: int, chunks_total: int) -> None:
        """The input's digest and size, once it is planned (audited: what exactly was scored)."""
        with self.db.write() as tx:
            tx.execute(
                update(batch_jobs)
                .where(batch_jobs.c.id == job_id)
                .values(
                    input_digest=input_digest,
                    rows_total=rows_total,
                    chunks_total=chunks_total,
                    updated_at=datetime.now(UTC),
                )
            )

    def get(self, job_id: str) -> JobRecord:
        with self.db.read() as tx:
            row = tx.execute(self._select().where(batch_jobs.c.id == job_id)).mappings().one_or_none()
        if row is None:
            raise NotFound(f"no batch job {job_id[:40]!r}")
        return _record(row)

    def recent(
        self, model: str | None = None, limit: int = 50, *, version: int | None = None
    ) -> list[JobRecord]:
        """The newest jobs (of ``model``, of its ``version``), newest first."""
        query = self._select().order_by(batch_jobs.c.created_at.desc()).limit(limit)
        if model is not None:
            query = query.where(models.c.name == model)
        if version is not None:
            query = query.where(model_versions.c.number == version)
        with self.db.read() as tx:
            return [_record(row) for row in tx.execute(query).mappings()]

    def resume(self, job_id: str, actor: str) -> JobRecord:
        """Mark a job running (audited: a queued job starts, a stopped one resumes); a finished or
        cancelled job cannot run again."""
        job = self.get(job_id)
        if job.status == "done":
            raise Conflict(f"batch job {job_id} is done: its output is {job.output}")
        if job.status in ("cancelled", "cancelling"):
            raise Conflict(f"batch job {job_id} was cancelled: start a new job")
        with self.db.write() as tx:
            tx.execute(
                update(batch_jobs)
                .where(batch_jobs.c.id == job_id)
                .values(status="running", error=None, finished_at=None, updated_at=datetime.now(UTC))
            )
            action = "job.started" if job.status in ("queued", "starting") else "job.resumed"
            tx.audit(actor, action, job.ref, before={"job": job_id, "status": job.status})
        return job

    def heartbeat(self, job_id: str) -> str:
        """A running job says it is alive (``updated_at``); returns its status (``cancelling``: stop).
        A job that is stopping beats too: until its runner has stopped writing, no server may take
        it for dead, remove its work folder and call it cancelled."""
        with self.db.write() as tx:
            tx.execute(
                update(batch_jobs)
                .where(batch_jobs.c.id == job_id, batch_jobs.c.status.in_(("running", "cancelling")))
                .values(updated_at=datetime.now(UTC))
            )
            return str(tx.execute(select(batch_jobs.c.status).where(batch_jobs.c.id == job_id)).scalar_one())

    def cancel(self, job_id: str, actor: str) -> JobRecord:
        """Ask a job to stop: a queued one is cancelled at once, a running one at its next chunk."""
        job = self.get(job_id)
        if job.status in ENDED:
            raise Conflict(f"batch job {job_id} has ended ({job.status}): nothing to cancel")
        status = "cancelled" if job.status == "queued" else "cancelling"
        now = datetime.now(UTC)
        with self.db.write() as tx:
            tx.execute(
                update(batch_jobs)
                .where(batch_jobs.c.id == job_id, batch_jobs.c.status == job.status)
                .values(status=status, updated_at=now, finished_at=now if status == "cancelled" else None)
            )
            tx.audit(actor, "job.cancel", job.ref, before={"job": job_id, "status": job.status})
        return self.get(job_id)

    def claim(self, job: JobRecord, stale_before: datetime) -> bool:
        """Take a server job to run — queued, or running without a heartbeat since ``stale_before`` —
        in one conditional update: of several processes that try, one wins."""
        now = datetime.now(UTC)
        with self.db.write() as tx:
            if job.status == "queued":
                query = (
                    update(batch_jobs)
                    .where(batch_jobs.c.id == job.id, batch_jobs.c.status == "queued")
                    .values(status="starting", updated_at=now)
                )
            else:
                query = (
                    update(batch_jobs)
                    .where(
                        batch_jobs.c.id == job.id,
                        batch_jobs.c.status.in_(("starting", "running", "cancelling")),
                        batch_jobs.c.updated_at < stale_before,
                    )
                    .values(updated_at=now)
                )
            return bool(tx.execute(query).rowcount == 1)

    def waiting(self, stale_before: datetime) -> list[JobRecord]:
        """Server jobs to start: queued, or running with no heartbeat since ``stale_before``."""
        query = self._select().where(
            batch_jobs.c.runner == "server",
            (batch_jobs.c.status == "queued")
            | (
                batch_jobs.c.status.in_(("starting", "running", "cancelling"))
                & (batch_jobs.c.updated_at < stale_before)
            ),
        )
        with self.db.read() as tx:
            return [_record(row) for row in tx.execute(query).mappings()]

    def progress(
        self,
        job_id: str,
        *,
        chunks_done: int,
        rows_scored: int,
        rows_flagged: int,
        rows_skipped: int,
        seconds: float,
    ) -> None:
        with self.db.write() as tx:
            tx.execute(
                update(batch_jobs)
                .where(batch_jobs.c.id == job_id)
                .values(
                    chunks_done=chunks_done,
                    rows_scored=rows_scored,
                    rows_flagged=rows_flagged,
                    rows_skipped=rows_skipped,
                    seconds=seconds,
                    updated_at=datetime.now(UTC),
                )
            )

    def finish(self, job_id: str, actor: str, *, output_digest: str, **counts: Any) -> None:
        self._end(job_id, actor, "done", output_digest=output_digest, error=None, **counts)

    def fail(self, job_id: str, actor: str, error: str, **counts: Any) -> None:
        self._end(job_id, actor, "failed", output_digest=None, error=error[:2000], **counts)

    def cancelled(self, job_id: str, actor: str, **counts: Any) -> None:
        self._end(job_id, actor, "cancelled", output_digest=None, error="cancelled", **counts)

    def _end(self, job_id: str, actor: str, status: str, **values: Any) -> None:
        """End a job once: a job that has already ended keeps its status (a runner that outlived a
        cancellation cannot turn it into done, nor a late failure report overwrite it)."""
        now = datetime.now(UTC)
        job = self.get(job_id)
        with self.db.write() as tx:
            ended = tx.execute(
                update(batch_jobs)
                .where(batch_jobs.c.id == job_id, batch_jobs.c.status.not_in(ENDED))
                .values(status=status, updated_at=now, finished_at=now, **values)
            )
            if ended.rowcount != 1:
                return
            summary = {
                "job": job_id,
                "status": status,
                "input_digest": job.input_digest,
                **{k: v for k, v in values.items() if v is not None},
            }
            action = {"done": "job.finished", "failed": "job.failed", "cancelled": "job.cancelled"}[status]
            tx.audit(actor, action, job.ref, after=summary)
