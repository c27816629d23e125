"""The model pool: which version answers a reference, loaded, warmed and kept within bounds.

- **Routing.** A routing table ``{model: {alias: version}}`` (plus the computed ``latest``) is read
  from the registry and refreshed whenever the registry's generation counter moves — one indexed row
  read, polled every ``poll_interval`` seconds by :meth:`refresh_if_changed`, so a change made by the CLI,
  the API or another process reaches every worker within a second.
- **Warm before traffic.** When a route would move to a version that is not loaded, that version is
  loaded (digest verified) and warmed by replaying its golden cases, and compared with the recorded
  outputs, *before* the route switches. A version that fails to load or warm never takes traffic: the
  old route stays and the failure is kept in :attr:`failures` for readiness and metadata.
- **Bounded memory.** Loaded versions live in an LRU bounded by count and by the sum of their artifact
  sizes; versions that routes point at are evicted last. In-flight requests hold their own reference,
  so an evicted or replaced version finishes what it started. After a load, the C allocator is asked to
  hand back what parsing the model freed: building an onnxruntime session for a 2,000-tree ensemble
  peaks ~30 MB above what the session keeps, and glibc otherwise holds that memory for good.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from modelport.errors import ModelNotFound, ModelportError, NotFound, VersionArchived, VersionNotFound
from modelport.monitoring.metrics import METRICS
from modelport.registry.names import DEFAULT_ALIAS, LATEST, ModelRef, check_label, is_label
from modelport.registry.service import LoadedVersion, Registry
from modelport.releases.policy import Release

__all__ = ["DEFAULT_ALIAS", "ModelPool"]


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
        max_models: int = 64,
        max_bytes: int = 2 << 30,
        poll_interval: float = 0.25,
    ) -> None:
        self.registry = registry
        self.max_models = max_models
        self.max_bytes = max_bytes
        self.poll_interval = poll_interval
        self._lock = threading.RLock()
        self._loaded: OrderedDict[tuple[str, int], LoadedVersion] = OrderedDict()
        self._routes: dict[str, dict[str, int]] = {}
        self._releases: dict[str, dict[str, Release]] = {}
        self._labels: dict[str, dict[str, int]] = {}
        self._archived: dict[str, set[int]] = {}
        self._policies: dict[str, str] = {}
        self.log_policies: dict[str, dict[str, Any]] = {}
        self._generation = -1
        self._last_poll = 0.0
        self.failures: dict[str, Failure] = {}
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
            raise NotFound(f"model {model!r} has no alias {selector!r}")
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

    def get(self, model: str, number: int) -> LoadedVersion:
        """The loaded version, loading and warming it on first use."""
        key = (model, number)
        with self._lock:
            archived = number in self._archived.get(model, ())
        if archived:
            raise VersionArchived(
                f"{model}@{number} was archived: its record and audit history are kept, its artifacts freed"
            )
        with self._lock:
            loaded = self._loaded.get(key)
            if loaded is not None:
                self._loaded.move_to_end(key)
                return loaded
        loaded = self._load_and_warm(model, number)
        with self._lock:
            existing = self._loaded.get(key)
            if existing is not None:  # another thread won the race
                loaded.close()
                return existing
            self._loaded[key] = loaded
            self.failures.pop(f"{model}@{number}", None)
            self._evict(keep=key)
            self._export_sizes()
        _release_free_memory()
        return loaded

    def is_loaded(self, model: str, number: int) -> bool:
        with self._lock:
            return (model, number) in self._loaded

    def unload(self, model: str, number: int | None = None) -> int:
        with self._lock:
            keys = [k for k in self._loaded if k[0] == model and (number is None or k[1] == number)]
            for key in keys:
                self._loaded.pop(key)
            self._export_sizes()
        return len(keys)

    def _load_and_warm(self, model: str, number: int) -> LoadedVersion:
        started = time.perf_counter()
        try:
            loaded = self.registry.load(ModelRef(model, version=number))
        except ModelportError:
            METRICS.load_failures.labels(model, str(number)).inc()
            raise
        try:
            loaded.check_golden()
        except ModelportError as exc:
            loaded.close()
            METRICS.load_failures.labels(model, str(number)).inc()
            self._record_failure(f"{model}@{number}", str(exc))
            raise
        METRICS.load_seconds.labels(model, str(number)).observe(time.perf_counter() - started)
        return loaded

    def record_failure(self, model: str, number: int, reason: str) -> None:
        """Keep a reason why ``model@number`` does not serve (readiness, repository index)."""
        self._record_failure(f"{model}@{number}", reason)

    def _record_failure(self, ref: str, reason: str) -> None:
        with self._lock:
            self.failures[ref] = Failure(ref, reason, time.time())

    def _evict(self, keep: tuple[str, int]) -> None:
        """Evict least recently used versions beyond the bounds — never ``keep`` (just loaded for a
        request), and versions that routes point at only when nothing else is left."""
        pinned = {(m, n) for m, aliases in self._routes.items() for n in aliases.values()}
        for m, by_alias in self._releases.items():
            pinned |= {(m, r.canary) for r in by_alias.values() if r.canary is not None}

        def total() -> int:
            return sum(_size(v) for v in self._loaded.values())

        while len(self._loaded) > 1 and (len(self._loaded) > self.max_models or total() > self.max_bytes):
            candidates = [k for k in self._loaded if k != keep]
            victim = next((k for k in candidates if k not in pinned), candidates[0])
            self._loaded.pop(victim)

    def _export_sizes(self) -> None:
        METRICS.loaded.set(len(self._loaded))
        METRICS.loaded_bytes.set(sum(_size(v) for v in self._loaded.values()))

    def loaded(self) -> list[tuple[str, int]]:
        with self._lock:
            return list(self._loaded)


def _load_libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_LIBC = _load_libc()


def _release_free_memory() -> None:
    """Return freed heap pages to the operating system (glibc's ``malloc_trim``; a no-op elsewhere)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _size(loaded: LoadedVersion) -> int:
    role = "onnx" if loaded.version.serving_format == "onnx" else "native"
    artifact = loaded.version.artifact(role)
    return artifact.size if artifact is not None else 0
