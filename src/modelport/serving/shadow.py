"""Shadow traffic (docs/releases.md): copies of answered requests scored on the shadow version, off the
request path, in bounded memory.

The data plane offers a request after its primary answer is ready; the copy waits in a per-worker queue
of ``capacity`` requests (a full queue drops the copy and counts it — never blocks, never delays the
answer). A background task wakes every ``tick`` seconds, takes everything queued and scores it as one
merged batch on the shadow version: mirroring costs one vectorised call per tick, not one per request.
When the shadow has the primary's features, the columns the primary already validated are reused:
they are appended to per-group column lists at once, so nothing per request outlives the request but
numpy arrays, which the garbage collector does not track (holding a few objects per copy for 50 ms
tripled the collections and caused 75 ms full collections — docs/performance.md). Each
copy's answer is compared with the primary's (same label for classifiers, equal within 1e-6 relative
for regressors), counted per release (requests, errors, the group's scoring time, predicted classes,
agreements) and, when the model logs predictions, logged under the shadow's version with the request's
id — so feedback labels score the shadow too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import numpy as np

from modelport.errors import ModelportError
from modelport.releases.policy import Release
from modelport.releases.stats import ReleaseCounters
from modelport.runtimes.base import Prediction
from modelport.serving.tensors import Tensor, batch_from_tensors
from modelport.signature import Batch, Signature

if TYPE_CHECKING:
    from modelport.registry.service import LoadedVersion
    from modelport.serving.dataplane import DataPlane

__all__ = ["ShadowMirror"]

log = logging.getLogger("modelport.serving")


class _Group:
    """The copies of one tick for one release and primary signature, as columns. ``inputs`` holds
    each copy's request tensors only when the shadow's columns differ from the primary's."""

    __slots__ = (
        "columns",
        "inputs",
        "key_ids",
        "labels",
        "model",
        "release",
        "request_ids",
        "rows",
        "signature",
        "values",
    )

    def __init__(self, model: str, release: Release, signature: Signature, keep_inputs: bool) -> None:
        self.model = model
        self.release = release
        self.signature = signature
        self.columns: dict[str, list[np.ndarray]] = {name: [] for name in signature.names}
        self.labels: list[np.ndarray] = []
        self.values: list[np.ndarray] = []
        self.rows: list[int] = []
        self.request_ids: list[str] = []
        self.key_ids: list[str] = []
        self.inputs: list[list[Tensor]] | None = [] if keep_inputs else None


class ShadowMirror:
    def __init__(
        self, plane: DataPlane, counters: ReleaseCounters, *, capacity: int = 1024, tick: float = 0.05
    ) -> None:
        self.plane = plane
        self.counters = counters
        self.capacity = capacity
        self.tick = tick
        self.dropped = 0
        self._groups: dict[tuple[str, int, str, int], _Group] = {}
        self._queued = 0
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._same: dict[tuple[int, str, int], bool] = {}

    def offer(
        self,
        model: str,
        release: Release,
        inputs: list[Tensor],
        batch: Batch,
        signature: Signature,
        rows: int,
        primary: Prediction,
        request_id: str,
        key_id: str,
    ) -> None:
        """Queue a copy of an answered request (never blocks; a full queue drops and counts)."""
        if self._queued >= self.capacity:
            self.dropped += 1
            self.counters.dropped(release.release_id)
            return
        shadow = release.shadow
        assert shadow is not None
        key = (model, shadow, release.release_id, id(signature))
        group = self._groups.get(key)
        if group is None:
            same = self._same_as_shadow(signature, model, shadow)
            group = self._groups[key] = _Group(model, release, signature, keep_inputs=not same)
        for name, column in group.columns.items():
            column.append(batch[name])
        if primary.labels is not None:
            group.labels.append(primary.labels)
        if primary.values is not None:
            group.values.append(primary.values)
        group.rows.append(rows)
        group.request_ids.append(request_id)
        group.key_ids.append(key_id)
        if group.inputs is not None:
            group.inputs.append(inputs)
        self._queued += 1
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())
        elif self._wake is not None and not self._wake.is_set():
            self._wake.set()

    def _same_as_shadow(self, signature: Signature, model: str, shadow: int) -> bool:
        """Whether the primary's converted columns suit the shadow (cached; False until the shadow is
        loaded, so the first copies keep their tensors)."""
        key = (id(signature), model, shadow)
        same = self._same.get(key)
        if same is None:
            if not self.plane.pool.is_loaded(model, shadow):
                return False
            try:
                loaded = self.plane.pool.get(model, shadow)
            except ModelportError:
                return False
            if len(self._same) > 256:
                self._same.clear()
            same = self._same[key] = _same_columns(signature, loaded.signature)
        return same

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            if not self._queued:
                self._wake.clear()
                await self._wake.wait()
            await asyncio.sleep(self.tick)  # let copies gather: one batch per tick
            groups, self._groups, self._queued = self._groups, {}, 0
            for group in groups.values():
                try:
                    await self._score(group)
                except Exception as exc:  # the shadow must never take the worker down
                    log.warning("shadow scoring failed (%s)", type(exc).__name__)
                    self.counters.shadow(group.release.release_id, len(group.rows), 0.0, error=True)

    async def _score(self, group: _Group) -> None:
        """Score a group as one batch, then compare, count and log."""
        plane = self.plane
        release_id = group.release.release_id
        number = group.release.shadow
        assert number is not None
        started = time.perf_counter()
        try:
            if plane.pool.is_loaded(group.model, number):
                loaded = plane.pool.get(group.model, number)
            else:
                loaded = await asyncio.to_thread(plane.pool.get, group.model, number)
        except ModelportError:
            self.counters.shadow(release_id, len(group.rows), time.perf_counter() - started, error=True)
            return
        keep, merged = self._merged(group, loaded)
        failed = len(group.rows) - len(keep)
        result = None
        if keep:
            try:
                # On the event loop, like the primary's batches: one call of ~0.1-1 ms per tick. In a
                # thread it cost the primary more — the runtime wrapper's Python work held the GIL
                # for up to a switch interval (5 ms) while requests waited (docs/performance.md).
                result = loaded.predict_batch(merged)
            except Exception:
                failed, keep = len(group.rows), []
        seconds = time.perf_counter() - started
        if keep and result is not None:
            primary = Prediction(labels=_joined(group.labels, keep), values=_joined(group.values, keep))
            agreed, compared = _agreement(primary, result)
            self.counters.shadow(
                release_id,
                len(keep),
                seconds,
                error=False,
                compared=compared,
                agreed=agreed,
                labels=result.labels,
            )
            if plane.predictions is not None and group.model in plane.pool.log_policies:
                self._log(group, keep, merged, result, number, seconds)
        if failed:
            self.counters.shadow(release_id, failed, seconds, error=True)

    def _merged(self, group: _Group, loaded: LoadedVersion) -> tuple[list[int], Batch]:
        """The copies that can be scored (indices) and their rows as one batch."""
        if group.inputs is None or _same_columns(group.signature, loaded.signature):
            merged = {name: np.concatenate(parts) for name, parts in group.columns.items() if parts}
            return list(range(len(group.rows))), merged
        keep: list[int] = []
        batches: list[Batch] = []
        for index, inputs in enumerate(group.inputs):
            try:
                batch, _, _ = batch_from_tensors(inputs, loaded.signature)
            except ModelportError:
                continue  # the shadow's signature refuses what the primary accepted: a shadow error
            keep.append(index)
            batches.append(batch)
        if not batches:
            return [], {}
        return keep, {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}

    def _log(
        self, group: _Group, keep: list[int], merged: Batch, result: Prediction, number: int, seconds: float
    ) -> None:
        plane = self.plane
        assert plane.predictions is not None
        policy = plane.log_policy(group.model)
        offset = 0
        for index in keep:
            rows = group.rows[index]
            part = _slice(result, offset, offset + rows)
            batch = {name: column[offset : offset + rows] for name, column in merged.items()}
            offset += rows
            plane.predictions.offer(
                policy,
                group.model,
                number,
                batch,
                part,
                request_id=group.request_ids[index],
                key_id=group.key_ids[index],
                latency_ms=seconds * 1000,
                flags={},
            )


def _same_columns(a: Signature, b: Signature) -> bool:
    """Whether columns converted for ``a`` are what ``b`` would convert (names, types, categories;
    value ranges only decide flags)."""
    return a is b or [(f.name, f.dtype, f.categories) for f in a.features] == [
        (f.name, f.dtype, f.categories) for f in b.features
    ]


def _joined(parts: list[np.ndarray], keep: list[int]) -> np.ndarray | None:
    if not parts or len(parts) < len(keep):
        return None
    return np.concatenate([parts[i] for i in keep])


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
