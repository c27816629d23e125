"""The prediction log: sampled inputs and outputs of served requests, in Parquet segments.

- **Sampling** per model (its log policy; models without one log nothing — inputs are personal data in
  credit and insurance, so logging is a decision, not a default).
- **Off the hot path, bounded.** A sampled request appends one tuple to an in-memory queue of fixed
  capacity; a full queue drops the record and counts it (``modelport_prediction_log_dropped_total``),
  it never blocks. Each worker's poller writes what is queued, in a thread, every ten seconds (sooner
  when 2,000 records wait, and at shutdown) as one Parquet segment per model and day:
  ``HOME/predictions/model=NAME/date=YYYY-MM-DD/part-PID-NANOS.parquet``.
- **Privacy.** Fields listed as *redact* are never written; *pseudonymise* fields are written as a keyed
  hash (HMAC-SHA256 with a secret kept in ``HOME/run/pseudonym.key``), so equal values stay joinable
  without being readable. The *subject* field's keyed hash is stored in its own column, so
  :func:`erase` can remove every record of one data subject.

pyarrow is imported only when something is logged.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import random
import secrets
import time
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
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(32)
        try:
            with open(path, "xb") as handle:  # first writer wins; the others read its key
                handle.write(key)
            os.chmod(path, 0o600)
        except FileExistsError:
            return path.read_bytes()
        return key


def subject_key(secret: bytes, value: Any) -> str:
    return hmac.new(secret, str(value).encode(), hashlib.sha256).hexdigest()[:32]


class _Pending:
    """One model version's sampled requests, held as columns: a handful of lists of strings, floats
    and numpy arrays (none of which the cyclic garbage collector has to walk), not one object per
    request."""

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
        self.features: dict[str, list[np.ndarray]] = {}
        self.labels: list[np.ndarray] = []
        self.outputs: list[np.ndarray] = []


class PredictionLog:
    """One worker's sampled predictions, gathered as columns, and its segment writer."""

    def __init__(self, home: Path, capacity: int = 50_000) -> None:
        self.directory = home / "predictions"
        self.capacity = capacity
        self.dropped = 0
        self._home = home
        self._secret: bytes | None = None
        self._pending: dict[tuple[str, int], _Pending] = {}
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
            if pending is not None:
                self._held -= len(pending.ts)
            pending = self._pending[(model, version)] = _Pending(policy)
        rows = len(prediction)
        pending.ts.append(time.time())
        pending.request_ids.append(request_id)
        pending.key_ids.append(key_id)
        pending.latency.append(latency_ms)
        pending.flagged.append(bool(flags))
        pending.rows.append(rows)
        for name, column in batch.items():
            pending.features.setdefault(name, []).append(column)
        if prediction.labels is not None:
            pending.labels.append(prediction.labels)
        pending.outputs.append(
            prediction.probabilities if prediction.probabilities is not None else prediction.values
        )
        self._held += 1

    @staticmethod
    def prepare() -> None:
        """Import pyarrow now (at start-up, when some model is logged): importing it during traffic
        holds the interpreter for half a second, which every request in flight would wait for."""
        import pyarrow.parquet  # noqa: F401

    def due(self, now: float, every: float = 10.0, rows: int = 5_000) -> bool:
        """Whether to write a segment now: every ``every`` seconds, or sooner when ``rows`` requests
        wait — segments of thousands of rows, not thousands of small files."""
        if not self._held:
            return False
        return self._held >= rows or now - self._last_write >= every

    def take(self) -> list[tuple[str, int, _Pending]]:
        self._last_write = time.monotonic()
        taken = [(model, version, pending) for (model, version), pending in self._pending.items()]
        self._pending = {}
        self._held = 0
        return taken

    def write(self, taken: list[tuple[str, int, _Pending]]) -> int:
        """Write taken columns as Parquet segments, one per model and version (dated by their first
        request), without per-row Python work but hashing distinct values. Returns the rows written."""
        if not taken:
            return 0
        import pyarrow.parquet as pq

        if self._secret is None:
            self._secret = _secret(self._home)
        written = 0
        for model, version, pending in taken:
            if not pending.ts:
                continue
            table = self._table(model, version, pending)
            day = datetime.fromtimestamp(pending.ts[0], UTC).date().isoformat()
            folder = self.directory / f"model={model}" / f"date={day}"
            folder.mkdir(parents=True, exist_ok=True)
            name = f"part-{os.getpid()}-{time.time_ns()}-v{version}.parquet"
            pq.write_table(table, folder / (name + ".tmp"))
            os.replace(folder / (name + ".tmp"), folder / name)  # readers never see half a segment
            written += table.num_rows
        return written

    def _table(self, model: str, version: int, pending: _Pending) -> Any:
        import pyarrow as pa

        assert self._secret is not None
        secret = self._secret
        policy = pending.policy
        counts = np.asarray(pending.rows)
        total = int(counts.sum())
        micros = (np.asarray(pending.ts) * 1e6).astype(np.int64)
        columns: dict[str, Any] = {
            "ts": pa.array(np.repeat(micros, counts)).cast(pa.timestamp("us", tz="UTC")),
            "model": pa.array([model] * total, pa.string()),
            "version": pa.array(np.full(total, version, dtype=np.int32)),
            "request_id": pa.array(
                np.repeat(np.asarray(pending.request_ids, dtype=object), counts), pa.string()
            ),
            "key_id": pa.array(np.repeat(np.asarray(pending.key_ids, dtype=object), counts), pa.string()),
            "row": pa.array(np.concatenate([np.arange(n, dtype=np.int32) for n in pending.rows])),
            "latency_ms": pa.array(np.repeat(np.asarray(pending.latency), counts)),
            "flagged": pa.array(np.repeat(np.asarray(pending.flagged), counts)),
        }
        if pending.labels:
            columns["label"] = pa.array(np.concatenate(pending.labels).astype(str), pa.string())
        outputs = np.concatenate(pending.outputs).astype(np.float64)
        if outputs.ndim == 2:
            columns["probabilities"] = pa.FixedSizeListArray.from_arrays(
                pa.array(outputs.reshape(-1)), outputs.shape[1]
            )
        else:
            columns["prediction"] = pa.array(outputs)
        hashed: dict[Any, str] = {}

        def keyed(values: np.ndarray) -> list[str | None]:
            out: list[str | None] = []
            for value in values.tolist():
                if value is None or value != value:
                    out.append(None)
                    continue
                if value not in hashed:
                    hashed[value] = subject_key(secret, value)
                out.append(hashed[value])
            return out

        for name, parts in pending.features.items():
            if name in policy.redact:
                continue
            values = np.concatenate(parts)
            if name in policy.pseudonymise:
                columns[f"in.{name}"] = pa.array(keyed(values), pa.string())
            elif values.dtype.kind == "f":
                columns[f"in.{name}"] = pa.array(values, pa.float64())
            else:
                texts = [None if v is None else str(v) for v in values.tolist()]
                columns[f"in.{name}"] = pa.array(texts, pa.string())
        if policy.subject is not None and policy.subject in pending.features:
            columns["subject"] = pa.array(
                keyed(np.concatenate(pending.features[policy.subject])), pa.string()
            )
        else:
            columns["subject"] = pa.nulls(total, pa.string())
        return pa.table(columns)


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
            pq.write_table(kept, segment.with_suffix(".tmp"))
            os.replace(segment.with_suffix(".tmp"), segment)
        else:
            segment.unlink()
    return before, after
