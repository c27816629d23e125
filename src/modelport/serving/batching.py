"""Adaptive micro-batching without a timer.

A request's rows join a per-version queue; the first request of an event-loop turn schedules a flush
with ``call_soon``, so every request parsed in the same turn — which under load is many, at no load is
one — is scored in one runtime call. With no concurrency a request waits for nothing but the next loop
iteration (microseconds); under a burst, batches grow by themselves up to ``max_rows``. If a merged
batch fails, its requests are retried one by one so one bad request cannot fail its neighbours.

Where each runtime call runs is decided by the version's :class:`~modelport.serving.scoring.VersionScoring`:
inline on the event loop under a watchdog (converted tabular models answer in microseconds, far below
the cost of handing work to a thread), on a scoring thread, or in the scoring process — so a runaway
model costs a request its timeout, never the worker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import numpy as np

from modelport.errors import ScoringTimeout, VersionFailing
from modelport.monitoring.tracing import Timeline
from modelport.runtimes.base import Prediction
from modelport.serving.scoring import VersionScoring, overran
from modelport.signature import Batch

__all__ = ["Batcher"]

Item = tuple[Batch, int, "asyncio.Future[Prediction]", int, Timeline | None]  # queued: perf_counter_ns
BatchObserver = Callable[[int, float], None]
"""Told of every runtime call: its rows, and how long its oldest request waited in the queue."""


class Batcher:
    def __init__(
        self,
        scoring: VersionScoring,
        max_rows: int = 256,
        observe: BatchObserver | None = None,
        *,
        timed: bool = False,
    ) -> None:
        self.scoring = scoring
        self._tasks: set[asyncio.Task[None]] = set()  # off-loop calls in progress (kept referenced)
        self._observe = observe
        self.timed = timed  # stamp traced requests' timelines with their runtime call (tracing on)
        self.max_rows = max_rows
        self._queue: list[Item] = []
        self._scheduled = False
        self.batches = 0
        self.rows = 0

    async def submit(self, batch: Batch, rows: int, timeline: Timeline | None = None) -> Prediction:
        self.scoring.check()  # a version resting after repeated hangs answers at once
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Prediction] = loop.create_future()
        self._queue.append((batch, rows, future, time.perf_counter_ns(), timeline))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        queue, self._queue = self._queue, []
        start = 0
        while start < len(queue):
            size, end = 0, start
            while end < len(queue) and (end == start or size + queue[end][1] <= self.max_rows):
                size += queue[end][1]
                end += 1
            self._run(queue[start:end])
            start = end

    def _run(self, items: list[Item]) -> None:
        live = [item for item in items if not item[2].done()]  # skip requests already cancelled
        if not live:
            return
        ran = time.perf_counter_ns()
        rows = sum(item[1] for item in live)
        if self._observe is not None:
            self._observe(rows, (ran - live[0][3]) / 1e9)
        if not self.scoring.inline(rows):
            self._off_loop(live)
            return
        if len(live) == 1:
            self._score_one(live[0], ran)
            return
        merged = _merge(live)
        try:
            prediction = self.scoring.run_inline(merged, rows)
        except Exception as exc:
            if overran(exc):
                self._off_loop(live)
                return
            for item in live:
                self._score_one(item, time.perf_counter_ns())
            return
        if self.timed:
            _stamp(live, ran)
        self._deliver(live, prediction)

    def _score_one(self, item: Item, ran: int) -> None:
        batch, rows, future, _queued, _timeline = item
        try:
            prediction = self.scoring.run_inline(batch, rows)
        except Exception as exc:
            if overran(exc):
                self._off_loop([item])
            else:
                future.set_exception(exc)
            return
        finally:
            if self.timed:
                _stamp((item,), ran)
        self.batches += 1
        self.rows += rows
        future.set_result(prediction)

    def _off_loop(self, items: list[Item]) -> None:
        task = asyncio.get_running_loop().create_task(self._run_off_loop(items))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_off_loop(self, items: list[Item]) -> None:
        """One call on the scoring thread or in the scoring process; a merged call that fails for a
        reason other than the deadline is retried one request at a time, as inline."""
        ran = time.perf_counter_ns()
        rows = sum(item[1] for item in items)
        try:
            prediction = await self.scoring.run_off_loop(_merge(items), rows)
        except (ScoringTimeout, VersionFailing) as exc:
            for item in items:
                if not item[2].done():
                    item[2].set_exception(exc)
            return
        except Exception as exc:
            if len(items) == 1:
                if not items[0][2].done():
                    items[0][2].set_exception(exc)
                return
            for item in items:
                await self._run_off_loop([item])
            return
        if self.timed:
            _stamp(items, ran)
        self._deliver(items, prediction)

    def _deliver(self, items: list[Item], prediction: Prediction) -> None:
        self.batches += 1
        self.rows += sum(item[1] for item in items)
        if len(items) == 1:
            if not items[0][2].done():
                items[0][2].set_result(prediction)
            return
        offset = 0
        for _batch, rows, future, _queued, _timeline in items:
            if not future.done():
                future.set_result(_slice(prediction, offset, offset + rows))
            offset += rows


def _merge(items: Sequence[Item]) -> Batch:
    if len(items) == 1:
        return items[0][0]
    names = list(items[0][0])
    return {name: np.concatenate([item[0][name] for item in items]) for name in names}


def _stamp(items: Sequence[Item], ran: int) -> None:
    """Tell the traced requests of one runtime call when they were queued, when the call ran and when
    it returned: their spans are made from these times later, so no tracing context enters here."""
    done = time.perf_counter_ns()
    rows = sum(item[1] for item in items)
    for _batch, _rows, _future, queued, timeline in items:
        if timeline is not None:
            timeline.queued, timeline.ran, timeline.done, timeline.batch_rows = queued, ran, done, rows


def _slice(prediction: Prediction, start: int, end: int) -> Prediction:
    return Prediction(
        labels=None if prediction.labels is None else prediction.labels[start:end],
        probabilities=None if prediction.probabilities is None else prediction.probabilities[start:end],
        values=None if prediction.values is None else prediction.values[start:end],
    )
