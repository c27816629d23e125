"""Where a job's chunks are scored (docs/batch.md): threads of this process (``local``), a Dask cluster
(``dask``: a ``LocalCluster`` unless a scheduler is named) or Spark (``spark``: ``mapInPandas`` over a
table of chunk descriptions).

Every engine runs the same :class:`ChunkTask` on each chunk: read it, score it through the serving
functions, write its part (the manifest entry). What differs is where. A remote worker gets the
version once — a :class:`Shipment` of the serving artifact's bytes with its SHA-256, broadcast to each
worker once (Dask ``scatter(broadcast=True)``, a Spark broadcast variable) and verified there before
its runtime is built, then kept in that worker process by digest — never inside every task. A chunk's
failure comes back as a value naming the error class and its message, so the driver tells the user
the same message whatever the engine.

Workers read INPUT and write the parts beside OUTPUT by path: on several machines, both must be on a
file system every worker mounts at the same path.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import sys
import threading
import warnings
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from modelport import errors
from modelport.batch.chunk import OnViolation, score_chunk
from modelport.batch.plan import Chunk, Plan, read_chunk
from modelport.errors import IntegrityFailure, InvalidInput, ModelportError
from modelport.registry.records import VersionRecord
from modelport.registry.service import LoadedVersion

__all__ = ["ENGINES", "ChunkTask", "Outcome", "Shipment", "run_chunks"]

ENGINES = ("local", "dask", "spark")


@dataclass(frozen=True, slots=True)
class Outcome:
    index: int
    scored: int = 0
    flagged: int = 0
    skipped: int = 0
    error: tuple[str, str] | None = None  # (error class name, message)

    def raised(self) -> BaseException:
        assert self.error is not None
        kind = getattr(errors, self.error[0], None)
        if isinstance(kind, type) and issubclass(kind, ModelportError):
            return kind(self.error[1])
        return RuntimeError(f"{self.error[0]}: {self.error[1]}")


@dataclass(frozen=True)
class Shipment:
    """A version's serving artifact, sent once to each remote worker and verified there."""

    version: VersionRecord
    role: str
    blob: bytes

    def loaded(self) -> LoadedVersion:
        """The runtime, built once per worker process (by the artifact's digest) after its bytes were
        checked against the digest the registry recorded."""
        artifact = self.version.artifact(self.role)
        assert artifact is not None
        with _SHIPPED_LOCK:
            found = _SHIPPED.get(artifact.digest)
            if found is None:
                if hashlib.sha256(self.blob).hexdigest() != artifact.digest:
                    raise IntegrityFailure(
                        f"the {self.role} artifact of {self.version.ref} arrived changed on a worker "
                        f"(expected sha256:{artifact.digest[:12]}…): refusing to score with it"
                    )
                from modelport.runtimes.base import load_runtime
                from modelport.signature import Signature

                signature = Signature.from_dict(self.version.signature)
                runtime = load_runtime(artifact.format, self.blob, artifact.details, signature)
                found = _SHIPPED[artifact.digest] = LoadedVersion(self.version, signature, runtime)
            return found


_SHIPPED: dict[str, LoadedVersion] = {}
_spark_stop_registered = False
_SHIPPED_LOCK = threading.Lock()


@dataclass(frozen=True)
class ChunkTask:
    """What is done to one chunk, wherever it runs: read, score, write its part atomically."""

    plan: Plan
    policy: OnViolation
    keep: tuple[str, ...]
    job_id: str
    work: str
    kind: str  # OUTPUT's kind: csv parts are CSV lines, parquet parts Arrow IPC

    def part(self, index: int, role: str = "chunk") -> Path:
        suffix = "csv" if role == "chunk" and self.kind == "csv" else "arrow"
        return Path(self.work) / f"{role}-{index:06d}.{suffix}"

    def __call__(self, chunk: Chunk, loaded: LoadedVersion) -> Outcome:
        try:
            return self._score(chunk, loaded)
        except ModelportError as exc:
            return Outcome(chunk.index, error=(type(exc).__name__, str(exc)))
        except (OSError, pa.ArrowException) as exc:
            return Outcome(chunk.index, error=("StorageFailure", f"chunk {chunk.index}: {exc}"))

    def _score(self, chunk: Chunk, loaded: LoadedVersion) -> Outcome:
        wanted = list(dict.fromkeys([*loaded.signature.names, *self.keep]))
        table = read_chunk(self.plan, chunk, loaded.signature, wanted)
        scored = score_chunk(table, chunk.first_row, loaded, self.policy, list(self.keep), self.job_id)
        skipped = scored.skipped.num_rows if scored.skipped is not None else 0
        if scored.skipped is not None and skipped:
            rejected = scored.skipped
            write_atomically(self.part(chunk.index, "skipped"), lambda sink: write_arrow(rejected, sink))
        counts: dict[str, Any] = {
            "rows_scored": scored.table.num_rows,
            "rows_flagged": scored.flagged,
            "rows_skipped": skipped,
        }
        if self.kind == "csv":  # the header line OUTPUT starts with
            header = pa.BufferOutputStream()
            write_csv(scored.table.slice(0, 0), header, header=True)
            counts["header"] = header.getvalue().to_pybytes().decode()
        part = self.part(chunk.index)
        write_atomically(part.with_suffix(".json"), lambda sink: sink.write(json.dumps(counts).encode()))
        if self.kind == "csv":
            write_atomically(part, lambda sink: write_csv(scored.table, sink, header=False))
        else:
            write_atomically(part, lambda sink: write_arrow(scored.table, sink))
        return Outcome(chunk.index, scored.table.num_rows, scored.flagged, skipped)


def write_atomically(path: Path, write: Callable[[Any], Any]) -> None:
    """``write(sink)`` into ``path``: a temporary file, flushed to disk, then renamed."""
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("wb") as sink:
        write(sink)
        sink.flush()
        os.fsync(sink.fileno())
    os.replace(temporary, path)


def write_arrow(table: pa.Table, sink: Any) -> None:
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def write_csv(table: pa.Table, sink: Any, *, header: bool) -> None:
    import pyarrow.csv as pacsv

    pacsv.write_csv(table, sink, write_options=pacsv.WriteOptions(include_header=header))


# -- the engines --------------------------------------------------------------------------------------


def run_chunks(
    engine: str,
    chunks: list[Chunk],
    task: ChunkTask,
    loaded: LoadedVersion,
    shipment: Callable[[], Shipment],
    *,
    threads: int,
    scheduler: str | None,
) -> Generator[Outcome, None, None]:
    """Score ``chunks`` with ``engine``, yielding each chunk's outcome as it ends. After the first
    failure no further chunk is started; the chunks in flight finish (their outcomes are yielded)."""
    if engine == "local":
        return _local(chunks, task, loaded, threads)
    if engine == "dask":
        return _dask(chunks, task, shipment(), threads, scheduler)
    if engine == "spark":
        return _spark(chunks, task, shipment(), threads, scheduler)
    raise InvalidInput(f"--engine is one of {', '.join(ENGINES)}, not {engine!r}")


def _local(
    chunks: list[Chunk], task: ChunkTask, loaded: LoadedVersion, threads: int
) -> Generator[Outcome, None, None]:
    threads = threads or os.cpu_count() or 1
    pending: set[Future[Outcome]] = set()
    failed = False
    remaining = iter(chunks)
    with ThreadPoolExecutor(threads, thread_name_prefix="modelport-score") as pool:
        try:
            while True:
                while not failed and len(pending) < 2 * threads and (chunk := next(remaining, None)):
                    pending.add(pool.submit(task, chunk, loaded))
                if not pending:
                    return
                completed, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in completed:
                    outcome = future.result()
                    failed = failed or outcome.error is not None
                    yield outcome
        finally:
            for future in pending:
                future.cancel()


def _score_shipped(task: ChunkTask, chunk: Chunk, shipment: Shipment) -> Outcome:
    """A remote worker's call: the version from the shipment (built once per process)."""
    try:
        loaded = shipment.loaded()
    except ModelportError as exc:
        return Outcome(chunk.index, error=(type(exc).__name__, str(exc)))
    return task(chunk, loaded)


def _dask(
    chunks: list[Chunk], task: ChunkTask, shipment: Shipment, threads: int, scheduler: str | None
) -> Generator[Outcome, None, None]:
    from modelport.optional import require

    distributed: Any = require("distributed", "dask", "scoring on Dask (--engine dask)")

    cluster = None
    if scheduler is None:  # this machine: one single-threaded worker process per core
        cluster = distributed.LocalCluster(
            n_workers=threads or os.cpu_count() or 1,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        )
    client = distributed.Client(cluster if cluster is not None else scheduler)
    try:
        # every worker up before the version is broadcast: a task runs where its data is, so a worker
        # that joined after the broadcast would stay idle (measured: 2 workers as fast as 1)
        client.wait_for_workers(len(cluster.workers) if cluster is not None else 1, timeout=120)
        [model] = client.scatter([shipment], broadcast=True, hash=False)  # once per worker
        futures = {client.submit(_score_shipped, task, chunk, model, pure=False): chunk for chunk in chunks}
        for future in distributed.as_completed(list(futures)):
            if future.cancelled():
                continue
            outcome: Outcome = future.result()
            if outcome.error is not None:  # later chunks are not needed; earlier ones may fail first
                client.cancel([f for f, c in futures.items() if c.index > outcome.index and not f.done()])
            yield outcome
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _spark(
    chunks: list[Chunk], task: ChunkTask, shipment: Shipment, threads: int, master: str | None
) -> Generator[Outcome, None, None]:
    from modelport.optional import require

    require("pyspark", "spark", "scoring on Spark (--engine spark)")
    import pandas as pd
    from pyspark.sql import SparkSession

    cores = threads or os.cpu_count() or 1
    builder = SparkSession.builder
    if master is None:  # this machine: its Python workers are this interpreter (its packages)
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = builder.config("spark.pyspark.python", sys.executable)
    spark = (
        builder.master(master or f"local[{cores}]")
        .appName(f"modelport {task.job_id}")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    model = spark.sparkContext.broadcast(shipment)  # once per executor
    try:
        described = [(c.index, c.file, c.start, c.stop, c.first_row, c.rows) for c in chunks]

        def score(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
            for frame in frames:
                outcomes = [
                    _score_shipped(task, Chunk(*(int(v) for v in row)), model.value)
                    for row in frame.itertuples(index=False)
                ]
                yield pd.DataFrame(
                    {
                        "index": [o.index for o in outcomes],
                        "scored": [o.scored for o in outcomes],
                        "flagged": [o.flagged for o in outcomes],
                        "skipped": [o.skipped for o in outcomes],
                        "error_kind": [o.error[0] if o.error else None for o in outcomes],
                        "error": [o.error[1] if o.error else None for o in outcomes],
                    }
                )

        schema = "index long, scored long, flagged long, skipped long, error_kind string, error string"
        columns = "index long, file long, start long, stop long, first_row long, rows long"
        frame = spark.createDataFrame(described, columns).repartition(
            max(1, min(len(chunks), cores * 4)), "index"
        )
        with warnings.catch_warnings():
            # PySpark 4.3 warns that pandas 3 is "not yet fully supported"; mapInPandas only carries
            # the chunks' descriptions and counts here, which tests/batch/test_engines.py checks.
            warnings.filterwarnings(
                "ignore", message="PySpark does not yet fully support", category=FutureWarning
            )
            scored = frame.mapInPandas(score, schema)
        for row in scored.collect():  # progress is told when Spark is done
            error = (row["error_kind"], row["error"]) if row["error_kind"] else None
            yield Outcome(
                int(row["index"]), int(row["scored"]), int(row["flagged"]), int(row["skipped"]), error
            )
    finally:
        model.unpersist()
        # The session stays for the next job of this process (a Spark context takes seconds to start)
        # and stops when the process ends.
        global _spark_stop_registered
        if not _spark_stop_registered:
            atexit.register(spark.stop)
            _spark_stop_registered = True
