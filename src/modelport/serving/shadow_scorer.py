"""The shadow scorer: a child process of each serving worker that scores mirrored requests on shadow
versions at idle priority (docs/releases.md).

Scoring a shadow inside the serving process — even one merged batch per 50 ms tick, on the event loop
— held requests back for the batch's 0.2 ms every tick and moved the primary's p99 by 8-26 % at
400 req/s (docs/performance.md). Here the work runs in another process under ``SCHED_IDLE``: the kernel
gives it a core only when no serving process wants one, so the shadow can slow nothing but itself. When
the machine is saturated the shadow falls behind, its bounded queue fills and copies are dropped and
counted — a shadow is best effort by design.

The worker and its scorer talk over pipes in frames: ``>II`` (header length, payload length), a JSON
header, then the raw bytes of the arrays the header describes. Nothing is unpickled on either side. The
worker sends ``config`` once, ``warm`` when a release names a shadow, and ``score`` once per tick and
group of copies (the copies' request tensors, concatenated, and the primary's answers); the scorer
converts the tensors with the shadow's own signature, scores them as one batch, compares with the
primary, logs the shadow's answers when the model logs predictions, and replies with counts only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import select
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

if TYPE_CHECKING:
    from modelport.monitoring.predictions import LogPolicy, PredictionLog
    from modelport.registry.service import LoadedVersion, Registry
    from modelport.runtimes.base import Prediction
    from modelport.settings import Settings

__all__ = ["decode_arrays", "encode", "read_frame", "scorer_config", "start_child"]

FRAME = struct.Struct(">II")
MAX_HEADER = 16 << 20
MAX_PAYLOAD = 1 << 30
MAX_LOADED = 4  # shadow versions kept loaded by one scorer
LOG_EVERY = 5.0  # seconds between prediction-log segments of the shadow's answers

log = logging.getLogger("modelport.serving")


# -- wire format ---------------------------------------------------------------------------------


def encode(header: dict[str, Any], arrays: list[np.ndarray]) -> bytes:
    """One frame: ``header`` plus ``arrays`` (numeric as raw bytes; object arrays of str or bytes as
    lengths and bytes), described in the header's ``arrays`` list."""
    specs: list[dict[str, Any]] = []
    parts: list[bytes] = []
    for array in arrays:
        if array.dtype == object:
            items = array.ravel().tolist()
            kind = "bytes" if all(isinstance(i, bytes) for i in items) else "str"
            data = [i if isinstance(i, bytes) else str(i).encode() for i in items]
            lengths = np.fromiter((len(d) for d in data), dtype="<u4", count=len(data)).tobytes()
            blob = lengths + b"".join(data)
            specs.append({"dtype": kind, "shape": list(array.shape), "nbytes": len(blob)})
        else:
            contiguous = np.ascontiguousarray(array)
            blob = contiguous.tobytes()
            specs.append({"dtype": contiguous.dtype.str, "shape": list(array.shape), "nbytes": len(blob)})
        parts.append(blob)
    text = json.dumps({**header, "arrays": specs}, separators=(",", ":")).encode()
    payload = b"".join(parts)
    return FRAME.pack(len(text), len(payload)) + text + payload


def decode_arrays(header: dict[str, Any], payload: bytes) -> list[np.ndarray]:
    arrays: list[np.ndarray] = []
    offset = 0
    for spec in header.get("arrays", []):
        nbytes = int(spec["nbytes"])
        blob = payload[offset : offset + nbytes]
        offset += nbytes
        shape = tuple(int(s) for s in spec["shape"])
        count = int(np.prod(shape)) if shape else 1
        if spec["dtype"] in ("bytes", "str"):
            lengths = np.frombuffer(blob, dtype="<u4", count=count)
            position = 4 * count
            items: list[Any] = []
            for length in lengths.tolist():
                items.append(blob[position : position + length])
                position += length
            if spec["dtype"] == "str":
                items = [i.decode(errors="replace") for i in items]
            array = np.empty(count, dtype=object)
            array[:] = items
            arrays.append(array.reshape(shape))
        else:
            arrays.append(np.frombuffer(blob, dtype=np.dtype(spec["dtype"]), count=count).reshape(shape))
    return arrays


def read_frame(read: Callable[[int], bytes | None]) -> tuple[dict[str, Any], bytes] | None:
    """The next frame from a blocking stream's ``read``, or None at its end."""
    head = _exactly(read, FRAME.size)
    if head is None:
        return None
    size, length = FRAME.unpack(head)
    if size > MAX_HEADER or length > MAX_PAYLOAD:
        raise ValueError("frame too large")
    text = _exactly(read, size)
    payload = _exactly(read, length) if length else b""
    if text is None or payload is None:
        return None
    header: dict[str, Any] = json.loads(text)
    return header, payload


def _exactly(read: Callable[[int], bytes | None], size: int) -> bytes | None:
    chunks: list[bytes] = []
    left = size
    while left:
        chunk = read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


async def start_child(module: str, config: dict[str, Any]) -> asyncio.subprocess.Process:
    """Start ``python -m module`` with piped standard input and output and send it ``config`` as its
    first frame (the database URL goes through the pipe, never argv): the shadow scorer and the
    scoring process start the same way."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(encode({"op": "config", **config}, []))
    return process


def scorer_config(settings: Settings, *, log: bool) -> dict[str, Any]:
    """What a worker tells its scorer first: where the registry is, whether predictions are logged,
    and at which priority to run."""
    return {
        "home": str(settings.home.resolve()),
        "database_url": settings.resolved_database_url,
        "artifact_url": settings.resolved_artifact_url,
        "log": log,
        # the shadow's answers reach the log as often as the worker's own, at most LOG_EVERY apart
        "log_every": min(LOG_EVERY, settings.prediction_log_flush_seconds),
        "priority": settings.shadow_priority,
    }


# -- the child -----------------------------------------------------------------------------------


class Scorer:
    """The child's state: the registry, the shadow versions it has loaded and its prediction log."""

    def __init__(
        self, registry: Registry, predictions: PredictionLog | None, log_every: float = LOG_EVERY
    ) -> None:
        from modelport.serving.pool import ModelPool

        # the worker's own loading path: verified, warmed on golden rows, archived versions refused
        self.pool = ModelPool(registry, max_models=MAX_LOADED)
        self.predictions = predictions
        self.log_every = log_every
        self._policies: dict[str, tuple[str, LogPolicy]] = {}

    def version(self, model: str, number: int) -> LoadedVersion:
        """The shadow version, loaded, verified and warmed on first use."""
        return self.pool.get(model, number)

    def score(self, header: dict[str, Any], payload: bytes) -> dict[str, Any]:
        """Score one group of copies; the reply holds counts only."""
        from modelport.serving.tensors import Tensor

        rows: list[int] = [int(r) for r in header["rows"]]
        reply: dict[str, Any] = {"release_id": header["release_id"], "copies": len(rows)}
        started = time.perf_counter()
        try:
            loaded = self.version(header["model"], int(header["version"]))
        except Exception as exc:
            log.warning(
                "shadow %s@%s not loaded (%s)", header["model"], header["version"], type(exc).__name__
            )
            return {**reply, "scored": 0, "failed": len(rows), "seconds": time.perf_counter() - started}
        arrays = decode_arrays(header, payload)
        specs = header["tensors"]
        tensors = [
            Tensor(spec["name"], spec["datatype"], list(array.shape), array)
            for spec, array in zip(specs, arrays, strict=False)
        ]
        rest = arrays[len(specs) :]
        primary_labels = rest.pop(0) if header.get("labels") else None
        primary_values = rest.pop(0) if header.get("values") else None
        keep, batch = _converted(tensors, rows, loaded)
        failed = len(rows) - len(keep)
        result = None
        if keep:
            try:
                result = loaded.predict_batch(batch)
            except Exception:
                failed, keep = len(rows), []
        seconds = time.perf_counter() - started
        reply.update(scored=len(keep), failed=failed, seconds=seconds)
        if not keep or result is None:
            return reply
        selected = _row_selection(rows, keep)
        agreed, compared = _agreement(
            None if primary_labels is None else primary_labels[selected],
            None if primary_values is None else primary_values[selected],
            result,
        )
        reply.update(compared=compared, agreed=agreed)
        if result.labels is not None:
            labels, counts = np.unique(np.asarray(result.labels).astype(str), return_counts=True)
            reply["classes"] = [[str(label), int(count)] for label, count in zip(labels, counts, strict=True)]
        if header.get("log") is not None and self.predictions is not None:
            self._log(header, rows, keep, batch, result, seconds)
        return reply

    def _log(
        self,
        header: dict[str, Any],
        rows: list[int],
        keep: list[int],
        batch: dict[str, np.ndarray],
        result: Prediction,
        seconds: float,
    ) -> None:
        from modelport.monitoring.predictions import LogPolicy
        from modelport.runtimes.base import Prediction

        assert self.predictions is not None
        model = header["model"]
        document = header["log"]
        text = json.dumps(document, sort_keys=True)
        cached = self._policies.get(model)
        if cached is None or cached[0] != text:
            cached = self._policies[model] = (text, LogPolicy.of(document))
        policy = cached[1]
        offset = 0
        for index in keep:
            count = rows[index]
            end = offset + count
            self.predictions.offer(
                policy,
                model,
                int(header["version"]),
                {name: column[offset:end] for name, column in batch.items()},
                Prediction(
                    labels=None if result.labels is None else result.labels[offset:end],
                    probabilities=None if result.probabilities is None else result.probabilities[offset:end],
                    values=None if result.values is None else result.values[offset:end],
                ),
                request_id=header["request_ids"][index],
                key_id=header["key_ids"][index],
                latency_ms=seconds * 1000,
                flags={},
            )
            offset = end

    def write_log(self, *, now: bool = False) -> None:
        log_ = self.predictions
        if log_ is None or not (now or log_.due(time.monotonic(), self.log_every)):
            return
        taken = log_.take()
        try:
            log_.write(taken)
        except OSError:
            log_.lost(taken)

    def close(self) -> None:
        for model, number in self.pool.loaded():
            self.pool.unload(model, number)


def _converted(
    tensors: list[Any], rows: list[int], loaded: LoadedVersion
) -> tuple[list[int], dict[str, np.ndarray]]:
    """The copies the shadow's signature accepts (indices) and their rows as one batch: all at once,
    or — when the merged batch is refused — copy by copy, to count exactly which ones it refuses."""
    from modelport.errors import ModelportError
    from modelport.serving.tensors import Tensor, batch_from_tensors

    try:
        batch, total, _ = batch_from_tensors(tensors, loaded.signature)
        if total == sum(rows):
            return list(range(len(rows))), batch
    except ModelportError:
        pass
    if any(t.data.ndim == 0 or t.data.shape[0] != sum(rows) for t in tensors):
        return [], {}
    keep: list[int] = []
    parts: list[dict[str, np.ndarray]] = []
    offset = 0
    for index, count in enumerate(rows):
        piece = [
            Tensor(t.name, t.datatype, [count, *t.shape[1:]], t.data[offset : offset + count])
            for t in tensors
        ]
        offset += count
        try:
            batch, total, _ = batch_from_tensors(piece, loaded.signature)
        except ModelportError:
            continue
        if total == count:
            keep.append(index)
            parts.append(batch)
    if not parts:
        return [], {}
    return keep, {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def _row_selection(rows: list[int], keep: list[int]) -> np.ndarray:
    starts = np.concatenate([[0], np.cumsum(rows)[:-1]]).astype(np.int64)
    if len(keep) == len(rows):
        return np.arange(int(sum(rows)))
    return np.concatenate([np.arange(starts[i], starts[i] + rows[i]) for i in keep])


def _agreement(labels: np.ndarray | None, values: np.ndarray | None, shadow: Prediction) -> tuple[int, int]:
    """Rows on which the shadow agrees with the primary (same label for classifiers, equal within 1e-6
    relative for regressors), and rows compared."""
    if labels is not None and shadow.labels is not None and len(labels) == len(shadow.labels):
        same = np.asarray(labels).astype(str) == np.asarray(shadow.labels).astype(str)
        return int(np.sum(same)), len(labels)
    if values is not None and shadow.values is not None and len(values) == len(shadow.values):
        close = np.isclose(values, shadow.values, rtol=1e-6, atol=1e-9)
        return int(np.sum(close)), len(values)
    return 0, 0


def _lower_priority(priority: str) -> None:
    """``idle``: run only when no serving process wants the core (``SCHED_IDLE``; where that is not
    available, nice 19). ``nice``: nice 19, a small share of a busy core."""
    if priority == "idle":
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # type: ignore[attr-defined,unused-ignore]
            return
        except (AttributeError, OSError):
            pass
    with contextlib.suppress(OSError):
        os.nice(19 - os.nice(0))


def _child() -> int:
    """Entry of the scorer process. Frames come on standard input, replies go to standard output;
    it ends when its worker closes the pipe (or dies), writing its last prediction-log segment."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s shadow scorer: %(message)s")
    with open(0, "rb", buffering=0, closefd=False) as source:  # unbuffered: select() sees every byte
        return _serve(source, sys.stdout.buffer)


def _serve(source: BinaryIO, sink: BinaryIO) -> int:
    first = read_frame(source.read)
    if first is None or first[0].get("op") != "config":
        print("ValueError", file=sys.stderr)
        return 1
    config = first[0]
    _lower_priority(str(config.get("priority", "idle")))
    from modelport.monitoring.metrics import disable
    from modelport.monitoring.predictions import PredictionLog
    from modelport.registry.artifacts import open_artifact_store
    from modelport.registry.database import Database
    from modelport.registry.service import Registry
    from modelport.registry.store import RegistryStore
    from modelport.settings import Settings

    disable()  # the worker owns /metrics; the scorer's counts travel in its replies
    settings = Settings(
        home=Path(config["home"]), database_url=config["database_url"], artifact_url=config["artifact_url"]
    )
    database = Database(settings.resolved_database_url)
    scorer = Scorer(
        Registry(settings, RegistryStore(database), open_artifact_store(settings)),
        PredictionLog(settings.home.resolve()) if config.get("log") else None,
        float(config.get("log_every", LOG_EVERY)),
    )
    try:
        while True:
            ready, _, _ = select.select([source], [], [], scorer.log_every)
            if not ready:
                scorer.write_log()
                continue
            frame = read_frame(source.read)
            if frame is None:
                break
            header, payload = frame
            op = header.get("op")
            if op == "warm":
                try:
                    scorer.version(header["model"], int(header["version"]))
                except Exception as exc:
                    log.warning(
                        "shadow %s@%s not loaded (%s)", header["model"], header["version"], type(exc).__name__
                    )
            elif op == "score":
                try:
                    reply = scorer.score(header, payload)
                except Exception as exc:  # one bad group must not end the scorer
                    log.warning("shadow scoring failed (%s)", type(exc).__name__)
                    reply = {
                        "release_id": header.get("release_id", ""),
                        "copies": len(header.get("rows", [])),
                        "scored": 0,
                        "failed": len(header.get("rows", [])),
                        "seconds": 0.0,
                    }
                sink.write(encode(reply, []))
                sink.flush()
            scorer.write_log()
    finally:
        scorer.write_log(now=True)
        scorer.close()
        database.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(_child())
