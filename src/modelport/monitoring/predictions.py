"""The prediction log: sampled inputs and outputs of served requests, in Parquet segments.

- **Sampling** per model (its log policy; models without one log nothing — inputs are personal data in
  credit and insurance, so logging is a decision, not a default).
- **Off the hot path, bounded.** A sampled request appends one tuple to an in-memory queue of fixed
  capacity; a full queue drops the record and counts it (``modelport_prediction_log_dropped_total``),
  it never blocks. Each worker's poller writes what is queued as one Parquet segment per tick, in a
  thread: ``HOME/predictions/model=NAME/date=YYYY-MM-DD/part-PID-NANOS.parquet``.
- **Privacy.** Fields listed as *redact* are never written; *pseudonymise* fields are written as a keyed
  hash (HMAC-SHA256 with a secret kept in ``HOME/run/pseudonym.key``), so equal values stay joinable
  without being readable. The *subject* field's keyed hash is stored in its own column, so
  :func:`erase` can remove every record of one data subject.

pyarrow is imported only when something is logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
import secrets
import time
from collections import deque
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


class PredictionLog:
    """One worker's queue of sampled predictions and its segment writer."""

    def __init__(self, home: Path, capacity: int = 10_000) -> None:
        self.directory = home / "predictions"
        self.capacity = capacity
        self.dropped = 0
        self._home = home
        self._secret: bytes | None = None
        self._queue: deque[tuple[Any, ...]] = deque()
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
        """Keep this request if the policy samples it (a few hundred nanoseconds; never blocks)."""
        if policy is None or policy.sample_rate <= 0.0 or self._random() >= policy.sample_rate:
            return
        if len(self._queue) >= self.capacity:
            self.dropped += 1
            METRICS.prediction_log_dropped.labels(model).inc()
            return
        self._queue.append(
            (time.time(), model, version, batch, prediction, request_id, key_id, latency_ms, flags, policy)
        )

    def take(self) -> list[tuple[Any, ...]]:
        items = list(self._queue)
        self._queue.clear()
        return items

    def write(self, items: list[tuple[Any, ...]]) -> int:
        """Write taken records as Parquet segments (one per model and day); returns the rows written."""
        if not items:
            return 0
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._secret is None:
            self._secret = _secret(self._home)
        rows_by_target: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for at, model, version, batch, prediction, request_id, key_id, latency_ms, flags, policy in items:
            day = datetime.fromtimestamp(at, UTC).date().isoformat()
            target = rows_by_target.setdefault((model, day), [])
            for row, record in enumerate(self._rows(batch, prediction, policy)):
                target.append(
                    {
                        "ts": datetime.fromtimestamp(at, UTC),
                        "model": model,
                        "version": version,
                        "request_id": request_id,
                        "key_id": key_id,
                        "row": row,
                        "inputs": json.dumps(record["inputs"], default=_plain),
                        "label": record["label"],
                        "outputs": json.dumps(record["outputs"], default=_plain),
                        "latency_ms": latency_ms,
                        "flagged": bool(flags),
                        "subject": record["subject"],
                    }
                )
        written = 0
        for (model, day), rows in rows_by_target.items():
            folder = self.directory / f"model={model}" / f"date={day}"
            folder.mkdir(parents=True, exist_ok=True)
            name = f"part-{os.getpid()}-{time.time_ns()}.parquet"
            table = pa.Table.from_pylist(rows, schema=_schema(pa))
            pq.write_table(table, folder / (name + ".tmp"))
            os.replace(folder / (name + ".tmp"), folder / name)  # readers never see half a segment
            written += len(rows)
        return written

    def _rows(self, batch: dict[str, np.ndarray], prediction: Any, policy: LogPolicy) -> list[dict[str, Any]]:
        assert self._secret is not None
        names = list(batch)
        count = len(next(iter(batch.values()))) if batch else 0
        labels = prediction.labels
        probabilities = prediction.probabilities
        values = prediction.values
        rows = []
        for index in range(count):
            inputs: dict[str, Any] = {}
            for name in names:
                if name in policy.redact:
                    continue
                value = batch[name][index]
                value = None if value is None or (isinstance(value, float) and value != value) else value
                if name in policy.pseudonymise and value is not None:
                    value = subject_key(self._secret, value)
                inputs[name] = value
            subject = None
            if policy.subject is not None and batch[policy.subject][index] is not None:
                subject = subject_key(self._secret, batch[policy.subject][index])
            outputs: Any = (
                [float(p) for p in probabilities[index]]
                if probabilities is not None
                else float(values[index])
            )
            rows.append(
                {
                    "inputs": inputs,
                    "label": None if labels is None else str(labels[index]),
                    "outputs": outputs,
                    "subject": subject,
                }
            )
        return rows


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _schema(pa: Any) -> Any:
    return pa.schema(
        [
            ("ts", pa.timestamp("us", tz="UTC")),
            ("model", pa.string()),
            ("version", pa.int32()),
            ("request_id", pa.string()),
            ("key_id", pa.string()),
            ("row", pa.int32()),
            ("inputs", pa.string()),
            ("label", pa.string()),
            ("outputs", pa.string()),
            ("latency_ms", pa.float64()),
            ("flagged", pa.bool_()),
            ("subject", pa.string()),
        ]
    )


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
            row["ts"] = row["ts"].isoformat()
            row["inputs"] = json.loads(row["inputs"])
            row["outputs"] = json.loads(row["outputs"])
            records.append(row)
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
