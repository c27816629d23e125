"""The prediction log: sampled inputs and outputs of served requests, in Parquet segments.

- **Sampling** per model (its log policy; models without one log nothing — inputs are personal data in
  credit and insurance, so logging is a decision, not a default).
- **Off the hot path, bounded.** A sampled request's rows are copied into per-column buffers (a few
  microseconds) holding at most ``capacity`` requests; a full log drops the record and counts it
  (``modelport_prediction_log_dropped_total``), it never blocks. Each worker's poller writes what is
  held, in a thread, every ten seconds (sooner when 5,000 requests wait, and at shutdown) as one
  Parquet segment per model, version and day, swapped in whole:
  ``HOME/predictions/model=NAME/date=YYYY-MM-DD/part-PID-NANOS-vVERSION.parquet``.
- **Privacy.** Fields listed as *redact* are never written; *pseudonymise* fields are written as a keyed
  hash (HMAC-SHA256 with a secret kept in ``HOME/run/pseudonym.key``), so equal values stay joinable
  without being readable. The *subject* field's keyed hash is stored in its own column, so
  :func:`erase` can remove every record of one data subject.

pyarrow is imported only when something is logged, and then at start-up; segments are built
from numpy buffers without ``pa.array``, which would import pandas into the serving process.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import random
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from modelport.errors import InvalidInput
from modelport.monitoring.metrics import METRICS

__all__ = ["LogPolicy", "PredictionLog", "erase", "query", "subject_key"]

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
    path = home / "run" / "pseudonym.key"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        _private_dir(path.parent)
        key = secrets.token_bytes(32)
        try:
            # first writer wins (the others read its key); owner-only before a byte is written
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
        pending = self._pending.get((model, version))
        if pending is None or pending.policy is not policy:
            if pending is not None and pending.ts:
                # Any registry change brings new policy objects: what was gathered is still written,
                # under the policy it was sampled with.
                self._retired.append((model, version, pending))
            pending = self._pending[(model, version)] = _Pending(policy)
        outputs = prediction.probabilities if prediction.probabilities is not None else prediction.values
        try:
            pending.add(batch, prediction.labels, outputs, request_id, key_id, latency_ms, bool(flags))
        except ValueError:  # unlike this version's earlier requests: never fail the request for it
            self.dropped += 1
            METRICS.prediction_log_dropped.labels(model).inc()
            return
        self._held += 1

    def prepare(self) -> None:
        """Pay pyarrow's one-time costs now, at start-up (when some model is logged), not in the first
        segment under traffic: its import (half a second of holding the interpreter, which every
        request in flight would wait for) and the first build and write of a table."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        sample = _Pending(LogPolicy(1.0, pseudonymise=("t",), subject="t"))
        text = np.array(["a"], dtype=object)
        sample.add({"x": np.zeros(1), "t": text}, text, np.zeros((1, 2)), "r", "k", 0.0, False)
        pq.write_table(self._table("warm-up", 0, sample, b"warm-up"), pa.BufferOutputStream())

    def due(self, now: float, every: float = 10.0, rows: int = 5_000) -> bool:
        """Whether to write a segment now: every ``every`` seconds, or sooner when ``rows`` requests
        wait — segments of thousands of rows, not thousands of small files."""
        if not self._held:
            return False
        return self._held >= rows or now - self._last_write >= every

    def take(self) -> list[tuple[str, int, _Pending]]:
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
            table = self._table(model, version, pending, self._secret)
            day = datetime.fromtimestamp(pending.ts[0], UTC).date().isoformat()
            folder = self.directory / f"model={model}" / f"date={day}"
            _private_dir(folder)
            name = f"part-{os.getpid()}-{time.time_ns()}-v{version}.parquet"
            _write_private(table, folder / (name + ".tmp"))
            os.replace(folder / (name + ".tmp"), folder / name)  # readers never see half a segment
            written += table.num_rows
        return written

    @staticmethod
    def _table(model: str, version: int, pending: _Pending, secret: bytes) -> Any:
        """The segment as an Arrow table, built from numpy buffers with ``Array.from_buffers``:
        ``pa.array`` would import pandas on first use (half a second, ~80 MB) and go value by value
        through Python objects."""
        import pyarrow as pa

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
        columns: dict[str, Any] = {
            "ts": _numbers(micros, pa.timestamp("us", tz="UTC")),
            "model": _strings([model], np.zeros(total, dtype=np.intp)),
            "version": _numbers(np.full(total, version, dtype=np.int32), pa.int32()),
            "request_id": _strings(pending.request_ids, request),
            "key_id": _strings(pending.key_ids, request),
            "row": _numbers((np.arange(total) - np.repeat(starts, counts)).astype(np.int32), pa.int32()),
            "latency_ms": _numbers(latency, pa.float64()),
            "flagged": _booleans(flagged),
        }
        if pending.labels is not None:
            labels, index = np.unique(pending.labels[:total].astype(str), return_inverse=True)
            columns["label"] = _strings(labels.tolist(), index.reshape(-1))
        outputs = pending.outputs[:total].astype(np.float64)
        if outputs.ndim == 2:
            columns["probabilities"] = pa.FixedSizeListArray.from_arrays(
                _numbers(outputs.reshape(-1), pa.float64()), outputs.shape[1]
            )
        else:
            columns["prediction"] = _numbers(outputs, pa.float64())
        hashed: dict[Any, str] = {}

        def keyed(values: np.ndarray) -> Any:
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
            return _strings(keys, index)

        for name, column in pending.features.items():
            if name in policy.redact:
                continue
            values = column[:total]
            if name in policy.pseudonymise:
                columns[f"in.{name}"] = keyed(values)
            elif values.dtype.kind == "f":
                columns[f"in.{name}"] = _numbers(values.astype(np.float64, copy=False), pa.float64())
            else:
                columns[f"in.{name}"] = _strings([None if v is None else str(v) for v in values.tolist()])
        if policy.subject is not None and policy.subject in pending.features:
            columns["subject"] = keyed(pending.features[policy.subject][:total])
        else:
            columns["subject"] = pa.nulls(total, pa.string())
        return pa.table(columns)


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
        for row in pq.read_table(segment).to_pylist():
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
        table = pq.read_table(segment)
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
