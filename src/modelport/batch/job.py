"""A batch job: plan, score the chunks not yet done, assemble OUTPUT atomically (docs/batch.md).

The part files in the job's work folder are its manifest of completed chunks: a part is written under
a temporary name and renamed, so it is complete or absent, and a resumed job scores exactly the
chunks whose part is absent. OUTPUT appears in one rename, after every part is in.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from modelport.batch.chunk import OnViolation
from modelport.batch.engines import ENGINES, ChunkTask, Outcome, Shipment, run_chunks
from modelport.batch.plan import Chunk, Plan, check_columns, plan_input, spool_query
from modelport.batch.store import CANCELLED
from modelport.errors import Conflict, InvalidInput, ModelportError, NotFound, StorageFailure
from modelport.progress import Progress, no_progress
from modelport.registry.names import ModelRef, parse_ref
from modelport.registry.service import LoadedVersion, Registry

log = logging.getLogger("modelport.batch")

__all__ = ["JobSummary", "ScoreOptions", "resume_job", "start_job"]

OUTPUT_KINDS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
_PROGRESS_SECONDS = 1.0  # the job's row in the database is brought up to date this often


class JobCancelled(Conflict):
    """The job was cancelled (``POST /api/v1/jobs/ID/cancel``) while it ran."""


@dataclass
class ScoreOptions:
    keep: list[str] = field(default_factory=list)
    drop: list[str] = field(default_factory=list)
    on_violation: OnViolation | None = None  # None: the model's policy
    chunk_rows: int = 65_536
    threads: int = 0  # local: threads; dask/spark without a scheduler: workers; 0: one per core
    source: str = "files"  # or "sql": INPUT is a query, run once against `database`
    database: str | None = None  # the query's database URL as recorded: its password hidden
    engine: str = "local"
    scheduler: str | None = None  # dask: tcp://host:port; spark: a master URL; None: this machine

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise InvalidInput(f"--engine is one of {', '.join(ENGINES)}, not {self.engine!r}")

    def stored(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "threads"}


@dataclass
class JobSummary:
    job_id: str
    model: str
    version: int
    output: str
    output_digest: str
    rows: int  # rows in the input
    scored: int  # rows written to OUTPUT
    flagged: int
    skipped: int
    chunks: int
    chunks_this_run: int  # chunks scored by this run (a resumed job skips the ones done)
    rows_this_run: int
    seconds: float
    skipped_file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def create_job(
    registry: Registry,
    ref: str | ModelRef,
    input_spec: str,
    output: Path,
    options: ScoreOptions,
    *,
    actor: str,
    runner: str = "cli",
) -> str:
    """Record a job: the version ``ref`` names now (resolved once: the job keeps it), INPUT, OUTPUT and
    the options. A ``cli`` job runs in the caller's process at once (:func:`start_job`); a ``server`` job
    is queued for ``modelport serve`` to run (:mod:`~modelport.batch.runner`)."""
    parsed = parse_ref(ref) if isinstance(ref, str) else ref
    output = checked_output(output, input_spec if options.source == "files" else "")
    version = registry.get(parsed)
    if options.on_violation is None:
        options.on_violation = _model_policy(registry, version.model)
    job_id = f"job-{secrets.token_hex(6)}"
    registry.store.jobs.create(
        job_id,
        version.model,
        version.number,
        actor=actor,
        engine=options.engine,
        input=input_spec,
        output=str(output),
        options=options.stored(),
        runner=runner,
    )
    return job_id


def start_job(
    registry: Registry,
    ref: str | ModelRef,
    input_spec: str,
    output: Path,
    options: ScoreOptions,
    *,
    actor: str,
    progress: Progress = no_progress,
    database: str | None = None,
) -> JobSummary:
    """Score INPUT into OUTPUT here and now. The job is recorded as soon as its version is known: a job
    refused for its input or version is in ``modelport jobs`` as failed, with the reason."""
    progress(f"loading {ref}")
    if database is not None:  # INPUT is a query
        options.source, options.database = "sql", _hidden_password(database)
    job_id = create_job(registry, ref, input_spec, output, options, actor=actor)
    return run_job(
        registry, job_id, actor=actor, progress=progress, database=database, threads=options.threads
    )


def _hidden_password(url: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        raise InvalidInput(
            "--database is not a database URL (dialect+driver://user:password@host/name)"
        ) from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return str(exc) if isinstance(exc, ModelportError) else f"{type(exc).__name__}: {exc}"


def run_job(
    registry: Registry,
    job_id: str,
    *,
    actor: str,
    progress: Progress = no_progress,
    database: str | None = None,
    threads: int = 0,
) -> JobSummary:
    """Run a recorded job — its first run, or a resume after a crash, a kill or a lost machine: the
    chunks already written are kept, the rest scored with the job's version and options, then OUTPUT
    assembled. One run of a job at a time (a second is refused, and changes nothing)."""
    jobs = registry.store.jobs
    job = jobs.get(job_id)
    if job.status == "done":
        raise Conflict(f"batch job {job_id} is done: its output is {job.output}")
    if job.runner == "server":  # the server runs it on behalf of who submitted it (audit, usage)
        actor = job.actor
        from modelport.batch.runner import confine

        try:  # again, now: a path may have become a link out of the roots since it was submitted
            confine(job.input, job.output, list(registry.settings.batch_roots))
        except ModelportError as exc:
            jobs.fail(job_id, actor, _reason(exc))
            raise
    options = ScoreOptions(**{k: v for k, v in job.options.items() if k in ScoreOptions.__dataclass_fields__})
    options.threads = threads  # this run's, not recorded: a resume may run on another machine
    output = Path(job.output)
    work = work_folder(output, job_id)
    try:
        work.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        jobs.fail(job_id, actor, f"the output folder cannot be written: {exc.strerror or exc}")
        raise StorageFailure(
            f"the output folder of {job_id} cannot be written: {exc.strerror or exc}"
        ) from None
    with _exclusive(work, job_id):
        fresh = job.status == "running" and not job.input_digest  # `start_job`'s own first run
        try:
            loaded = registry.load(job.ref)
        except BaseException as exc:
            jobs.fail(job_id, actor, _reason(exc))
            shutil.rmtree(work, ignore_errors=True)
            raise
        try:
            try:
                if options.source == "sql":  # the query's result, saved once in the work folder
                    spool = work / "query.parquet"
                    if not spool.exists():
                        if database is None:
                            raise InvalidInput(
                                "this job scores a query whose result was not saved before it stopped: "
                                "give --database URL again"
                            )
                        progress("running the query")
                        spool_query(database, job.input, spool, options.chunk_rows, loaded.signature)
                    plan = plan_input(str(spool), options.chunk_rows)
                else:
                    progress(f"reading {job.input}")
                    plan = plan_input(job.input, options.chunk_rows)
                if job.input_digest and plan.digest != job.input_digest:
                    raise Conflict(
                        f"the input of {job_id} changed since the job started (SHA-256 "
                        f"{plan.digest[:12]}…, was {job.input_digest[:12]}…): resuming would mix two "
                        "inputs; start a new job"
                    )
                check_columns(plan, loaded.signature, options.keep, options.drop)
                if not plan.rows:
                    raise InvalidInput(f"{plan.describe()} has no rows to score")
                if not fresh:
                    jobs.resume(job_id, actor)
                if not job.input_digest:
                    jobs.planned(
                        job_id, input_digest=plan.digest, rows_total=plan.rows, chunks_total=len(plan.chunks)
                    )
            except BaseException as exc:
                if not (isinstance(exc, Conflict) and "is done" in str(exc)):
                    jobs.fail(job_id, actor, _reason(exc))
                if isinstance(exc, InvalidInput):
                    shutil.rmtree(work, ignore_errors=True)
                _tidy(work)
                raise
            return _Run(registry, job_id, plan, loaded, output, options, actor, progress, work).run()
        finally:
            loaded.close()


resume_job = run_job


def work_folder(output: Path, job_id: str) -> Path:
    """Where a job keeps its parts: hidden, beside OUTPUT (the final rename stays on one file system)."""
    return output.parent / f".{output.name}.{job_id}"


def checked_output(output: Path, input_spec: str) -> Path:
    output = Path(os.path.abspath(output))
    if output.suffix.lower() not in OUTPUT_KINDS:
        raise InvalidInput(f"output {output.name!r}: write .parquet or .csv")
    if not output.parent.is_dir():
        raise NotFound(f"output folder {str(output.parent)!r} does not exist")
    if output.is_dir():
        raise InvalidInput(f"output {str(output)!r} is a folder: name a file")
    source = Path(input_spec) if input_spec else None  # None: INPUT is a query
    if (
        source is not None
        and source.exists()
        and (output == source.resolve() or (source.is_dir() and source.resolve() in output.parents))
    ):
        raise InvalidInput("the output would overwrite or sit inside the input: write it elsewhere")
    return output


def _model_policy(registry: Registry, model: str) -> OnViolation:
    policy = registry.model(model).on_violation
    return "reject" if policy == "reject" else "flag"


class _Run:
    """One run of a job (its first, or a resume), from the parts already present to OUTPUT."""

    def __init__(
        self,
        registry: Registry,
        job_id: str,
        plan: Plan,
        loaded: LoadedVersion,
        output: Path,
        options: ScoreOptions,
        actor: str,
        progress: Progress,
        work: Path,
    ) -> None:
        self.registry, self.job_id, self.plan, self.loaded = registry, job_id, plan, loaded
        self.output, self.options, self.actor, self.progress = output, options, actor, progress
        self.policy: OnViolation = options.on_violation or "flag"
        self.work = work
        self.kind = OUTPUT_KINDS[output.suffix.lower()]
        self.task = ChunkTask(plan, self.policy, tuple(options.keep), job_id, str(self.work), self.kind)
        self.counts = {"rows_scored": 0, "rows_flagged": 0, "rows_skipped": 0}
        self.started = time.perf_counter()
        self.cancel = threading.Event()

    def run(self) -> JobSummary:
        jobs = self.registry.store.jobs
        beating = threading.Event()
        heart = threading.Thread(
            target=self._beat, args=(beating,), name="modelport-job-heartbeat", daemon=True
        )
        heart.start()
        try:
            done = self._parts_done()
            todo = [c for c in self.plan.chunks if c.index not in done]
            rows_this_run = self._score(todo, len(done))
            if jobs.heartbeat(self.job_id) in CANCELLED:  # asked while the last chunks ran:
                raise JobCancelled(f"batch job {self.job_id} was cancelled")  # no OUTPUT
            digest, skipped_file = self._assemble()
        except BaseException as exc:
            seconds = time.perf_counter() - self.started
            if isinstance(exc, JobCancelled):
                shutil.rmtree(self.work, ignore_errors=True)
                with contextlib.suppress(Exception):
                    jobs.cancelled(self.job_id, self.actor, seconds=seconds, **self.counts)
                raise
            reason = _reason(exc)
            if isinstance(exc, InvalidInput):  # the same input fails the same way: nothing to resume
                shutil.rmtree(self.work, ignore_errors=True)
            elif not isinstance(exc, Conflict):
                reason += f" (resume with `modelport score --resume {self.job_id}`)"
            with contextlib.suppress(Exception):
                jobs.fail(self.job_id, self.actor, reason, seconds=seconds, **self.counts)
            _tidy(self.work)
            raise
        finally:
            beating.set()
            heart.join()
        shutil.rmtree(self.work, ignore_errors=True)
        seconds = time.perf_counter() - self.started
        jobs.finish(
            self.job_id,
            self.actor,
            output_digest=digest,
            seconds=seconds,
            chunks_done=len(self.plan.chunks),
            **self.counts,
        )
        version = self.loaded.version
        self._count_usage(version.model, rows_this_run)
        return JobSummary(
            self.job_id,
            version.model,
            version.number,
            str(self.output),
            digest,
            self.plan.rows,
            self.counts["rows_scored"],
            self.counts["rows_flagged"],
            self.counts["rows_skipped"],
            len(self.plan.chunks),
            len(todo),
            rows_this_run,
            round(seconds, 3),
            skipped_file,
        )

    def _beat(self, stop: threading.Event) -> None:
        """Tell the registry the job is alive (a server restarts jobs whose runner went silent) and
        hear whether it was cancelled."""
        while not stop.wait(self.registry.settings.batch_heartbeat_seconds):
            try:
                if self.registry.store.jobs.heartbeat(self.job_id) in CANCELLED:
                    self.cancel.set()
            except Exception as exc:  # an away database: the next beat tries again
                log.warning("batch job %s: heartbeat not written (%s)", self.job_id, type(exc).__name__)

    def _count_usage(self, model: str, rows: int) -> None:
        """A job run with an API key counts in the key's usage as online requests do: one request, its
        rows (rows scored by this run: a resumed job's earlier runs counted theirs)."""
        if not self.actor.startswith("key:"):
            return
        from datetime import UTC, datetime

        from modelport.security.store import KeyStore, UsageRow

        row = UsageRow(self.actor[4:], model, datetime.now(UTC).date(), 1, rows, 0, 0, 0)
        with contextlib.suppress(Exception):
            KeyStore(self.registry.store).add_usage([row])

    # -- the parts ----------------------------------------------------------------------------
    # A chunk's part is its rows in OUTPUT's own encoding where that concatenates (CSV lines without a
    # header), else Arrow IPC (read back by memory map, encoded once into Parquet at the end); its
    # counts are in a small JSON file written before it. The part's rename marks the chunk done.

    def _part(self, index: int, kind: str = "chunk") -> Path:
        return self.task.part(index, kind)

    def _parts_done(self) -> set[int]:
        """The chunks whose part is in, with their counts added."""
        done: set[int] = set()
        for chunk in self.plan.chunks:
            part = self._part(chunk.index)
            if not part.exists():
                continue
            counts = json.loads(part.with_suffix(".json").read_text())
            for name in self.counts:
                self.counts[name] += int(counts[name])
            done.add(chunk.index)
        for stale in self.work.glob(".*.tmp"):  # a part being written when the job stopped
            stale.unlink(missing_ok=True)
        return done

    def _score(self, todo: list[Chunk], already: int) -> int:
        total = len(self.plan.chunks)
        finished, rows_this_run, last = already, 0, time.perf_counter()
        failures: list[Outcome] = []
        rows = {c.index: c.rows for c in todo}
        # closed on the way out, whatever the way: its chunks in flight end before the work folder is
        # removed (a cancelled or failed job) or OUTPUT assembled
        outcomes = run_chunks(
            self.options.engine,
            todo,
            self.task,
            self.loaded,
            self._shipment,
            threads=self.options.threads,
            scheduler=self.options.scheduler,
        )
        with contextlib.closing(outcomes):
            for outcome in outcomes:
                if self.cancel.is_set():
                    raise JobCancelled(f"batch job {self.job_id} was cancelled")
                if outcome.error is not None:  # the chunks in flight finish: the earliest error is told
                    failures.append(outcome)
                    continue
                finished += 1
                rows_this_run += rows[outcome.index]
                self.counts["rows_scored"] += outcome.scored
                self.counts["rows_flagged"] += outcome.flagged
                self.counts["rows_skipped"] += outcome.skipped
                now = time.perf_counter()
                self._tell(finished, total, rows_this_run, now)
                if now - last >= _PROGRESS_SECONDS:
                    last = now
                    self.registry.store.jobs.progress(
                        self.job_id, chunks_done=finished, seconds=now - self.started, **self.counts
                    )
        if failures:
            raise min(failures, key=lambda outcome: outcome.index).raised()
        return rows_this_run

    def _shipment(self) -> Shipment:
        """The version's serving artifact for remote workers (read and verified here, once)."""
        version = self.loaded.version
        role = "onnx" if version.serving_format == "onnx" else "native"
        return Shipment(version, role, self.registry.read_artifact(version, role))

    def _tell(self, finished: int, total: int, rows_this_run: int, now: float) -> None:
        elapsed = max(now - self.started, 1e-9)
        rate = rows_this_run / elapsed
        done_rows = sum(c.rows for c in self.plan.chunks[: min(finished, total)])
        left = (self.plan.rows - done_rows) / rate if rate else 0.0
        self.progress(
            f"scoring with {self.loaded.version.ref}: {rate:,.0f} rows/s, {left:,.0f} s left", finished, total
        )

    # -- OUTPUT -------------------------------------------------------------------------------

    def _assemble(self) -> tuple[str, str | None]:
        """Every part, in chunk order, into OUTPUT (and the skipped rows into OUTPUT.skipped.csv):
        written beside it under a temporary name, flushed, then renamed."""
        self.progress(f"writing {self.output.name}")
        parts = [self._part(c.index) for c in self.plan.chunks]
        if self.kind == "csv":
            header = json.loads(parts[0].with_suffix(".json").read_text())["header"].encode()
            digest = _publish(self.output, self.job_id, lambda sink: _join_csv(header, parts, sink))
        else:
            digest = _publish(self.output, self.job_id, lambda sink: _join_parquet(parts, sink))
        skipped = [p for c in self.plan.chunks if (p := self._part(c.index, "skipped")).exists()]
        skipped_file = None
        if skipped:
            target = self.output.with_name(self.output.name + ".skipped.csv")
            _publish(target, self.job_id, lambda sink: _join_tables(skipped, sink))
            skipped_file = str(target)
        return digest, skipped_file


def _read_arrow(path: Path) -> pa.Table:
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).read_all()


class _Digesting:
    """A sink that hashes what it writes: OUTPUT's digest without reading it again."""

    def __init__(self, raw: Any) -> None:
        self.raw, self.digest = raw, hashlib.sha256()

    def write(self, data: Any) -> int:
        self.digest.update(data)
        return int(self.raw.write(data))


def _join_csv(header: bytes, parts: list[Path], sink: Any) -> str:
    hashing = _Digesting(sink)
    hashing.write(header)
    for part in parts:
        with part.open("rb") as source:
            while block := source.read(8 << 20):
                hashing.write(block)
    return hashing.digest.hexdigest()


def _join_parquet(parts: list[Path], sink: Any) -> None:
    writer: pq.ParquetWriter | None = None
    schema: pa.Schema | None = None
    for part in parts:
        table = _read_arrow(part)
        if schema is None:
            schema = table.schema
            writer = pq.ParquetWriter(sink, schema, compression="snappy")
        elif table.schema != schema:
            table = _conformed(table, schema)
        assert writer is not None
        writer.write_table(table)
    if writer is not None:
        writer.close()


def _join_tables(parts: list[Path], sink: Any) -> None:
    import pyarrow.csv as pacsv

    writer: Any = None
    schema: pa.Schema | None = None
    for part in parts:
        table = _read_arrow(part)
        if schema is None:
            schema = table.schema
            writer = pacsv.CSVWriter(sink, schema)
        elif table.schema != schema:
            table = _conformed(table, schema)
        writer.write_table(table)
    if writer is not None:
        writer.close()


def _publish(target: Path, job_id: str, write: Any) -> str:
    """Write ``target`` atomically; its SHA-256 (from the writer when it hashes, else read back)."""
    temporary = target.with_name(f".{target.name}.{job_id}.tmp")
    try:
        with temporary.open("wb") as sink:
            digest = write(sink)
            sink.flush()
            os.fsync(sink.fileno())
        if digest is None:
            hashed = hashlib.sha256()
            with temporary.open("rb") as written:  # from the page cache: a fraction of the writing
                while block := written.read(8 << 20):
                    hashed.update(block)
            digest = hashed.hexdigest()
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _sync_folder(target.parent)
    return str(digest)


def _conformed(table: pa.Table, schema: pa.Schema) -> pa.Table:
    try:
        return table.select(schema.names).cast(schema)
    except (pa.ArrowException, KeyError) as exc:
        raise InvalidInput(
            f"the input's files disagree on a column's type ({str(exc)[:160]}): make them one type"
        ) from None


def _sync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        handle = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def _tidy(work: Path) -> None:
    """Remove a work folder that holds no part (only its lock): there is nothing to resume from."""
    with contextlib.suppress(OSError):
        if all(entry.name == "lock" for entry in work.iterdir()):
            shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def _exclusive(work: Path, job_id: str) -> Iterator[None]:
    """One run of a job at a time: a second `--resume` while the first runs is refused."""
    import fcntl

    with (work / "lock").open("a+") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Conflict(f"batch job {job_id} is running in another process") from None
        yield
