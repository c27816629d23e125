"""Where a runtime call runs, and how long it may take: one request can cost a worker at most its timeout.

A model file is hostile until proven otherwise, and some hostility only shows at predict time — an
ONNX ``Loop`` whose trip count comes from the input, a tree that was crafted to spin. So every runtime
call of the serving path goes through a :class:`VersionScoring`, which picks one of three places:

- **Inline, under a watchdog** (ONNX, small batches). Converted tabular models answer in microseconds,
  far below the cost of handing work to a thread, so the hot path stays on the event loop. The call
  gets its own onnxruntime ``RunOptions``; a :class:`Watchdog` thread sets ``terminate`` on it once it
  has run longer than ``inline_seconds`` (0.1 s), so the loop — and with it the probes and every other
  model of the worker — is never held longer than that. A call stopped this way is not failed: its
  batch is run again on the scoring thread, and that version's later large calls go there directly.
- **On a scoring thread** (ONNX, batches expected to take longer than half the inline budget, and
  versions that overran it). onnxruntime releases the GIL, so the loop keeps answering; at the
  deadline ``terminate`` is set and the call ends within milliseconds (onnxruntime checks the flag
  between kernels and loop iterations).
- **In a scoring process** (every runtime that cannot be stopped from outside: scikit-learn through
  skops, XGBoost, LightGBM, anything that is not ONNX). Its batches go over pipes to a child process
  of the worker (:mod:`modelport.serving.isolated`); at the deadline the child is killed and a new
  one started for the next call.

A call that reaches its deadline answers :class:`~modelport.errors.ScoringTimeout` (504). After
``hang_limit`` such calls within ``hang_window`` seconds the version is marked failing: its requests
answer :class:`~modelport.errors.VersionFailing` (503) at once for ``failing_seconds``, and the reason
shows in the repository index, instead of spending a timeout each.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from modelport.errors import ModelportError, ScoringTimeout, VersionFailing
from modelport.registry.service import LoadedVersion
from modelport.runtimes.base import Prediction
from modelport.signature import Batch

# The most rows one call may score on the event loop (see VersionScoring.inline).
INLINE_ROWS = 4096

__all__ = [
    "INLINE_ROWS",
    "Hangs",
    "ScoringLimits",
    "ScoringThreads",
    "VersionScoring",
    "Watchdog",
    "cancellable",
    "overran",
]

_GRACE = 2.0  # seconds a terminated thread call gets to come back before it counts as stuck


@dataclass(frozen=True, slots=True)
class ScoringLimits:
    timeout: float = 30.0  # seconds one runtime call may take, end to end
    inline_seconds: float = 0.1  # longest an inline call may hold the event loop
    hang_limit: int = 3  # deadline misses within hang_window that mark a version failing
    hang_window: float = 600.0
    failing_seconds: float = 300.0


def cancellable(loaded: LoadedVersion) -> bool:
    """Whether the version's runtime can be stopped from outside (onnxruntime's ``terminate``)."""
    return bool(getattr(loaded.runtime, "cancellable", False))


class Watchdog:
    """One thread per process that stops inline runtime calls running past their budget.

    It polls every 10 ms instead of being woken per call: arming is one attribute store, so the hot
    path pays no lock, no system call and no thread switch."""

    def __init__(self, interval: float = 0.01) -> None:
        self._interval = interval
        self._armed: tuple[Any, float] | None = None
        self.fired = 0
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def arm(self, options: Any, budget: float) -> None:
        if self._thread is None:
            self._start()
        self._armed = (options, time.monotonic() + budget)

    def disarm(self) -> None:
        self._armed = None

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="modelport-watchdog", daemon=True)
                self._thread.start()

    def _watch(self) -> None:
        while True:
            time.sleep(self._interval)
            armed = self._armed
            if armed is not None and time.monotonic() > armed[1] and not armed[0].terminate:
                armed[0].terminate = True  # only this call's options: a later call has its own
                self.fired += 1


WATCHDOG = Watchdog()


@dataclass
class Hangs:
    """Deadline misses per version, and the versions marked failing because of them."""

    limits: ScoringLimits
    on_failing: Callable[[str, int, str], None] | None = None
    _misses: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    _failing: dict[tuple[str, int], tuple[float, str]] = field(default_factory=dict)

    def check(self, model: str, number: int) -> None:
        if not self._failing:  # the hot path: nothing is failing
            return
        entry = self._failing.get((model, number))
        if entry is None:
            return
        until, reason = entry
        if time.monotonic() >= until:
            del self._failing[(model, number)]  # retried: one more miss marks it again
            self._misses[(model, number)] = self._misses.get((model, number), [])[
                -(self.limits.hang_limit - 1) :
            ]
            return
        raise VersionFailing(reason)

    def missed(self, model: str, number: int) -> None:
        now = time.monotonic()
        recent = [t for t in self._misses.get((model, number), []) if now - t < self.limits.hang_window]
        recent.append(now)
        self._misses[(model, number)] = recent
        if len(recent) >= self.limits.hang_limit:
            reason = (
                f"{model}@{number} is failing: it did not answer within {self.limits.timeout:g} s "
                f"{len(recent)} times; it is tried again in {self.limits.failing_seconds:g} s"
            )
            self._failing[(model, number)] = (now + self.limits.failing_seconds, reason)
            if self.on_failing is not None:
                self.on_failing(model, number, reason)


class ScoringThreads:
    """The worker's scoring threads. A call that ignores ``terminate`` past its grace keeps its thread;
    the pool is then replaced so later calls get fresh threads, and the stuck ones are counted."""

    def __init__(self, threads: int = 2) -> None:
        self._threads = threads
        self._executor: ThreadPoolExecutor | None = None
        self.stuck = 0

    def get(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix="modelport-scoring")
        return self._executor

    def replace(self) -> None:
        executor, self._executor = self._executor, None
        self.stuck += 1
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


class _Overran(Exception):
    """An inline call ran past the inline budget and was stopped: run it again off the loop."""


class VersionScoring:
    """How one loaded version's runtime calls are run (see the module docstring)."""

    def __init__(
        self,
        loaded: LoadedVersion,
        limits: ScoringLimits,
        hangs: Hangs,
        threads: ScoringThreads,
        process: Callable[[], Any] | None = None,
        watchdog: Watchdog = WATCHDOG,
    ) -> None:
        self.loaded = loaded
        self.model = loaded.version.model
        self.number = loaded.version.number
        self.limits = limits
        self.hangs = hangs
        self._threads = threads
        self._process = process
        self._watchdog = watchdog
        self.isolated = not cancellable(loaded) and process is not None
        self._ns_per_row = 0.0  # learned from inline calls (EWMA), to send large batches off the loop
        self._half_budget_ns = limits.inline_seconds * 1e9 / 2
        self.offloaded = False  # an inline call overran: large calls go to the thread from now on

    def check(self) -> None:
        self.hangs.check(self.model, self.number)

    def inline(self, rows: int) -> bool:
        """Whether a call of ``rows`` rows may run on the event loop: one row always (the watchdog
        bounds it), more while their expected time is within half the inline budget — and never more
        than ``INLINE_ROWS``: the time per row is learnt from small calls, and a runtime stops only
        between its graph's nodes, so one large node over a huge batch would outrun the watchdog."""
        if self.isolated:
            return False
        return rows == 1 or (
            not self.offloaded and rows <= INLINE_ROWS and rows * self._ns_per_row < self._half_budget_ns
        )

    def run_inline(self, batch: Batch, rows: int) -> Prediction:
        options = _run_options()
        started = time.perf_counter_ns()
        self._watchdog.arm(options, self.limits.inline_seconds)
        try:
            prediction = self.loaded.predict_batch(batch, options)
        except ModelportError:
            if options.terminate:
                self.offloaded = True
                raise _Overran from None
            raise
        finally:
            self._watchdog.disarm()
        elapsed = time.perf_counter_ns() - started
        per_row = elapsed / max(rows, 1)
        self._ns_per_row = per_row if self._ns_per_row == 0 else 0.8 * self._ns_per_row + 0.2 * per_row
        return prediction

    async def run_off_loop(self, batch: Batch, rows: int) -> Prediction:
        self.check()
        if self.isolated:
            assert self._process is not None
            try:
                return await self._process().score(self.loaded, batch, self.limits.timeout)  # type: ignore[no-any-return]
            except ScoringTimeout:
                self.hangs.missed(self.model, self.number)
                raise
        return await self._run_thread(batch)

    async def _run_thread(self, batch: Batch) -> Prediction:
        options = _run_options()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._threads.get(), self.loaded.predict_batch, batch, options)
        stop = loop.call_later(self.limits.timeout, setattr, options, "terminate", True)
        try:
            # shield: a cancelled request must not abandon the call's result; the call itself is
            # stopped by ``terminate`` at the deadline, not by cancelling the waiter
            return await asyncio.wait_for(asyncio.shield(future), self.limits.timeout + _GRACE)
        except TimeoutError:  # not even ``terminate`` brought the call back: its thread is lost
            options.terminate = True
            self._threads.replace()
            self.hangs.missed(self.model, self.number)
            raise ScoringTimeout(self._late()) from None
        except ModelportError:
            if options.terminate:
                self.hangs.missed(self.model, self.number)
                raise ScoringTimeout(self._late()) from None
            raise
        finally:
            stop.cancel()

    def _late(self) -> str:
        return f"{self.model}@{self.number} did not answer within {self.limits.timeout:g} s"


_RUN_OPTIONS: Any = None


def _run_options() -> Any:
    """Fresh onnxruntime run options for one call (a stopped call's ``terminate`` stays set, so they
    are never reused). The class is looked up once: onnxruntime is imported only where ONNX serves."""
    global _RUN_OPTIONS
    if _RUN_OPTIONS is None:
        from onnxruntime import RunOptions

        _RUN_OPTIONS = RunOptions
    options = _RUN_OPTIONS()
    options.log_severity_level = 4  # a stopped call is expected here, not an error to log
    return options


def overran(exc: BaseException) -> bool:
    return isinstance(exc, _Overran)
