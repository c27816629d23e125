"""The model pool: which version answers a reference, loaded, warmed and kept within bounds.

- **Routing.** A routing table ``{model: {alias: version}}`` (plus the computed ``latest``) is read
  from the registry and refreshed whenever the registry's generation counter moves — one indexed row
  read, polled every ``poll_interval`` seconds by :meth:`refresh_if_changed`, so a change made by the CLI,
  the API or another process reaches every worker within a second. The table is a fixed handful of
  queries whatever the number of models (17 ms for 1,000 on SQLite), read only when something changed.
- **Every registered version serves.** A request for any version, alias or label of any registered
  model loads that version on first use; nothing has to be loaded in advance.
- **Warm before traffic.** When a route would move to a version that is not loaded, that version is
  loaded (digest verified) and warmed by replaying its golden cases, and compared with the recorded
  outputs, *before* the route switches. A version that fails to load or warm never takes traffic: the
  old route stays and the failure is kept in :attr:`failures` for readiness and metadata.
- **Cold loads off the hot path.** Loads run on the pool's own loader threads (:meth:`load` returns
  a future), never on the event loop, never on the event loop's executor (a burst of cold requests
  must not take the threads that decode large bodies) and never under the lock that requests for
  loaded versions take (:meth:`hot`). Concurrent requests for the same cold version share one load
  (single flight); a waiter that gives up (timeout) does not cancel the load for the others. Loads
  start one at a time, in order — the measurement below needs them not to overlap, and on two cores
  parallel loads would only compete with the requests — except that a load running for longer than
  :data:`SLOW_LOAD_SECONDS` no longer holds the next one back (up to :data:`LOADERS` at once): a
  large model's seconds-long load must not make every other cold model wait. Loads that overlap
  measure each other's allocations too (more, not less: the bound errs on the safe side).
  onnxruntime releases the GIL while it builds a session: ~500 requests for a loaded model were
  answered during one 1-second cold load (tests/serving/test_density.py).
- **Bounded by measured memory.** Loaded versions live in an LRU bounded by count and by the sum of
  the memory each one *measured* when it was loaded — not its artifact size: a 1.3 kB ONNX logistic
  regression keeps ~177 kB loaded (its session ~115 kB, its record — golden cases, signature — the rest).
  A load is measured as the growth of the C heap in use (glibc ``mallinfo2``: allocated chunks plus
  mmapped ones) and of Python's object allocator (allocated blocks × :data:`PY_BLOCK_BYTES`) across
  the version's record read, its load and its golden warm-up, on the loader thread. The runtime's
  module is imported outside the measurement (onnxruntime: ~13 MB of heap, 19 MiB resident with its
  library, once per process); the first session of a process still carries ~1.6 MB of onnxruntime's
  own set-up. A reading costs ~0.4 ms with 400 models loaded (glibc walks its free lists), two a
  load. Both counters are process-wide, so what other threads allocate or free meanwhile is noise:
  under a 100 req/s load the same models measured 172/177/184 kB (p10/p50/p90) against 175/177/181 kB
  alone, but a load that overlaps the rendering of a 5 MB /metrics page (1,000 models' series) can
  be off by hundreds of kB either way. Noise averages out over the loaded set; a measurement below
  the artifact's size counts as the artifact's size, so it can never let the pool grow unbounded
  (where ``mallinfo2`` is missing — not glibc — only that floor counts). Least recently used
  versions are evicted until the sum is within the bound; versions that routes point at go last,
  and the version just loaded stays even when it alone exceeds the bound. In-flight requests hold
  their own reference, so an evicted or replaced version finishes what it started.
- **Memory given back.** After a load (and its evictions) the C allocator is asked to return freed
  pages (glibc ``malloc_trim``, ~0.1 ms): building an onnxruntime session for a 2,000-tree ensemble
  peaks ~30 MB above what the session keeps, and glibc otherwise holds that memory for good. An
  evicted version's other reference — the data plane's batcher — is dropped at once (:attr:`on_evict`,
  :meth:`_let_go`), so its memory comes back there and then, not in the middle of the next load's
  measurement (where it read as a negative size: 10 % of the loads under the Zipf bench before
  this), unless a request still holds it. Sessions are built without onnxruntime's per-session
  arena (runtimes/onnx.py), which reserves ~1 MB each that the measurement would count and keeps
  each session's largest scratch for good. With all of 1,000 small models
  loaded the measured sum was 187 MiB and resident memory grew by 218 MiB: onnxruntime's import
  (19 MiB) and the metric series of 1,000 models (20 MiB) make up the rest to within 5 %
  (docs/performance.md, "Density").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from modelport.errors import (
    AliasNotFound,
    ModelNotFound,
    ModelportError,
    VersionArchived,
    VersionNotFound,
)
from modelport.monitoring.metrics import METRICS
from modelport.registry.names import DEFAULT_ALIAS, LATEST, ModelRef, check_label, is_label
from modelport.registry.records import VersionRecord
from modelport.registry.service import LoadedVersion, Registry
from modelport.releases.policy import Release
from modelport.runtimes.base import BUILTIN_MODULES

__all__ = ["DEFAULT_ALIAS", "LOADERS", "PY_BLOCK_BYTES", "SLOW_LOAD_SECONDS", "ModelPool", "heap_in_use"]

# Python's small-object allocator counts blocks, not bytes; its blocks are 8 to 512 bytes. Loading
# small ONNX models allocated ~440 blocks per version whose resident cost was 61 bytes a block
# (resident growth minus C-heap growth, 300 loads).
PY_BLOCK_BYTES = 64

# A small ONNX model loads in 5-10 ms; a load still running after this is a large model's (a
# 2,000-tree ensemble: ~0.5 s), and the next load starts beside it.
SLOW_LOAD_SECONDS = 0.2
LOADERS = 4  # loads at once at most (all but one of them beside slow ones)


@dataclass(frozen=True, slots=True)
class Failure:
    ref: str
    reason: str
    at: float


class ModelPool:
    """Loaded versions and the routes that pick them. Thread-safe."""

    def __init__(
        self,
        registry: Registry,
        *,
        max_models: int = 1000,
        max_bytes: int = 2 << 30,
        poll_interval: float = 0.25,
    ) -> None:
        self.registry = registry
        self.max_models = max_models
        self.max_bytes = max_bytes
        self.poll_interval = poll_interval
        self._lock = threading.RLock()
        self._loaded: OrderedDict[tuple[str, int], LoadedVersion] = OrderedDict()
        self._memory: dict[tuple[str, int], int] = {}  # measured bytes of each loaded version
        self._used = 0  # their sum
        self._loading: dict[tuple[str, int], Future[LoadedVersion]] = {}
        self._loader = ThreadPoolExecutor(max_workers=LOADERS, thread_name_prefix="modelport-load")
        self._gate = threading.Condition()  # loads start in order, beside slow ones only
        self._tickets = 0  # handed out to loads as they reach the gate
        self._next = 0  # the ticket that may start next
        self._running: dict[int, float] = {}  # ticket -> when its load started
        self._routes: dict[str, dict[str, int]] = {}
        self._releases: dict[str, dict[str, Release]] = {}
        self._labels: dict[str, dict[str, int]] = {}
        self._archived: dict[str, set[int]] = {}
        self._policies: dict[str, str] = {}
        self.log_policies: dict[str, dict[str, Any]] = {}
        self._generation = -1
        self._last_poll = 0.0
        self.failures: dict[str, Failure] = {}
        # Called with each version evicted, on a loader thread (the data plane drops its batcher)
        self.on_evict: Callable[[tuple[str, int]], None] | None = None
        self.refresh_if_changed(force=True)

    # -- routing --------------------------------------------------------------------------------

    def refresh_if_changed(self, *, force: bool = False) -> bool:
        """Re-read the routing table if the registry changed; warm new targets before switching."""
        now = time.monotonic()
        if not force and now - self._last_poll < self.poll_interval:
            return False
        self._last_poll = now
        generation = self.registry.store.generation()
        if generation == self._generation and not force:
            return False
        table = self.registry.store.routing_table()
        policies = self.registry.store.policies()
        log_policies = self.registry.store.monitoring.log_policies()
        releases = self.registry.store.releases.releases_table()
        labels = self.registry.store.releases.labels_table()
        archived = self.registry.store.releases.archived()
        with self._lock:
            previous = self._routes
            previous_releases = self._releases
        routes: dict[str, dict[str, int]] = {}
        for model, aliases in table.items():
            routes[model] = {}
            for alias, number in aliases.items():
                old = previous.get(model, {}).get(alias)
                if old == number or not self._is_hot(model, old):
                    routes[model][alias] = number  # nothing was serving from it yet: lazy load
                    continue
                try:
                    self.get(model, number)  # load and warm before the switch
                except ModelportError as exc:
                    self._record_failure(f"{model}@{number}", str(exc))
                    assert old is not None  # _is_hot was true
                    routes[model][alias] = old  # keep serving the version that works
                    continue
                routes[model][alias] = number
        kept: dict[str, dict[str, Release]] = {}
        for model, by_alias in releases.items():
            for alias, release in by_alias.items():
                chosen = self._warm_release(
                    model, alias, release, previous_releases.get(model, {}).get(alias)
                )
                if chosen is not None:
                    kept.setdefault(model, {})[alias] = chosen
        with self._lock:
            self._routes = routes
            self._releases = kept
            self._labels = labels
            self._archived = archived
            self._policies = policies
            self.log_policies = log_policies
            self._generation = generation
        return True

    def _warm_release(self, model: str, alias: str, release: Release, old: Release | None) -> Release | None:
        """The release to apply: ``release`` once its canary is loaded and warmed — when the alias
        already takes traffic (else lazily, like aliases) — or, if that fails, the release that was
        running (None: none). A shadow is loaded by the worker's shadow scorer, not here."""
        if old == release:
            return release
        if not self._is_hot(model, release.primary) and (old is None or not self._is_hot(model, old.primary)):
            return release  # nothing serves through this alias yet
        if release.canary is not None:
            try:
                self.get(model, release.canary)
            except ModelportError as exc:
                self._record_failure(f"{model}@{release.canary}", str(exc))
                return old if old is not None and old.primary == release.primary else None
        return release

    def route(self, model: str, selector: str | None) -> tuple[int, Release | None, str]:
        """Like :meth:`resolve`, plus the release running on the alias the request goes through (only
        traffic addressed to that alias — or to the default route when it is that alias — is split)
        and the alias's name ("" for a version number or label)."""
        with self._lock:
            routes = self._routes.get(model)
            releases = self._releases.get(model)
        if routes is None or not releases or (selector and not selector[0].isalpha()):
            return self.resolve(model, selector), None, ""
        alias = selector or (DEFAULT_ALIAS if DEFAULT_ALIAS in routes else "")
        release = releases.get(alias)
        if release is None:
            return self.resolve(model, selector), None, alias
        return release.primary, release, alias

    def releases(self) -> dict[str, dict[str, Release]]:
        with self._lock:
            return {model: dict(by_alias) for model, by_alias in self._releases.items()}

    @property
    def generation(self) -> int:
        """The registry generation the routes were last read at."""
        return self._generation

    def _is_hot(self, model: str, number: int | None) -> bool:
        with self._lock:
            return number is not None and (model, number) in self._loaded

    def resolve(self, model: str, selector: str | None) -> int:
        """The version number for ``model`` and a version/alias selector (``None`` = default route:
        alias ``production`` if set, else the newest version)."""
        with self._lock:
            routes = self._routes.get(model)
        if routes is None:
            raise ModelNotFound(f"no model named {model!r}")
        if selector is None or selector == "":
            number = routes.get(DEFAULT_ALIAS, routes.get(LATEST))
            if number is None:
                raise VersionNotFound(f"model {model!r} has no versions")
            return number
        if selector.isascii() and selector.isdigit():
            # Versions are numbered 1..latest without gaps: anything else does not exist.
            latest = routes.get(LATEST, 0)
            if len(selector) > 10 or not 1 <= int(selector) <= latest:
                raise VersionNotFound(f"model {model!r} has no version {selector[:12]}")
            return int(selector)
        if is_label(selector):
            with self._lock:
                labelled = self._labels.get(model, {}).get(check_label(selector))
            if labelled is None:
                raise VersionNotFound(f"model {model!r} has no version labelled {selector[:40]!r}")
            return labelled
        number = routes.get(selector)
        if number is None:
            raise AliasNotFound(f"model {model!r} has no alias {selector!r}")
        return number

    def routes_of(self, model: str) -> dict[str, int] | None:
        """The model's aliases (and ``latest``), or ``None`` for a model that does not exist."""
        with self._lock:
            return self._routes.get(model)

    def policy(self, model: str) -> str:
        """``flag`` or ``reject``: what serving does with values outside the signature."""
        return self._policies.get(model, "flag")

    def models(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {model: dict(aliases) for model, aliases in self._routes.items()}

    # -- loading --------------------------------------------------------------------------------

    def hot(self, model: str, number: int) -> LoadedVersion | None:
        """The version if it is loaded (and marked as just used), else None: the requests' path, one
        short lock that no load ever holds."""
        key = (model, number)
        with self._lock:
            if number in self._archived.get(model, ()):
                return None  # load() says why
            loaded = self._loaded.get(key)
            if loaded is not None:
                self._loaded.move_to_end(key)
            return loaded

    def get(self, model: str, number: int) -> LoadedVersion:
        """The loaded version, loading and warming it on first use (waits for the load: not on the
        event loop — there, await :meth:`load`)."""
        loaded = self.hot(model, number)
        if loaded is not None:
            return loaded
        return self.load(model, number).result()

    def load(self, model: str, number: int) -> Future[LoadedVersion]:
        """The version as a future: already done when it is loaded, else the one load of it in
        progress or queued on the loader thread (single flight). The future cannot be cancelled: a
        waiter that gives up leaves the load to the others."""
        key = (model, number)
        future: Future[LoadedVersion] = Future()
        with self._lock:
            if number in self._archived.get(model, ()):
                future.set_exception(
                    VersionArchived(
                        f"{model}@{number} was archived: its record and audit history are kept, "
                        "its artifacts freed"
                    )
                )
                return future
            loaded = self._loaded.get(key)
            if loaded is not None:
                self._loaded.move_to_end(key)
                future.set_result(loaded)
                return future
            pending = self._loading.get(key)
            if pending is None:
                pending = self._loading[key] = future
                pending.set_running_or_notify_cancel()  # RUNNING from the start: cancel() is refused
                self._loader.submit(self._load_into, key, pending)
            return pending

    def is_loaded(self, model: str, number: int) -> bool:
        with self._lock:
            return (model, number) in self._loaded

    def unload(self, model: str, number: int | None = None) -> int:
        with self._lock:
            keys = [k for k in self._loaded if k[0] == model and (number is None or k[1] == number)]
            dropped = [(key, self._loaded[key]) for key in keys]
            for key in keys:
                self._drop(key)
            self._export_sizes()
        if dropped:
            self._let_go(dropped)  # the data plane's batchers let go of them too (on_evict)
        _release_free_memory()
        return len(keys)

    def memory(self) -> dict[tuple[str, int], int]:
        """The measured bytes of each loaded version."""
        with self._lock:
            return dict(self._memory)

    @property
    def used_bytes(self) -> int:
        """The sum of :meth:`memory`: what :attr:`max_bytes` bounds."""
        return self._used

    def _enter(self) -> int:
        """Wait until this load may start: its turn has come and every load running is slow."""
        with self._gate:
            ticket = self._tickets
            self._tickets += 1
            while True:
                now = time.monotonic()
                young = [SLOW_LOAD_SECONDS - (now - t) for t in self._running.values()]
                if ticket == self._next and all(left <= 0 for left in young):
                    self._next += 1
                    self._running[ticket] = now
                    self._gate.notify_all()  # the next ticket may check its turn
                    return ticket
                # the next ticket waits for the youngest load still young to turn slow (or to end)
                left = [t for t in young if t > 0]
                self._gate.wait(min(left) if ticket == self._next and left else None)

    def _leave(self, ticket: int) -> None:
        with self._gate:
            del self._running[ticket]
            self._gate.notify_all()

    def _load_into(self, key: tuple[str, int], pending: Future[LoadedVersion]) -> None:
        """Load ``key`` (on a loader thread), add it within the bounds, settle ``pending``."""
        model, number = key
        ticket = self._enter()
        try:
            loaded, measured = self._load_and_warm(model, number)
        except BaseException as exc:
            self._leave(ticket)
            with self._lock:
                self._loading.pop(key, None)
            pending.set_exception(exc)
            return
        try:
            size = max(measured, _artifact_size(loaded))
            with self._lock:
                self._loaded[key] = loaded
                self._memory[key] = self._memory_gauge(key, size)
                self._used += size
                self.failures.pop(f"{model}@{number}", None)
                evicted = self._evict(keep=key)
                self._export_sizes()
            if evicted:
                self._let_go(evicted)
            _release_free_memory()  # the build's peak beyond what the session keeps, the evicted ones
        except BaseException as exc:  # whatever failed after the load, no waiter may wait for ever
            with self._lock:
                self._loading.pop(key, None)
            pending.set_exception(exc)
            return
        finally:
            self._leave(ticket)
        with self._lock:
            self._loading.pop(key, None)
        pending.set_result(loaded)

    def _let_go(self, evicted: list[tuple[tuple[str, int], LoadedVersion]]) -> None:
        """Drop the last references to evicted versions (ours, and the data plane's through
        :attr:`on_evict`) now, before the next load may start — not while it is measured, which would
        count their memory coming back as its own — and on a thread of their own: glibc keeps a
        thread's recent frees in a per-thread cache (tcache) that ``mallinfo2`` counts as in use and
        that the loader's next allocations would reuse unseen (measured: 153 instead of 176 kB a
        model); a thread's cache goes back to the heap when it ends."""
        hook = self.on_evict

        def release() -> None:
            if hook is not None:
                for key, _ in evicted:
                    hook(key)
            evicted.clear()

        freeing = threading.Thread(target=release, name="modelport-evict")
        freeing.start()
        freeing.join()

    def _load_and_warm(self, model: str, number: int) -> tuple[LoadedVersion, int]:
        """The version loaded and warmed, and the memory that took (see the module's docstring)."""
        started = time.perf_counter()
        try:
            _release_free_memory()  # what the last evictions freed, before measuring this load
            before = heap_in_use()
            version = self.registry.get(ModelRef(model, version=number))  # kept: golden rows, signature
            module = _runtime_module(version)
            if module is not None and module not in sys.modules:
                importing = heap_in_use()
                importlib.import_module(module)
                before += heap_in_use() - importing  # a runtime's import is the process's, not the model's
            loaded = self.registry.load(version)
        except ModelportError as exc:
            METRICS.load_failures.labels(model, str(number)).inc()
            self._record_failure(f"{model}@{number}", str(exc))
            raise
        try:
            loaded.check_golden()
        except ModelportError as exc:
            loaded.close()
            METRICS.load_failures.labels(model, str(number)).inc()
            self._record_failure(f"{model}@{number}", str(exc))
            raise
        measured = heap_in_use() - before
        METRICS.load_seconds.labels(model, str(number)).observe(time.perf_counter() - started)
        return loaded, measured

    def record_failure(self, model: str, number: int, reason: str) -> None:
        """Keep a reason why ``model@number`` does not serve (readiness, repository index)."""
        self._record_failure(f"{model}@{number}", reason)

    def _record_failure(self, ref: str, reason: str) -> None:
        with self._lock:
            self.failures[ref] = Failure(ref, reason, time.time())

    def _evict(self, keep: tuple[str, int]) -> list[tuple[tuple[str, int], LoadedVersion]]:
        """Evict least recently used versions beyond the bounds — never ``keep`` (just loaded for a
        request), and versions that routes point at only when nothing else is left."""
        evicted: list[tuple[tuple[str, int], LoadedVersion]] = []
        if len(self._loaded) <= self.max_models and self._used <= self.max_bytes:
            return evicted
        pinned = {(m, n) for m, aliases in self._routes.items() for n in aliases.values()}
        for m, by_alias in self._releases.items():
            pinned |= {(m, r.canary) for r in by_alias.values() if r.canary is not None}
        while len(self._loaded) > 1 and (len(self._loaded) > self.max_models or self._used > self.max_bytes):
            # the LRU end comes first: the first unpinned one, else the least recently used of all
            victim = next((k for k in self._loaded if k != keep and k not in pinned), None)
            if victim is None:
                victim = next(k for k in self._loaded if k != keep)
            evicted.append((victim, self._drop(victim)))
        return evicted

    def _drop(self, key: tuple[str, int]) -> LoadedVersion:
        """Forget a loaded version (under the lock); its memory goes with its last reference."""
        self._used -= self._memory.pop(key, 0)
        METRICS.forget_version(key[0], str(key[1]))
        return self._loaded.pop(key)

    def _memory_gauge(self, key: tuple[str, int], size: int) -> int:
        METRICS.model_memory.labels(key[0], str(key[1])).set(size)
        return size

    def _export_sizes(self) -> None:
        METRICS.loaded.set(len(self._loaded))
        METRICS.loaded_bytes.set(self._used)

    def loaded(self) -> list[tuple[str, int]]:
        with self._lock:
            return list(self._loaded)


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (2.33+): every field a ``size_t``."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _load_libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    if libc is None or not hasattr(libc, "malloc_trim"):
        return None
    if hasattr(libc, "mallinfo2"):
        libc.mallinfo2.restype = _MallInfo2
    return libc


_LIBC = _load_libc()
_MALLINFO2 = _LIBC is not None and hasattr(_LIBC, "mallinfo2")


def heap_in_use() -> int:
    """Bytes this process has allocated and not freed: the C heap in use (glibc ``mallinfo2``:
    ``uordblks`` + ``hblkhd``, about a microsecond) plus Python's small-object allocator (its blocks ×
    :data:`PY_BLOCK_BYTES`). 0 without glibc: loads then count as their artifact's size."""
    if not _MALLINFO2:
        return 0
    assert _LIBC is not None
    info = _LIBC.mallinfo2()
    return int(info.uordblks + info.hblkhd) + sys.getallocatedblocks() * PY_BLOCK_BYTES


def _release_free_memory() -> None:
    """Return freed heap pages to the operating system (glibc's ``malloc_trim``; a no-op elsewhere)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _runtime_module(version: VersionRecord) -> str | None:
    """The module of the runtime that serves ``version``: imported outside the measurement (importing
    onnxruntime adds ~13 MB to the process, none of it the model's)."""
    artifact = version.artifact("onnx" if version.serving_format == "onnx" else "native")
    return BUILTIN_MODULES.get(artifact.format) if artifact is not None else None


def _artifact_size(loaded: LoadedVersion) -> int:
    role = "onnx" if loaded.version.serving_format == "onnx" else "native"
    artifact = loaded.version.artifact(role)
    return artifact.size if artifact is not None else 0
