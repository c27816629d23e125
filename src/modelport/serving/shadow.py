"""Shadow traffic (docs/releases.md): copies of answered requests scored on the shadow version, off the
request path, in bounded memory.

The data plane offers a request after its primary answer is ready; the copy waits in a per-worker queue
of ``capacity`` requests (a full queue drops the copy and counts it — never blocks, never delays the
answer). A background task wakes every ``tick`` seconds, takes everything queued and scores it as one
merged batch on the shadow version: mirroring costs one vectorised call per tick, not one per request.
When the shadow has the primary's features, the columns the primary already validated are reused. Each
copy's answer is compared with the primary's (same label for classifiers, equal within 1e-6 relative
for regressors), counted per release (requests, errors, the group's scoring time, predicted classes,
agreements) and, when the model logs predictions, logged under the shadow's version with the request's
id — so feedback labels score the shadow too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from modelport.errors import ModelportError
from modelport.releases.policy import Release
from modelport.releases.stats import ReleaseCounters
from modelport.runtimes.base import Prediction
from modelport.serving.tensors import Tensor, batch_from_tensors
from modelport.signature import Batch, Signature

if TYPE_CHECKING:
    from modelport.serving.dataplane import DataPlane

__all__ = ["Copy", "ShadowMirror"]

log = logging.getLogger("modelport.serving")


@dataclass(slots=True)
class Copy:
    model: str
    release: Release
    inputs: list[Tensor]
    batch: Batch  # the columns the primary validated (reused when the shadow has the same signature)
    signature: Signature
    rows: int
    primary: Prediction
    request_id: str
    key_id: str


class ShadowMirror:
    def __init__(
        self, plane: DataPlane, counters: ReleaseCounters, *, capacity: int = 1024, tick: float = 0.05
    ) -> None:
        self.plane = plane
        self.counters = counters
        self.capacity = capacity
        self.tick = tick
        self.dropped = 0
        self._queue: deque[Copy] = deque()
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._same: dict[tuple[int, int], bool] = {}

    def offer(self, model: str, release: Release, copy: Copy) -> None:
        if len(self._queue) >= self.capacity:
            self.dropped += 1
            self.counters.dropped(release.release_id)
            return
        self._queue.append(copy)
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())
        elif self._wake is not None and not self._wake.is_set():
            self._wake.set()

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
            await asyncio.sleep(self.tick)  # let copies gather: one batch per tick
            copies = list(self._queue)
            self._queue.clear()
            groups: dict[tuple[str, int, str], list[Copy]] = {}
            for copy in copies:
                assert copy.release.shadow is not None
                groups.setdefault((copy.model, copy.release.shadow, copy.release.release_id), []).append(copy)
            for (model, number, release_id), group in groups.items():
                try:
                    await self._score(model, number, release_id, group)
                except Exception as exc:  # the shadow must never take the worker down
                    log.warning("shadow scoring failed (%s)", type(exc).__name__)
                    self.counters.shadow(release_id, len(group), 0.0, error=True)

    async def _score(self, model: str, number: int, release_id: str, group: list[Copy]) -> None:
        """Score a group as one batch, then compare, count and log."""
        plane = self.plane
        started = time.perf_counter()
        try:
            if plane.pool.is_loaded(model, number):
                loaded = plane.pool.get(model, number)
            else:
                loaded = await asyncio.to_thread(plane.pool.get, model, number)
        except ModelportError:
            self.counters.shadow(release_id, len(group), time.perf_counter() - started, error=True)
            return
        kept: list[tuple[Copy, Batch]] = []
        failed = 0
        for copy in group:
            pair = (id(copy.signature), id(loaded.signature))
            same = self._same.get(pair)
            if same is None:
                if len(self._same) > 256:
                    self._same.clear()
                same = self._same[pair] = _same_columns(copy.signature, loaded.signature)
            if same:
                kept.append((copy, copy.batch))
                continue
            try:
                batch, _, _ = batch_from_tensors(copy.inputs, loaded.signature)
            except ModelportError:
                failed += 1  # the shadow's signature refuses what the primary accepted
                continue
            kept.append((copy, batch))
        if kept:
            names = list(kept[0][1])
            merged = {name: np.concatenate([batch[name] for _, batch in kept]) for name in names}
            try:
                # On the event loop, like the primary's batches: one call of ~0.1-1 ms per tick. In a
                # thread it cost the primary more — the runtime wrapper's Python work held the GIL
                # for up to a switch interval (5 ms) while requests waited (docs/performance.md).
                result = loaded.predict_batch(merged)
            except Exception:
                failed += len(kept)
                kept = []
        seconds = time.perf_counter() - started
        if kept:
            primary = Prediction(
                labels=_joined([c.primary.labels for c, _ in kept]),
                values=_joined([c.primary.values for c, _ in kept]),
            )
            agreed, compared = _agreement(primary, result)
            self.counters.shadow(
                release_id,
                len(kept),
                seconds,
                error=False,
                compared=compared,
                agreed=agreed,
                labels=result.labels,
            )
            if plane.predictions is not None and model in plane.pool.log_policies:
                offset = 0
                for copy, batch in kept:
                    part = _slice(result, offset, offset + copy.rows)
                    offset += copy.rows
                    plane.predictions.offer(
                        plane.log_policy(model),
                        model,
                        number,
                        batch,
                        part,
                        request_id=copy.request_id,
                        key_id=copy.key_id,
                        latency_ms=seconds * 1000,
                        flags={},
                    )
        if failed:
            self.counters.shadow(release_id, failed, seconds, error=True)


def _same_columns(a: Signature, b: Signature) -> bool:
    """Whether columns converted for ``a`` are what ``b`` would convert (names, types, categories;
    value ranges only decide flags)."""
    return a is b or [(f.name, f.dtype, f.categories) for f in a.features] == [
        (f.name, f.dtype, f.categories) for f in b.features
    ]


def _joined(parts: list[np.ndarray | None]) -> np.ndarray | None:
    return None if any(p is None for p in parts) else np.concatenate(parts)  # type: ignore[arg-type]


def _slice(prediction: Prediction, start: int, end: int) -> Prediction:
    return Prediction(
        labels=None if prediction.labels is None else prediction.labels[start:end],
        probabilities=None if prediction.probabilities is None else prediction.probabilities[start:end],
        values=None if prediction.values is None else prediction.values[start:end],
    )


def _agreement(primary: Prediction, shadow: Prediction) -> tuple[int, int]:
    """Rows on which the shadow agrees with the primary, and rows compared."""
    if primary.labels is not None and shadow.labels is not None and len(primary.labels) == len(shadow.labels):
        return int(np.sum(primary.labels == shadow.labels)), len(primary.labels)
    if primary.values is not None and shadow.values is not None and len(primary.values) == len(shadow.values):
        close = np.isclose(primary.values, shadow.values, rtol=1e-6, atol=1e-9)
        return int(np.sum(close)), len(primary.values)
    return 0, 0
