"""Prometheus metrics (prometheus-client), counted by every worker.

The hot path never touches prometheus-client: a request adds to plain dictionaries in
:data:`LOCAL` (a few hundred nanoseconds), and each worker folds them into the Prometheus metrics
four times a second and before it answers a scrape. In multi-process mode every update of a
prometheus-client value takes a lock and writes a memory-mapped file; doing that five times per
request cost a fifth of the throughput (docs/performance.md).

With several workers, `modelport serve` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory
before the workers start; each worker then writes its samples to memory-mapped files there and
``/metrics`` sums them (prometheus-client's multi-process mode). With one worker, the worker is the
`serve` process itself, which imported prometheus-client long before: its values live in memory, in
this module's own registry. prometheus-client picks where values live once, when it is first imported
(:data:`MULTIPROCESS`), and :func:`render` reads them from the same place — never from a directory the
process does not write to.

The gauges ``loaded``, ``loaded_bytes``, ``model_memory``, ``in_flight`` and ``resident`` are per
process and summed over the live workers (``livesum``); the supervisor of ``--workers N`` forgets a
dead worker's gauges (:func:`forget_dead`) and adds its own memory (:class:`SupervisorMemory`), so that
``modelport_process_resident_memory_bytes`` covers the whole server: the supervisor, every worker and
every process a worker started (the scoring process, the shadow scorer). The monitor is a thread of a
worker and is counted in it.

Label values are bounded: model and version are only ever those of registered versions (a request for
an unknown model is counted under ``model=""``), alias is the alias asked for (``""`` for a number,
``"default"`` for none) only when it exists, outcome is one of a fixed set. No request id, key id or
secret is ever a label.

A key scoped to some models reads a :func:`scoped` exposition: only the series of models it sees, plus
the server-wide ones that carry no ``model`` label (docs/security.md: a model's existence is not
revealed outside a key's patterns). Every other label naming something of a model — ``feature``,
``class`` — sits on series that also carry its ``model`` label, so filtering by ``model`` hides them too.
"""

from __future__ import annotations

import bisect
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Metric,
    disable_created_metrics,
    generate_latest,
    values,
)

__all__ = [
    "CONTENT_TYPE",
    "LOCAL",
    "METRICS",
    "MONITOR_GAUGES",
    "MULTIPROCESS",
    "LocalCounts",
    "Metrics",
    "SupervisorMemory",
    "alias_label",
    "disable",
    "exported_names",
    "forget_dead",
    "forget_process",
    "outcome_of",
    "render",
    "request_families",
    "scoped",
    "tree_resident_bytes",
]

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

# Whether this process keeps its values in prometheus-client's memory-mapped files (multi-process
# mode). prometheus-client decides when it is first imported, from PROMETHEUS_MULTIPROC_DIR at that
# moment; setting the variable later changes nothing for this process (but does for its children).
MULTIPROCESS = values.ValueClass is not values.MutexValue

_RESIDENT_HELP = (
    "Resident memory of the server's processes: every worker and the processes it started (scoring "
    "process, shadow scorer), plus the supervisor of --workers N (summed over live processes)."
)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)

OUTCOMES = {
    200: "ok",
    400: "invalid",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "not_found",
    409: "conflict",
    413: "too_large",
    415: "invalid",
    429: "limited",
    503: "unavailable",
    504: "timeout",
}


# Gauges computed from the prediction log and feedback by the monitor (monitoring/monitor.py), not
# counted per request: name -> (help, labels).
MONITOR_GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "modelport_feature_drift_psi": (
        "Population stability index of a feature over the latest window against the version's reference.",
        ("model", "version", "feature"),
    ),
    "modelport_feature_drift_ks": (
        "Kolmogorov-Smirnov statistic of a numeric feature over the latest window against the reference.",
        ("model", "version", "feature"),
    ),
    "modelport_feature_drifting": (
        "1 when the feature's PSI is at or over the drift threshold, else 0.",
        ("model", "version", "feature"),
    ),
    "modelport_prediction_drift_psi": (
        "Population stability index of the predicted labels (or values) against the reference.",
        ("model", "version"),
    ),
    "modelport_drift_psi_threshold": ("The PSI at or over which a feature counts as drifting.", ("model",)),
    "modelport_drift_window_rows": ("Logged rows in the latest drift window.", ("model", "version")),
    "modelport_live_accuracy": (
        "Share of labelled predictions that were right, over the latest accuracy window.",
        ("model", "version"),
    ),
    "modelport_live_log_loss": (
        "Log-loss of labelled predictions over the latest accuracy window.",
        ("model", "version"),
    ),
    "modelport_live_labelled_rows": (
        "Predictions with ground truth in the latest accuracy window.",
        ("model", "version"),
    ),
    "modelport_live_class_recall": (
        "Recall of one class over the latest accuracy window.",
        ("model", "version", "class"),
    ),
    "modelport_reference_accuracy": (
        "Accuracy of the version on its registration sample (when the sample had the target).",
        ("model", "version"),
    ),
    "modelport_monitor_last_run_timestamp_seconds": (
        "When the monitor last evaluated drift and accuracy.",
        (),
    ),
}


def exported_names() -> set[str]:
    """Every sample name /metrics can show (histograms with their _bucket/_sum/_count series)."""
    names = set(MONITOR_GAUGES)
    for family in Metrics(CollectorRegistry()).__dict__.values():
        described = family.describe()[0]
        kind = described.type
        base = described.name
        if kind == "counter":
            names.add(base + "_total")
        elif kind == "histogram":
            names |= {base + "_bucket", base + "_sum", base + "_count"}
        else:
            names.add(base)
    return names


def alias_label(routes: dict[str, int] | None, selector: str | None) -> str:
    """The alias label of a request: ``default`` when no version was named, the alias when it
    exists, and ``""`` for a version number or anything unknown (label values stay bounded)."""
    if selector is None:
        return "default"
    if selector.isdigit() or routes is None or selector not in routes:
        return ""
    return selector


def outcome_of(status: int) -> str:
    if status in OUTCOMES:
        return OUTCOMES[status]
    return "ok" if status < 400 else ("invalid" if status < 500 else "error")


class Metrics:
    """The metric families modelport exports (one set per process)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        kwargs: dict[str, Any] = {"registry": registry} if registry is not None else {}
        self.requests = Counter(
            "modelport_requests_total",
            "Requests answered, by model, version, alias, protocol and outcome.",
            ["model", "version", "alias", "protocol", "outcome"],
            **kwargs,
        )
        self.latency = Histogram(
            "modelport_request_duration_seconds",
            "Time from the request's arrival to its answer, inside the server.",
            ["model", "version", "protocol"],
            buckets=_LATENCY_BUCKETS,
            **kwargs,
        )
        self.rows = Counter(
            "modelport_rows_scored_total",
            "Rows scored, by model and version.",
            ["model", "version"],
            **kwargs,
        )
        self.batch_rows = Histogram(
            "modelport_batch_rows",
            "Rows per call into the runtime (after micro-batching).",
            ["model", "version"],
            buckets=_ROW_BUCKETS,
            **kwargs,
        )
        self.queue_wait = Histogram(
            "modelport_queue_wait_seconds",
            "Time a request waited in the micro-batcher before its batch ran.",
            ["model", "version"],
            buckets=_LATENCY_BUCKETS,
            **kwargs,
        )
        self.flags = Counter(
            "modelport_flagged_values_total",
            "Values outside what the model was trained on, by feature and kind (range, category, missing).",
            ["model", "version", "feature", "kind"],
            **kwargs,
        )
        self.load_seconds = Histogram(
            "modelport_model_load_seconds",
            "Time to load a version (digest check included) and warm it by replaying its golden cases.",
            ["model", "version"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            **kwargs,
        )
        self.load_failures = Counter(
            "modelport_model_load_failures_total",
            "Versions that failed to load or to reproduce their golden cases.",
            ["model", "version"],
            **kwargs,
        )
        self.prediction_log_dropped = Counter(
            "modelport_prediction_log_dropped_total",
            "Sampled predictions dropped because the log's queue was full (requests never wait for it).",
            ["model"],
            **kwargs,
        )
        self.loaded = Gauge(
            "modelport_loaded_models",
            "Versions loaded in memory (summed over live workers).",
            multiprocess_mode="livesum",
            **kwargs,
        )
        self.loaded_bytes = Gauge(
            "modelport_loaded_model_bytes",
            "Memory of the versions loaded, as measured when each was loaded (summed over live workers); "
            "what MODELPORT_MAX_LOADED_BYTES bounds in each worker.",
            multiprocess_mode="livesum",
            **kwargs,
        )
        self.model_memory = Gauge(
            "modelport_model_memory_bytes",
            "Memory one loaded version uses, measured when it was loaded (summed over the live workers "
            "that hold it; 0 or absent once evicted).",
            ["model", "version"],
            multiprocess_mode="livesum",
            **kwargs,
        )
        self.in_flight = Gauge(
            "modelport_requests_in_flight",
            "Inference requests being handled right now, every protocol (summed over live workers): "
            "a signal for autoscaling.",
            multiprocess_mode="livesum",
            **kwargs,
        )
        self.resident = Gauge(
            "modelport_process_resident_memory_bytes",
            _RESIDENT_HELP,
            multiprocess_mode="livesum",
            **kwargs,
        )

    def sample_memory(self) -> None:
        """Set ``resident`` to the memory of this process and of every process it started."""
        self.resident.set(tree_resident_bytes(os.getpid()))

    def forget_version(self, model: str, version: str) -> None:
        """Drop an evicted version's memory series. prometheus-client cannot remove a series in
        multi-process mode (it keeps every series it wrote in its files, and warns): there it reads 0."""
        self.model_memory.labels(model, version).set(0)
        if not MULTIPROCESS:
            self.model_memory.remove(model, version)


# Its own registry, not prometheus-client's default one, and no *_created series (multi-process mode
# has none): with one worker /metrics shows the same families as with several, and no process_* or
# python_* collectors of the default registry.
disable_created_metrics()  # type: ignore[no-untyped-call]
_REGISTRY = CollectorRegistry()
METRICS = Metrics(_REGISTRY)


class LocalCounts:
    """Per-request counts kept in plain dictionaries until :meth:`flush` (same thread: the event loop)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.enabled = True
        # Inference requests in the data plane now (DataPlane.infer adds and takes away): a plain
        # integer on the hot path, copied to the gauge at every flush and before every scrape.
        self.in_flight = 0
        self._requests: dict[tuple[str, str, str, str, str], int] = {}
        self._latency: dict[tuple[str, str, str], list[float]] = {}  # bucket counts…, sum
        self._rows: dict[tuple[str, str], int] = {}
        self._batches: dict[
            tuple[str, str], list[float]
        ] = {}  # row buckets…, rows sum, wait buckets…, wait sum

    def request(
        self, model: str, version: str, alias: str, protocol: str, outcome: str, seconds: float
    ) -> None:
        if not self.enabled:
            return
        key = (model, version, alias, protocol, outcome)
        self._requests[key] = self._requests.get(key, 0) + 1
        series = self._latency.get((model, version, protocol))
        if series is None:
            series = self._latency[(model, version, protocol)] = [0.0] * (len(_LATENCY_BUCKETS) + 2)
        series[bisect.bisect_left(_LATENCY_BUCKETS, seconds)] += 1
        series[-1] += seconds

    def rows(self, model: str, version: str, rows: int) -> None:
        if self.enabled:
            self._rows[(model, version)] = self._rows.get((model, version), 0) + rows

    def batch(self, model: str, version: str, rows: int, waited: float) -> None:
        if not self.enabled:
            return
        series = self._batches.get((model, version))
        if series is None:
            size = len(_ROW_BUCKETS) + 2 + len(_LATENCY_BUCKETS) + 2
            series = self._batches[(model, version)] = [0.0] * size
        series[bisect.bisect_left(_ROW_BUCKETS, rows)] += 1
        series[len(_ROW_BUCKETS) + 1] += rows
        offset = len(_ROW_BUCKETS) + 2
        series[offset + bisect.bisect_left(_LATENCY_BUCKETS, waited)] += 1
        series[-1] += waited

    def flush(self) -> None:
        """Fold the counts gathered since the last call into the Prometheus metrics."""
        requests, self._requests = self._requests, {}
        latency, self._latency = self._latency, {}
        rows, self._rows = self._rows, {}
        batches, self._batches = self._batches, {}
        m = self.metrics
        m.in_flight.set(self.in_flight)
        for request_labels, count in requests.items():
            m.requests.labels(*request_labels).inc(count)
        for latency_labels, series in latency.items():
            _add_histogram(m.latency.labels(*latency_labels), series)
        for version_labels, total in rows.items():
            m.rows.labels(*version_labels).inc(total)
        split = len(_ROW_BUCKETS) + 2
        for version_labels, series in batches.items():
            _add_histogram(m.batch_rows.labels(*version_labels), series[:split])
            _add_histogram(m.queue_wait.labels(*version_labels), series[split:])


def _add_histogram(child: Any, series: list[float]) -> None:
    """Add pre-bucketed observations: ``series`` holds one count per bucket (the last is +Inf… then
    past it) and the sum last. Uses the child's bucket values directly: prometheus-client has no call
    for adding many observations at once."""
    # prometheus-client has no call for adding many observations at once, and a collector of our own
    # would not be summed over workers in multi-process mode: its value objects are the one way.
    buckets = child._buckets  # noqa: SLF001
    for index, count in enumerate(series[:-1]):
        if count:
            buckets[min(index, len(buckets) - 1)].inc(count)
    if series[-1]:
        child._sum.inc(series[-1])  # noqa: SLF001


LOCAL = LocalCounts(METRICS)


class _Off:
    """Stands in for every metric when metrics are off: each call does nothing."""

    def labels(self, *args: Any, **kwargs: Any) -> _Off:
        return self

    def inc(self, amount: float = 1) -> None:
        return None

    def observe(self, amount: float) -> None:
        return None

    def set(self, value: float) -> None:
        return None

    def remove(self, *labels: str) -> None:
        return None


def disable() -> None:
    """Turn every metric into a no-op in this process (``MODELPORT_METRICS=false``; benchmarks; the
    scoring process and the shadow scorer, whose worker owns /metrics)."""
    off = _Off()
    for name in list(vars(METRICS)):
        setattr(METRICS, name, off)
    LOCAL.enabled = False
    if MULTIPROCESS:
        # The gauges without labels wrote a file of zeros when this module was imported: remove it,
        # or every scoring process ever started would leave one behind.
        forget_process(os.getpid())


def render() -> bytes:
    """The exposition text: every worker's samples in multi-process mode, else this process's.
    (The caller flushes :data:`LOCAL` first, on the thread that counts.) This worker's memory is
    sampled now; the other workers' are at most a second old (they sample it as they poll)."""
    METRICS.sample_memory()
    if MULTIPROCESS:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(_REGISTRY)


_REQUEST_FAMILIES = ("modelport_requests", "modelport_request_duration_seconds")


def request_families() -> list[Metric]:
    """The request counter and the latency histogram as prometheus-client ``Metric`` objects: every
    worker's in multi-process mode (their counter and histogram files merged, the gauges' unread),
    else this process's — for the console's live numbers (ui/live.py). Empty when metrics are off.
    (The caller flushes :data:`LOCAL` first, as for :func:`render`.)"""
    if not LOCAL.enabled:
        return []
    if MULTIPROCESS:
        from prometheus_client import multiprocess

        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not directory:
            return []
        files = [str(p) for kind in ("counter", "histogram") for p in Path(directory).glob(f"{kind}_*.db")]
        families = multiprocess.MultiProcessCollector.merge(files, accumulate=True)  # type: ignore[no-untyped-call]
    else:
        names = ["modelport_requests_total", "modelport_request_duration_seconds_bucket"]
        families = _REGISTRY.restricted_registry(names).collect()
    return [family for family in families if family.name in _REQUEST_FAMILIES]


# One label of a sample line, as prometheus-client and the monitor write it: name="value" with \\, \"
# and \n escaped inside the value.
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')
_UNESCAPE = re.compile(r"\\(.)")


def _model_label(line: str) -> str | None:
    """The ``model`` label's value of one sample line; ``None`` when it has none (or is unreadable)."""
    start = line.find("{")
    if start < 0:
        return None
    position = start + 1
    while True:
        found = _LABEL.match(line, position)
        if found is None:
            return None
        if found.group(1) == "model":
            return _UNESCAPE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), found.group(2))
        position = found.end()


def scoped(body: bytes, sees: Callable[[str], bool]) -> bytes:
    """The exposition ``body`` without the series of models ``sees`` rejects. ``# HELP``/``# TYPE`` lines
    and series without a ``model`` label (server-wide numbers) stay. A series whose labels cannot be read
    goes if ``model="`` appears in it at all: when in doubt, a model's name is not shown."""
    kept: list[str] = []
    for line in body.decode("utf-8").split("\n"):
        if line.startswith("#") or "{" not in line:
            kept.append(line)
            continue
        model = _model_label(line)
        if model is None:
            if 'model="' not in line:
                kept.append(line)
            continue
        if sees(model):
            kept.append(line)
    return "\n".join(kept).encode("utf-8")


def forget_process(pid: int) -> None:
    """Drop the per-process gauges of ``pid`` from the multi-process directory; its counters and
    histograms stay, as counts must."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def forget_dead(live: set[int]) -> None:
    """Drop the per-process gauges of every process not in ``live`` (workers that died, were replaced
    on SIGHUP or retired on SIGTTOU): ``livesum`` must sum live workers only."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return
    for path in Path(directory).glob("gauge_live*_*.db"):  # prometheus-client's gauge_MODE_PID.db
        pid = path.stem.rpartition("_")[2]
        if pid.isdigit() and int(pid) not in live:
            forget_process(int(pid))


class SupervisorMemory:
    """The supervisor's own share of ``modelport_process_resident_memory_bytes`` with ``--workers N``:
    itself and its children that are not workers (multiprocessing's resource tracker). Each worker
    counts its own subtree.

    The supervisor imported prometheus-client before ``modelport serve`` set the directory, so its
    metrics live in memory; this one value is written to the workers' directory instead, as a live
    gauge of the supervisor's pid."""

    def __init__(self) -> None:
        value_class = values.MultiProcessValue()  # type: ignore[no-untyped-call]
        name = "modelport_process_resident_memory_bytes"
        self._value = value_class("gauge", name, name, (), (), _RESIDENT_HELP, multiprocess_mode="livesum")

    def sample(self, workers: set[int]) -> None:
        self._value.set(tree_resident_bytes(os.getpid(), exclude=workers))


def tree_resident_bytes(pid: int, exclude: set[int] | None = None) -> int:
    """Resident bytes of ``pid`` and its descendants, skipping the subtrees of ``exclude`` (Linux
    ``/proc``; 0 where there is none). Read again at every call: children come and go."""
    page = os.sysconf("SC_PAGE_SIZE")
    skip = exclude or set()
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/statm") as statm:
                total += int(statm.read().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        pending.extend(child for child in _children(current) if child not in skip)
    return total


def _children(pid: int) -> list[int]:
    """The child processes that ``pid``'s main thread started (CONFIG_PROC_CHILDREN). modelport starts
    every child there: the scoring process and the shadow scorer from the worker's event loop, the
    workers from the supervisor's loop. Reading every thread's list instead cost about 20 µs a thread
    (a worker has 15 or so) on the event loop, once a second."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            return [int(child) for child in children.read().split()]
    except (OSError, ValueError):
        return []
