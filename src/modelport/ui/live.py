"""Live numbers of each model for the console's Models page: requests per second, error rate and p99
latency over the last minute, and the drift and live accuracy of the monitor's latest evaluation.

**Traffic** comes from the Prometheus metrics the server already keeps (monitoring/metrics.py
:func:`~modelport.monitoring.metrics.request_families`: every worker's in multi-process mode), read as
prometheus-client ``Metric`` objects, never as exposition text. Counters only grow, so a rate needs two
readings: :class:`LiveNumbers` keeps a short ring of :class:`Snapshot` — per model the requests, the
errors (an outcome other than ``ok``, metrics.py ``outcome_of``) and the latency bucket counts — taken
when the console asks and at most every ``every`` seconds, and compares the newest with the newest one
at least ``window`` seconds older (or the oldest, while the ring is younger). Before a second reading
exists the numbers are those since the server started, and the page says so. p99 comes from the bucket
counts' differences as Prometheus' ``histogram_quantile`` estimates it (:func:`quantile`).

**Drift and accuracy** come from the monitor's latest evaluation (monitoring/monitor.py
``Monitor.latest_samples``: one ``stat`` per page, the file read when it changed), summarised once per
evaluation (:func:`health`).

Cost at 1,000 models: only series that saw traffic exist; a snapshot reads them once per ``every``
seconds however many people watch, and a page then costs a dictionary look-up and a few numbers per row.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Metric

from modelport.monitoring.metrics import outcome_of, request_families

__all__ = [
    "Cells",
    "Counts",
    "Health",
    "LiveNumbers",
    "Reading",
    "Snapshot",
    "Traffic",
    "cells",
    "health",
    "quantile",
    "snapshot",
    "traffic",
]

WINDOW = 60.0  # seconds of traffic the Models page summarises
EVERY = 2.0  # seconds between two readings of the metrics, at most
_OK = outcome_of(200)
DASH = "—"


@dataclass(frozen=True, slots=True)
class Counts:
    """One model's cumulative counts at a snapshot, summed over its versions, aliases and protocols."""

    requests: float
    errors: float
    buckets: tuple[tuple[float, float], ...]  # (upper bound, cumulative count), ascending, +Inf last


@dataclass(frozen=True, slots=True)
class Snapshot:
    at: float  # time.monotonic()
    models: Mapping[str, Counts]


@dataclass(frozen=True, slots=True)
class Traffic:
    """One model's traffic over a window."""

    requests: float
    errors: float
    seconds: float
    p99: float | None  # seconds; None without requests

    @property
    def rate(self) -> float | None:
        return self.requests / self.seconds if self.seconds > 0 else None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests > 0 else None


@dataclass(frozen=True, slots=True)
class Health:
    """One model's state in the monitor's latest evaluation."""

    rows: float  # logged rows in the drift window, over its versions
    features: int  # features with a drift score, over the versions with rows
    drifting: int  # of them, at or over the threshold
    live_accuracy: float | None  # of the version with the most labelled rows
    reference_accuracy: float | None  # of that version (without labels: of the one with most rows)
    labelled: float


@dataclass(frozen=True, slots=True)
class Cells:
    """What a row of the Models page shows (text), with a longer description for ``title``."""

    rate: str
    p99: str
    errors: str
    errors_title: str
    drift: str
    accuracy: str


# -- the arithmetic ------------------------------------------------------------------------------------


def quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of observations counted in cumulative ``buckets`` (upper bound, count), as
    Prometheus' ``histogram_quantile``: find the bucket holding rank ``q × total`` and interpolate
    linearly inside it (from 0 for the first bucket); a rank in the ``+Inf`` bucket gives the highest
    finite bound. None when nothing was counted."""
    if not buckets or not math.isinf(buckets[-1][0]):
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for index, (bound, count) in enumerate(buckets):
        if count >= rank:
            if math.isinf(bound):
                return buckets[index - 1][0] if index > 0 else None
            if index == 0 and bound <= 0:
                return bound
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return None


def snapshot(families: Iterable[Metric], at: float) -> Snapshot:
    """Per-model counts from the request counter and the latency histogram (``model=""`` — requests
    for no registered model — is left out)."""
    requests: dict[str, float] = {}
    errors: dict[str, float] = {}
    buckets: dict[str, dict[float, float]] = {}
    for family in families:
        for sample in family.samples:
            model = sample.labels.get("model", "")
            if not model:
                continue
            if sample.name == "modelport_requests_total":
                requests[model] = requests.get(model, 0.0) + sample.value
                if sample.labels.get("outcome") != _OK:
                    errors[model] = errors.get(model, 0.0) + sample.value
            elif sample.name == "modelport_request_duration_seconds_bucket":
                bound = float(sample.labels["le"])
                counts = buckets.setdefault(model, {})
                counts[bound] = counts.get(bound, 0.0) + sample.value
    models = {
        name: Counts(total, errors.get(name, 0.0), tuple(sorted(buckets.get(name, {}).items())))
        for name, total in requests.items()
    }
    return Snapshot(at, models)


def traffic(new: Counts | None, old: Counts | None, seconds: float) -> Traffic:
    """The traffic between two snapshots of one model. A counter lower than before means the counts
    restarted (a new metrics directory): the new counts are all there is, as Prometheus' ``rate``
    treats a reset."""
    if new is None:
        return Traffic(0.0, 0.0, seconds, None)
    if old is None or new.requests < old.requests:
        requests, errors, buckets = new.requests, new.errors, new.buckets
    else:
        before = dict(old.buckets)
        requests, errors = new.requests - old.requests, max(0.0, new.errors - old.errors)
        buckets = tuple((bound, max(0.0, count - before.get(bound, 0.0))) for bound, count in new.buckets)
    return Traffic(requests, errors, seconds, quantile(0.99, buckets) if requests > 0 else None)


def health(samples: Iterable[Sequence[Any]]) -> dict[str, Health]:
    """Each monitored model's state from the monitor's samples ``[name, labels, value]``: features
    drifting in the versions that had rows in the latest drift window, and the live accuracy of the
    version with the most labelled predictions against its reference accuracy."""
    monitored: set[str] = set()
    rows: dict[str, dict[str, float]] = {}
    drift: dict[tuple[str, str], dict[str, bool]] = {}
    live: dict[str, dict[str, float]] = {}
    labelled: dict[str, dict[str, float]] = {}
    reference: dict[str, dict[str, float]] = {}
    for name, labels, value in samples:
        model = labels.get("model") if isinstance(labels, dict) else None
        if not model:
            continue
        version = str(labels.get("version", ""))
        if name == "modelport_drift_psi_threshold":
            monitored.add(model)
        elif name == "modelport_drift_window_rows":
            rows.setdefault(model, {})[version] = float(value)
        elif name == "modelport_feature_drifting":
            drift.setdefault((model, version), {})[str(labels.get("feature"))] = float(value) >= 1.0
        elif name == "modelport_live_accuracy":
            live.setdefault(model, {})[version] = float(value)
        elif name == "modelport_live_labelled_rows":
            labelled.setdefault(model, {})[version] = float(value)
        elif name == "modelport_reference_accuracy":
            reference.setdefault(model, {})[version] = float(value)
    found: dict[str, Health] = {}
    for model in monitored | set(rows) | set(live):
        with_rows = [v for v, n in rows.get(model, {}).items() if n > 0]
        features: dict[str, bool] = {}
        for version in with_rows:
            for feature, drifting in drift.get((model, version), {}).items():
                features[feature] = features.get(feature, False) or drifting
        accuracies = live.get(model, {})
        counts = labelled.get(model, {})
        references = reference.get(model, {})
        served = rows.get(model, {})
        if accuracies:  # the version with the most labelled predictions
            chosen: str | None = max(accuracies, key=lambda v: (counts.get(v, 0.0), _number(v)))
        elif references:  # no labels yet: the reference of the version that served the most rows
            chosen = max(references, key=lambda v: (served.get(v, 0.0), _number(v)))
        else:
            chosen = None
        found[model] = Health(
            rows=sum(rows.get(model, {}).values()),
            features=len(features),
            drifting=sum(features.values()),
            live_accuracy=accuracies.get(chosen) if chosen is not None else None,
            reference_accuracy=references.get(chosen) if chosen is not None else None,
            labelled=counts.get(chosen, 0.0) if chosen is not None else 0.0,
        )
    return found


def _number(version: str) -> int:
    return int(version) if version.isdigit() else -1


# -- what a row shows ------------------------------------------------------------------------------------


def _rate_text(rate: float | None) -> str:
    if rate is None:
        return DASH
    if rate == 0:
        return "0"
    return f"{rate:.0f}" if rate >= 100 else f"{rate:.1f}" if rate >= 10 else f"{rate:.2f}"


def _ms_text(seconds: float | None) -> str:
    if seconds is None:
        return DASH
    ms = seconds * 1000
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}"


def cells(found: Traffic | None, state: Health | None, *, monitored: bool) -> Cells:
    """The text of one row: ``found`` is None when metrics are off, ``monitored`` whether the server
    has a monitor at all (it has none when metrics are off)."""
    if found is None:
        rate = p99 = errors = DASH
        errors_title = "metrics are off on this server"
    else:
        rate, p99 = _rate_text(found.rate), _ms_text(found.p99)
        share = found.error_rate
        errors = DASH if share is None else f"{share * 100:.1f}"
        errors_title = f"{found.errors:.0f} of {found.requests:.0f} requests failed"
    if not monitored:
        drift = accuracy = DASH
    elif state is None:
        drift = accuracy = "not monitored"
    else:
        if state.rows <= 0:
            drift = "no recent rows"
        elif state.features == 0:
            drift = "too few rows"
        elif state.drifting == 0:
            drift = f"none of {state.features}"
        else:
            drift = f"{state.drifting} of {state.features} features"
        reference = "" if state.reference_accuracy is None else f" (ref {state.reference_accuracy:.3f})"
        if state.live_accuracy is None:
            accuracy = "no labels yet" + reference
        else:
            accuracy = f"{state.live_accuracy:.3f}{reference}"
    return Cells(rate, p99, errors, errors_title, drift, accuracy)


# -- the ring of snapshots -------------------------------------------------------------------------------


def _report(task: asyncio.Future[None]) -> None:
    """A snapshot that failed is logged (the page keeps the previous ones)."""
    if not task.cancelled() and task.exception() is not None:
        logging.getLogger("modelport.ui").warning(
            "the console's live numbers could not be read", exc_info=task.exception()
        )


def _process_age() -> float:
    """Seconds since this process started (Linux ``/proc``; 0 where there is none)."""
    try:
        with open("/proc/self/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as uptime:
            up = float(uptime.read().split()[0])
        return max(0.0, up - int(fields[19]) / os.sysconf("SC_CLK_TCK"))  # field 22: starttime
    except (OSError, ValueError, IndexError):
        return 0.0


@dataclass(frozen=True, slots=True)
class Reading:
    """Traffic of the models asked for, over ``seconds``; ``since_start`` before a second snapshot."""

    seconds: float
    since_start: bool
    models: Mapping[str, Traffic]

    @property
    def label(self) -> str:
        if self.since_start:
            return "since the server started"
        if self.seconds >= 120:
            return f"over the last {self.seconds / 60:.0f} min"
        return f"over the last {self.seconds:.0f} s"


class LiveNumbers:
    """A short ring of metric snapshots, and the traffic of each model over the last ``window``
    seconds (see the module text). Thread-safe: snapshots are taken in a thread."""

    def __init__(
        self,
        *,
        window: float = WINDOW,
        every: float = EVERY,
        source: Callable[[], Iterable[Metric]] = request_families,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.every = every
        self._source = source
        self._clock = clock
        self._started = clock() - _process_age()
        self._ring: deque[Snapshot] = deque()
        self._lock = threading.Lock()
        self._health: tuple[object, dict[str, Health]] = (None, {})
        self._cost = 0.0  # seconds the latest snapshot took
        self._task: asyncio.Future[None] | None = None

    def _gap(self) -> float:
        # prometheus-client builds a Sample object for every bucket of every series: ~0.3 s for 1,000
        # models with traffic (bench/console.py). Readings are spaced so they take at most a tenth of
        # a core, whatever the number of people watching.
        return max(self.every, 10 * self._cost)

    def due(self) -> bool:
        """Whether :meth:`sample` would take a snapshot now."""
        with self._lock:
            return not self._ring or self._clock() - self._ring[-1].at >= self._gap()

    def sample(self) -> None:
        """Take a snapshot unless the newest is too young; keep, of the older ones, only the newest
        that is at least ``window`` old (the base of the window) and those after it."""
        with self._lock:
            now = self._clock()
            if self._ring and now - self._ring[-1].at < self._gap():
                return
            started = time.perf_counter()
            self._ring.append(snapshot(self._source(), now))
            self._cost = time.perf_counter() - started
            while len(self._ring) >= 2 and now - self._ring[1].at >= self.window:
                self._ring.popleft()

    async def refresh(self) -> None:
        """Take a snapshot in a thread when one is due, without making the page wait for it (the page
        shows the latest one) — except the first two: until there are two, the numbers are only those
        since the server started."""
        if (self._task is not None and not self._task.done()) or not self.due():
            return
        self._task = asyncio.ensure_future(asyncio.to_thread(self.sample))
        self._task.add_done_callback(_report)
        if len(self._ring) < 2:
            await asyncio.shield(self._task)

    def reading(self, names: Iterable[str]) -> Reading:
        """The traffic of each of ``names`` between the base snapshot and the newest (take one with
        :meth:`sample` first); with one snapshot only, since the server started."""
        with self._lock:
            ring = list(self._ring)
        if not ring:
            return Reading(0.0, True, {})
        newest = ring[-1]
        if len(ring) == 1:
            base, seconds = None, newest.at - self._started
        else:
            base, seconds = ring[0], newest.at - ring[0].at
        old = base.models if base is not None else {}
        models = {name: traffic(newest.models.get(name), old.get(name), seconds) for name in names}
        return Reading(seconds, base is None, models)

    def health(self, samples: list[list[Any]]) -> dict[str, Health]:
        """:func:`health` of the monitor's samples, computed again only when they are another list
        (``Monitor.latest_samples`` returns the same list until the state file changes)."""
        source, found = self._health
        if source is not samples:
            found = health(samples)
            self._health = (samples, found)
        return found
