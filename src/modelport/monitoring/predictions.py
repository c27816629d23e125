"""The prediction log: sampled inputs and outputs of served requests, in Parquet segments.

- **Sampling** per model (its log policy; models without one log nothing — inputs are personal data in
  credit and insurance, so logging is a decision, not a default).
- **Off the hot path, bounded.** A sampled request's rows are copied into per-column buffers (a few
  microseconds) holding at most ``capacity`` requests; a full log drops the record and counts it
  (``modelport_prediction_log_dropped_total``), it never blocks. Each worker's poller writes what is
  held, in a thread, every ten seconds (sooner when 5,000 requests wait, and at shutdown) as one
  segment per model, version and day, swapped in whole:
  ``HOME/predictions/model=NAME/date=YYYY-MM-DD/part-PID-NANOS-vVERSION.spool``, compacted to
  ``….parquet`` by the first reader.
- **Privacy.** Fields listed as *redact* are never written; *pseudonymise* fields are written as a keyed
  hash (HMAC-SHA256 with a secret kept in ``HOME/run/pseudonym.key``), so equal values stay joinable
  without being readable. The *subject* field's keyed hash is stored in its own column, so
  :func:`erase` can remove every record of one data subject.

The serving process never imports pyarrow (about 60 MB of memory in every worker): it writes each
segment as a *spool* file (``….spool``: a JSON header and raw numpy buffers, privacy already
applied, never a pickle), and every reader — ``modelport predictions``, the monitor's evaluation
child, :func:`erase` — first turns spool files into Parquet segments (:func:`compact`, same name,
``.parquet``), built from numpy buffers without ``pa.array`` (which would import pandas).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import random
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from modelport.errors import InvalidInput
from modelport.monitoring.metrics import METRICS

__all__ = ["SPOOL", "Column", "LogPolicy", "PredictionLog", "compact", "erase", "query", "subject_key"]

_FIELD = 100


@dataclass(frozen=True, slots=True)
class LogPolicy:
    sample_rate: float = 0.0
    redact: tuple[str, ...] = ()
    pseudonymise: tuple[str, ...] = ()
    subject: str | None = None

    @staticmethod
    def of(document: dict[str, Any]) -> LogPolicy:
        return LogPolicy(
            float(document.get("sample_rate", 0.0)),
            tuple(document.get("redact", ())),
            tuple(document.get("pseudonymise", ())),
            document.get("subject"),
        )

    def check(self, features: list[str]) -> None:
        if not 0.0 <= self.sample_rate <= 1.0:
            raise InvalidInput("the sample rate is a fraction from 0 to 1")
        named = [*self.redact, *self.pseudonymise, *([self.subject] if self.subject else [])]
        unknown = [f for f in named if f not in features]
        if unknown:
            raise InvalidInput(f"not features of the model: {', '.join(unknown[:10])}")
        both = set(self.redact) & set(self.pseudonymise)
        if both:
            raise InvalidInput(
                f"a field cannot be both redacted and pseudonymised: {', '.join(sorted(both))}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "sample_rate": self.sample_rate,
            "redact": list(self.redact),
            "pseudonymise": list(self.pseudonymise),
            "subject": self.subject,
        }


def _secret(home: Path) -> bytes:
    return run_secret(home / "run" / "pseudonym.key")


def run_secret(path: Path) -> bytes:
    """A 32-byte secret kept in ``path`` (under ``HOME/run``), created owner-only by the first caller:
    the first writer wins and the others read its key. Used for ``pseudonym.key`` and the console's
    ``console.key``."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        _private_dir(path.parent)
        key = secrets.token_bytes(32)
        try:
            # owner-only before a byte is written
            with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
                handle.write(key)
        except FileExistsError:
            return path.read_bytes()
        return key


def _private_dir(path: Path) -> None:
    """Create ``path`` and its missing parents readable by their owner only (0700): the log holds
    inputs, key ids and request ids. (``mkdir(parents=True, mode=…)`` would give the parents the
    umask's mode.) Existing folders are left as they are."""
    missing = []
    for folder in (path, *path.parents):
        if folder.is_dir():
            break
        missing.append(folder)
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)


def _write_private(table: Any, path: Path) -> None:
    """Write ``table`` as Parquet to a new file that is owner-only (0600) from its creation, whatever
    the umask; a leftover of a killed writer at ``path`` is replaced."""
    import pyarrow.parquet as pq

    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
        pq.write_table(table, handle)


def subject_key(secret: bytes, value: Any) -> str:
    return hmac.new(secret, str(value).encode(), hashlib.sha256).hexdigest()[:32]


def _buffer(like: np.ndarray, capacity: int = 256) -> np.ndarray:
    return np.empty((capacity, *like.shape[1:]), like.dtype)


def _fit(buffer: np.ndarray, start: int, end: int, dtype: np.dtype[Any]) -> np.ndarray:
    """``buffer`` if rows ``start:end`` of type ``dtype`` fit in it, else a copy of its first ``start``
    rows in one twice as long or of a wider type."""
    if end <= len(buffer) and dtype == buffer.dtype:
        return buffer
    try:
        dtype = np.result_type(buffer.dtype, dtype)
    except TypeError:  # text after numbers, say: keep both as objects
        dtype = np.dtype(object)
    grown = np.empty((max(end, 2 * len(buffer)), *buffer.shape[1:]), dtype)
    grown[:start] = buffer[:start]
    return grown


class _Pending:
    """One model version's sampled requests, held as columns: per request a few lists of strings and
    floats, per row growable numpy buffers that the rows are copied into. Nothing for the cyclic
    garbage collector to walk, no object per request, no concatenation of thousands of tiny arrays
    when writing, and a held record keeps neither its request's matrix nor its batch's outputs alive
    (a one-row slice of a batched prediction pins the whole batch)."""

    __slots__ = (
        "features",
        "flagged",
        "key_ids",
        "labels",
        "latency",
        "outputs",
        "policy",
        "request_ids",
        "rows",
        "total",
        "ts",
    )

    def __init__(self, policy: LogPolicy) -> None:
        self.policy = policy
        self.ts: list[float] = []
        self.request_ids: list[str] = []
        self.key_ids: list[str] = []
        self.latency: list[float] = []
        self.flagged: list[bool] = []
        self.rows: list[int] = []
        self.total = 0  # rows held: the per-row buffers are valid up to here
        self.features: dict[str, np.ndarray] = {}
        self.labels: np.ndarray | None = None
        self.outputs: np.ndarray | None = None

    def add(
        self,
        batch: dict[str, np.ndarray],
        labels: np.ndarray | None,
        outputs: np.ndarray,
        request_id: str,
        key_id: str,
        latency_ms: float,
        flagged: bool,
    ) -> None:
        """Keep one request, all or nothing: one whose columns do not fit the earlier requests' (other
        features, other output shape) raises ValueError and is not counted in ``total``."""
        start = self.total
        end = start + len(outputs)
        if self.outputs is None:
            self.features = {name: _buffer(column) for name, column in batch.items()}
            self.labels = None if labels is None else _buffer(labels)
            self.outputs = _buffer(outputs)
        if len(batch) != len(self.features) or (labels is None) != (self.labels is None):
            raise ValueError("a request unlike the earlier ones of this version")
        try:
            features = self.features
            for name, values in batch.items():  # the hot loop: no call unless a buffer must change
                buffer = features[name]
                if end > len(buffer) or values.dtype is not buffer.dtype:
                    buffer = features[name] = _fit(buffer, start, end, values.dtype)
                buffer[start:end] = values  # ValueError if the shapes differ
            if labels is not None:
                assert self.labels is not None
                self.labels = _fit(self.labels, start, end, labels.dtype)
                self.labels[start:end] = labels
            self.outputs = _fit(self.outputs, start, end, outputs.dtype)
            self.outputs[start:end] = outputs
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError("a request unlike the earlier ones of this version") from exc
        self.total = end
        self.rows.append(end - start)
        self.ts.append(time.time())
        self.request_ids.append(request_id)
        self.key_ids.append(key_id)
        self.latency.append(latency_ms)
        self.flagged.append(flagged)


class PredictionLog:
    """One worker's sampled predictions, gathered as columns, and its segment writer."""

    def __init__(self, home: Path, capacity: int = 50_000) -> None:
        self.directory = home / "predictions"
        self.capacity = capacity
        self.dropped = 0
        self._home = home
        self._secret: bytes | None = None
        self._pending: dict[tuple[str, int], _Pending] = {}
        self._retired: list[tuple[str, int, _Pending]] = []  # gathered under a policy since replaced
        self._held = 0
        self._last_write = time.monotonic()
        self._random = random.random
        # offer() runs on the event loop, or on a thread for a large request; take() on the loop
        self._lock = threading.Lock()

    def offer(
        self,
        policy: LogPolicy | None,
        model: str,
        version: int,
        batch: dict[str, np.ndarray],
        prediction: Any,
        *,
        request_id: str,
        key_id: str,
        latency_ms: float,
        flags: dict[str, dict[str, int]],
    ) -> None:
        """Keep this request if the policy samples it (about a microsecond; never blocks)."""
        if policy is None or policy.sample_rate <= 0.0 or self._random() >= policy.sample_rate:
            return
        if self._held >= self.capacity:
            self.dropped += 1
            METRICS.prediction_log_dropped.labels(model).inc()
            return
        outputs = prediction.probabilities if prediction.probabilities is not None else prediction.values
        with self._lock:
            pending = self._pending.get((model, version))
            if pending is None or pending.policy is not policy:
                if pending is not None and pending.ts:
                    # Any registry change brings new policy objects: what was gathered is still
                    # written, under the policy it was sampled with.
                    self._retired.append((model, version, pending))
                pending = self._pending[(model, version)] = _Pending(policy)
            try:
                pending.add(batch, prediction.labels, outputs, request_id, key_id, latency_ms, bool(flags))
            except ValueError:  # unlike this version's earlier requests: never fail the request for it
                self.dropped += 1
                METRICS.prediction_log_dropped.labels(model).inc()
                return
            self._held += 1

    def prepare(self) -> None:
        """Pay the one-time costs of the first segment now, at start-up (when some model is logged),
        not under traffic: the spool encoder's import and a first build of a segment's columns."""
        from modelport.serving.shadow_scorer import encode

        sample = _Pending(LogPolicy(1.0, pseudonymise=("t",), subject="t"))
        text = np.array(["a"], dtype=object)
        sample.add({"x": np.zeros(1), "t": text}, text, np.zeros((1, 2)), "r", "k", 0.0, False)
        columns = self._columns("warm-up", 0, sample, b"warm-up")
        encode({}, [np.ascontiguousarray(c.values) for c in columns.values() if c.kind != "string"])

    def due(self, now: float, every: float = 10.0, rows: int = 5_000) -> bool:
        """Whether to write a segment now: every ``every`` seconds, or sooner when ``rows`` requests
        wait — segments of thousands of rows, not thousands of small files."""
        if not self._held:
            return False
        return self._held >= rows or now - self._last_write >= every

    def take(self) -> list[tuple[str, int, _Pending]]:
        with self._lock:
            self._last_write = time.monotonic()
            taken = self._retired + [
                (model, version, pending) for (model, version), pending in self._pending.items()
            ]
            self._pending = {}
            self._retired = []
            self._held = 0
        return taken

    def lost(self, taken: list[tuple[str, int, _Pending]]) -> None:
        """Count taken requests whose segment could not be written (the disk is full or gone)."""
        for model, _version, pending in taken:
            self.dropped += len(pending.ts)
            METRICS.prediction_log_dropped.labels(model).inc(len(pending.ts))

    def write(self, taken: list[tuple[str, int, _Pending]]) -> int:
        """Write taken columns as Parquet segments, one per model and version (dated by their first
        request), without per-row Python work but hashing distinct values. Returns the rows written."""
        if not taken:
            return 0
        if self._secret is None:
            self._secret = _secret(self._home)
        written = 0
        for model, version, pending in taken:
            if not pending.ts:
                continue
            columns = self._columns(model, version, pending, self._secret)
            day = datetime.fromtimestamp(pending.ts[0], UTC).date().isoformat()
            folder = self.directory / f"model={model}" / f"date={day}"
            _private_dir(folder)
            name = f"part-{os.getpid()}-{time.time_ns()}-v{version}{SPOOL}"
            _write_spool(columns, folder / (name + ".tmp"))
            os.replace(folder / (name + ".tmp"), folder / name)  # readers never see half a segment
            written += pending.total
        return written

    @staticmethod
    def _table(model: str, version: int, pending: _Pending, secret: bytes) -> Any:
        """The segment as an Arrow table (what a spool file becomes when it is compacted)."""
        return _arrow(PredictionLog._columns(model, version, pending, secret))

    @staticmethod
    def _columns(model: str, version: int, pending: _Pending, secret: bytes) -> dict[str, Column]:
        """The segment's columns — privacy applied: redacted fields left out, pseudonymised ones and
        the subject keyed — in numpy and lists only: the serving process never imports pyarrow."""
        policy = pending.policy
        assert pending.outputs is not None
        counts = np.asarray(pending.rows, dtype=np.int64)
        total = pending.total
        # per row: the index of its request, and its place within it
        request = None if total == len(counts) else np.repeat(np.arange(len(counts)), counts)
        starts = np.cumsum(counts) - counts
        micros = (np.asarray(pending.ts) * 1e6).astype(np.int64)
        latency = np.asarray(pending.latency, dtype=np.float64)
        flagged = np.asarray(pending.flagged, dtype=bool)
        if request is not None:
            micros, latency, flagged = micros[request], latency[request], flagged[request]
        columns: dict[str, Column] = {
            "ts": Column("timestamp", micros),
            "model": Column("string", [model], np.zeros(total, dtype=np.intp)),
            "version": Column("int32", np.full(total, version, dtype=np.int32)),
            "request_id": Column("string", list(pending.request_ids), request),
            "key_id": Column("string", list(pending.key_ids), request),
            "row": Column("int32", (np.arange(total) - np.repeat(starts, counts)).astype(np.int32)),
            "latency_ms": Column("float64", latency),
            "flagged": Column("bool", flagged),
        }
        if pending.labels is not None:
            labels, index = np.unique(pending.labels[:total].astype(str), return_inverse=True)
            columns["label"] = Column("string", labels.tolist(), index.reshape(-1))
        outputs = pending.outputs[:total].astype(np.float64)
        if outputs.ndim == 2:
            columns["probabilities"] = Column("float64_list", outputs)
        else:
            columns["prediction"] = Column("float64", outputs)
        hashed: dict[Any, str] = {}

        def keyed(values: np.ndarray) -> Column:
            distinct: dict[Any, int] = {}  # value -> its place in `keys`; None stands for any null
            keys: list[str | None] = []
            index = np.empty(len(values), dtype=np.intp)
            for i, value in enumerate(values.tolist()):
                if value is None or value != value:
                    value = None
                place = distinct.get(value)
                if place is None:
                    place = distinct[value] = len(keys)
                    if value is None:
                        keys.append(None)
                    else:
                        if value not in hashed:
                            hashed[value] = subject_key(secret, value)
                        keys.append(hashed[value])
                index[i] = place
            return Column("string", keys, index)

        for name, column in pending.features.items():
            if name in policy.redact:
                continue
            values = column[:total]
            if name in policy.pseudonymise:
                columns[f"in.{name}"] = keyed(values)
            elif values.dtype.kind == "f":
                columns[f"in.{name}"] = Column("float64", values.astype(np.float64, copy=False))
            else:
                columns[f"in.{name}"] = Column(
                    "string", [None if v is None else str(v) for v in values.tolist()]
                )
        if policy.subject is not None and policy.subject in pending.features:
            columns["subject"] = keyed(pending.features[policy.subject][:total])
        else:
            columns["subject"] = Column("string", [None], np.zeros(total, dtype=np.intp))
        return columns


@dataclass(slots=True)
class Column:
    """One column of a segment before Arrow: numbers (``timestamp`` in microseconds, ``int32``,
    ``float64``, ``bool``, ``float64_list`` as a rows × width matrix) or ``string`` values — each row
    ``values[index[row]]`` when ``index`` is given, else ``values[row]``; None is null."""

    kind: str
    values: Any
    index: np.ndarray | None = None


def _arrow(columns: dict[str, Column]) -> Any:
    """The columns as an Arrow table, built from numpy buffers with ``Array.from_buffers``:
    ``pa.array`` would import pandas on first use (half a second, ~80 MB) and go value by value
    through Python objects."""
    import pyarrow as pa

    types = {"timestamp": pa.timestamp("us", tz="UTC"), "int32": pa.int32(), "float64": pa.float64()}
    arrays: dict[str, Any] = {}
    for name, column in columns.items():
        if column.kind == "string":
            arrays[name] = _strings(column.values, column.index)
        elif column.kind == "bool":
            arrays[name] = _booleans(column.values)
        elif column.kind == "float64_list":
            matrix = np.asarray(column.values, dtype=np.float64)
            arrays[name] = pa.FixedSizeListArray.from_arrays(
                _numbers(matrix.reshape(-1), pa.float64()), matrix.shape[1]
            )
        else:
            arrays[name] = _numbers(np.asarray(column.values), types[column.kind])
    return pa.table(arrays)


# -- spool files: what a serving process writes, numpy only; readers turn them into Parquet ---------

SPOOL = ".spool"
_SPOOL_MAGIC = b"MPSPOOL1"


def _write_spool(columns: dict[str, Column], path: Path) -> None:
    """One segment as a spool file (owner-only): a JSON header naming each column, then raw buffers
    (strings as lengths and UTF-8 bytes, nulls as a mask). Never a pickle: readers decode by the
    declared sizes only."""
    from modelport.serving.shadow_scorer import encode

    specs: list[dict[str, Any]] = []
    arrays: list[np.ndarray] = []
    for name, column in columns.items():
        spec: dict[str, Any] = {"name": name, "kind": column.kind}
        if column.kind == "string":
            values = column.values
            arrays.append(np.array(["" if v is None else v for v in values] or [], dtype=object))
            arrays.append(np.array([v is not None for v in values], dtype=bool))
            spec["indexed"] = column.index is not None
            if column.index is not None:
                arrays.append(np.asarray(column.index, dtype=np.int64))
        else:
            arrays.append(np.ascontiguousarray(column.values))
        specs.append(spec)
    data = _SPOOL_MAGIC + encode({"columns": specs}, arrays)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def _read_spool(path: Path) -> dict[str, Column]:
    from modelport.serving.shadow_scorer import FRAME, decode_arrays

    data = path.read_bytes()
    if not data.startswith(_SPOOL_MAGIC):
        raise ValueError(f"{path.name} is not a spool file")
    body = memoryview(data)[len(_SPOOL_MAGIC) :]
    size, length = FRAME.unpack(body[: FRAME.size])
    if FRAME.size + size + length != len(body):
        raise ValueError(f"{path.name} is truncated or has trailing bytes")
    header = json.loads(bytes(body[FRAME.size : FRAME.size + size]))
    arrays = iter(decode_arrays(header, bytes(body[FRAME.size + size :])))
    columns: dict[str, Column] = {}
    for spec in header["columns"]:
        if spec["kind"] == "string":
            texts, valid = next(arrays), next(arrays)
            values = [t if ok else None for t, ok in zip(texts.tolist(), valid.tolist(), strict=True)]
            index = next(arrays).astype(np.intp) if spec["indexed"] else None
            columns[spec["name"]] = Column("string", values, index)
        else:
            columns[spec["name"]] = Column(spec["kind"], next(arrays))
    return columns


def compact(home: Path, model: str | None = None) -> int:
    """Turn spool files into Parquet segments (the readers' first step; the serving process never
    loads pyarrow). A segment keeps its name, so two readers compacting at once write the same file;
    the spool goes only once its Parquet twin is in place. Returns the segments compacted."""
    root = home / "predictions"
    pattern = f"model={model}/date=*/*{SPOOL}" if model else f"model=*/date=*/*{SPOOL}"
    done = 0
    for spool in sorted(root.glob(pattern)):
        target = spool.with_suffix(".parquet")
        try:
            columns = _read_spool(spool)
        except FileNotFoundError:  # another reader compacted it meanwhile
            continue
        temporary = spool.with_name(f"{spool.stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        _write_private(_arrow(columns), temporary)
        os.replace(temporary, target)
        spool.unlink(missing_ok=True)
        done += 1
    return done


def _numbers(values: np.ndarray, type: Any) -> Any:
    """A fixed-width Arrow array over the bytes of ``values``, whose dtype is already the type's width
    (NaN stays NaN, as with ``pa.array``)."""
    import pyarrow as pa

    data = np.ascontiguousarray(values)
    assert data.ndim == 1 and data.itemsize * 8 == type.bit_width
    return pa.Array.from_buffers(type, len(data), [None, pa.py_buffer(data)])


def _booleans(values: np.ndarray) -> Any:
    import pyarrow as pa

    bits = np.packbits(np.asarray(values, dtype=bool), bitorder="little")
    return pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(bits)])


def _strings(values: Sequence[str | None], index: np.ndarray | None = None) -> Any:
    """An Arrow string array of ``values`` — or of ``values[index]``, gathered with numpy (``index``
    repeats a request's id over its rows, or points rows at their distinct value)."""
    import pyarrow as pa

    encoded = [b"" if v is None else v.encode() for v in values]
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    data = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    valid = None if None not in values else np.array([v is not None for v in values], dtype=bool)
    if index is not None:
        starts = (np.cumsum(lengths) - lengths)[index]
        lengths = lengths[index]
        ends = np.cumsum(lengths)
        data = data[
            np.repeat(starts - (ends - lengths), lengths) + np.arange(int(ends[-1]) if len(ends) else 0)
        ]
        valid = None if valid is None else valid[index]
    if data.size >= 2**31:
        raise ValueError("a string column of a segment would pass 2 GiB")
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    offsets[1:] = np.cumsum(lengths)  # below 2 GiB: fits
    nulls = 0 if valid is None else int(len(valid) - np.count_nonzero(valid))
    bitmap = None if valid is None else pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(
        pa.string(), len(lengths), [bitmap, pa.py_buffer(offsets), pa.py_buffer(data)], nulls
    )


def _record(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row as the CLI and API show it: inputs and outputs gathered into objects."""
    inputs = {k[3:]: v for k, v in row.items() if k.startswith("in.")}
    record = {k: v for k, v in row.items() if not k.startswith("in.")}
    record["inputs"] = {k: (None if isinstance(v, float) and v != v else v) for k, v in inputs.items()}
    record["outputs"] = (
        record.pop("probabilities", None) if "probabilities" in record else record.pop("prediction", None)
    )
    record["ts"] = record["ts"].isoformat()
    return record


def _segments(home: Path, model: str | None) -> list[Path]:
    compact(home, model)
    root = home / "predictions"
    pattern = f"model={model}/date=*/*.parquet" if model else "model=*/date=*/*.parquet"
    return sorted(root.glob(pattern))


def query(
    home: Path,
    model: str,
    *,
    version: int | None = None,
    since: datetime | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Logged predictions of ``model`` (newest last), optionally of one version and since a time."""
    import pyarrow.parquet as pq

    records: list[dict[str, Any]] = []
    for segment in _segments(home, model):
        if since is not None and segment.parent.name.removeprefix("date=") < since.date().isoformat():
            continue
        for row in pq.ParquetFile(segment).read().to_pylist():  # no pyarrow.dataset, no pandas
            if version is not None and row["version"] != version:
                continue
            if since is not None and row["ts"] < since:
                continue
            records.append(_record(row))
    records.sort(key=lambda r: (r["ts"], r["request_id"], r["row"]))
    return records[-limit:]


def erase(home: Path, subject: str, model: str | None = None) -> tuple[int, int]:
    """Remove every logged record of one data subject; returns (records before, records after)
    across the segments that held any. Each touched segment is rewritten whole and swapped in."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    key = subject_key(_secret(home), subject)
    before = after = 0
    for segment in _segments(home, model):
        table = pq.ParquetFile(segment).read()
        hits = pc.equal(table["subject"], key)
        removed = int(pc.sum(hits).as_py() or 0)
        if not removed:
            continue
        before += table.num_rows
        kept = table.filter(pc.invert(pc.fill_null(hits, False)))
        after += kept.num_rows
        if kept.num_rows:
            _write_private(kept, segment.with_suffix(".tmp"))
            os.replace(segment.with_suffix(".tmp"), segment)
        else:
            segment.unlink()
    return before, after
