"""Shadow traffic (docs/releases.md): copies of answered requests scored on the shadow version, off the
request path, in bounded memory.

The data plane offers a request after its primary answer is ready; the copy waits in a per-worker queue
of ``capacity`` requests (a full queue drops the copy and counts it — never blocks, never delays the
answer). A background task wakes every ``tick`` seconds, takes everything queued and submits it to the
shadow version's batcher at once, so the copies are scored as one batch: mirroring costs one vectorised
call per tick, not one per request. Each copy's answer is compared with the primary's (same label for
classifiers, |difference| ≤ 1e-6 relative for regressors), counted per release (requests, errors,
latency of the group, predicted classes, agreements) and, when the model logs predictions, logged under
the shadow's version with the request's id — so feedback labels score the shadow too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from modelport.errors import ModelportError
from modelport.releases.policy import Release
from modelport.releases.stats import ReleaseCounters
from modelport.runtimes.base import Prediction
from modelport.serving.tensors import Tensor, batch_from_tensors

if TYPE_CHECKING:
    from modelport.serving.dataplane import DataPlane

__all__ = ["ShadowMirror"]

log = logging.getLogger("modelport.serving")


@dataclass(slots=True)
class _Copy:
    model: str
    release: Release
    inputs: list[Tensor]
    primary: Prediction
    request_id: str
    key_id: str


class ShadowMirror:
    def __init__(
        self, plane: DataPlane, counters: ReleaseCounters, *, capacity: int = 1024, tick: float = 0.05
    ):
        self.plane = plane
        self.counters = counters
        self.capacity = capacity
        self.tick = tick
        self.dropped = 0
        self._queue: deque[_Copy] = deque()
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None

    def offer(
        self,
        model: str,
        release: Release,
        inputs: list[Tensor],
        primary: Prediction,
        request_id: str,
        key_id: str,
    ) -> None:
        if len(self._queue) >= self.capacity:
            self.dropped += 1
            self.counters.dropped(release.release_id)
            return
        self._queue.append(_Copy(model, release, inputs, primary, request_id, key_id))
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())
        elif self._wake is not None:
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
            groups: dict[tuple[str, int, str], list[_Copy]] = {}
            for copy in copies:
                assert copy.release.shadow is not None
                groups.setdefault((copy.model, copy.release.shadow, copy.release.release_id), []).append(copy)
            for (model, number, release_id), group in groups.items():
                try:
                    await self._score(model, number, release_id, group)
                except Exception as exc:  # the shadow must never take the worker down
                    log.warning("shadow scoring failed (%s)", type(exc).__name__)
                    self.counters.shadow(release_id, len(group), 0.0, error=True)

    async def _score(self, model: str, number: int, release_id: str, group: list[_Copy]) -> None:
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
        batcher = plane.batcher_for((model, number), loaded)
        submitted = []
        failed = 0
        for copy in group:
            try:
                batch, rows, _ = batch_from_tensors(copy.inputs, loaded.signature)
            except ModelportError:
                failed += 1  # the shadow's signature refuses what the primary accepted
                continue
            submitted.append((copy, batch, rows))
        results = await asyncio.gather(
            *(batcher.submit(batch, rows) for _, batch, rows in submitted), return_exceptions=True
        )
        seconds = time.perf_counter() - started
        compared = agreed = 0
        labels: list[Any] = []
        for (copy, batch, _), result in zip(submitted, results, strict=True):
            if isinstance(result, BaseException):
                failed += 1
                continue
            same, total = _agreement(copy.primary, result)
            compared += total
            agreed += same
            if result.labels is not None:
                labels.extend(result.labels.tolist())
            if plane.predictions is not None and model in plane.pool.log_policies:
                plane.predictions.offer(
                    plane.log_policy(model),
                    model,
                    number,
                    batch,
                    result,
                    request_id=copy.request_id,
                    key_id=copy.key_id,
                    latency_ms=seconds * 1000,
                    flags={},
                )
        ok = len(group) - failed
        if ok:
            self.counters.shadow(
                release_id, ok, seconds, error=False, compared=compared, agreed=agreed, labels=labels
            )
        if failed:
            self.counters.shadow(release_id, failed, seconds, error=True)


def _agreement(primary: Prediction, shadow: Prediction) -> tuple[int, int]:
    """Rows on which the shadow agrees with the primary, and rows compared."""
    if primary.labels is not None and shadow.labels is not None and len(primary.labels) == len(shadow.labels):
        return int(np.sum(primary.labels == shadow.labels)), len(primary.labels)
    if primary.values is not None and shadow.values is not None and len(primary.values) == len(shadow.values):
        close = np.isclose(primary.values, shadow.values, rtol=1e-6, atol=1e-9)
        return int(np.sum(close)), len(primary.values)
    return 0, 0
