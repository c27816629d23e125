"""The data plane: the protocol-free core that every inference protocol and batch scoring call.

It takes a :class:`~modelport.registry.names.ModelRef` (parsed once, at the edge, by
:func:`edge_ref`) and a :class:`Payload` — the request's rows as its protocol sent them: tensors (V2
REST JSON or binary, gRPC) or a table (MLflow) — and runs the one inference path in :meth:`DataPlane.infer`.
It knows nothing of HTTP, JSON or protobuf.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from modelport._version import __version__
from modelport.errors import (
    AliasNotFound,
    InputMismatch,
    InvalidInput,
    InvalidName,
    ModelNotFound,
    ModelportError,
    ValuesRejected,
    VersionNotFound,
)
from modelport.monitoring.metrics import LOCAL, METRICS
from modelport.monitoring.predictions import LogPolicy, PredictionLog
from modelport.monitoring.tracing import Timeline
from modelport.registry.names import MAX_VERSION, ModelRef, check_label, is_label, is_model_name
from modelport.registry.service import LoadedVersion
from modelport.releases.policy import CANARY, PRIMARY, Release
from modelport.releases.stats import ReleaseCounters
from modelport.runtimes.base import Prediction
from modelport.serving.batching import Batcher
from modelport.serving.isolated import ScoringProcess
from modelport.serving.pool import ModelPool
from modelport.serving.scoring import Hangs, ScoringLimits, ScoringThreads, VersionScoring
from modelport.serving.shadow import ShadowMirror
from modelport.serving.tensors import Tensor, batch_from_tensors, tensors_from_prediction
from modelport.signature import Batch, Signature

__all__ = [
    "OFFLOAD_BYTES",
    "OFFLOAD_ROWS",
    "DataPlane",
    "InferenceResult",
    "ModelStats",
    "Payload",
    "TensorPayload",
    "edge_ref",
]

SERVER_NAME = "modelport"
EXTENSIONS = ["binary_tensor_data", "model_repository", "statistics"]
# A payload at least this large is decoded and checked on a thread, not on the event loop: a
# 300,000-row table takes seconds, and liveness probes must still answer in milliseconds.
OFFLOAD_BYTES = 256 * 1024
OFFLOAD_ROWS = 5_000  # …and a result at least this many rows long is logged and counted on a thread


@functools.lru_cache(maxsize=4096)  # pure; the hot path parses the same few references over and over
def edge_ref(name: str, selector: str | None) -> ModelRef:
    """The reference a request names — a model and a version number, label, alias or nothing (the
    default route: alias ``production`` if set, else the newest version). Parsed here, once, by every
    protocol. A name or selector that breaks the naming rules cannot exist, so it answers as one that
    does not exist (404 / NOT_FOUND), never as a malformed request."""
    if not is_model_name(name):
        raise ModelNotFound(f"no model named {name[:100]!r}")
    if not selector:
        return ModelRef(name)
    if selector.isascii() and selector.isdigit():
        if len(selector) > 10 or not 1 <= int(selector) <= MAX_VERSION:
            raise VersionNotFound(f"model {name!r} has no version {selector[:12]}")
        return ModelRef(name, version=int(selector))
    if is_label(selector):
        try:
            return ModelRef(name, label=check_label(selector))
        except InvalidName:
            raise VersionNotFound(f"model {name!r} has no version labelled {selector[:40]!r}") from None
    if not selector[0].isalpha() or not selector.isascii() or len(selector) > 63:
        raise AliasNotFound(f"model {name!r} has no alias {selector[:40]!r}")
    return ModelRef(name, alias=selector)


class Payload(Protocol):
    """A request's rows as its protocol sent them, read against a version's signature on demand (a
    release's arms may have different signatures)."""

    @property
    def size(self) -> int:
        """Bytes on the wire: a large payload is decoded off the event loop."""
        ...

    def columns(self, signature: Signature) -> tuple[Batch, int, np.ndarray | None]:
        """The signature's columns, the row count and (when at hand) the numeric features as one
        ``[rows, features]`` matrix — or InputMismatch naming what does not fit."""
        ...

    def tensors(self, signature: Signature) -> list[Tensor]:
        """The rows as tensors, for a shadow copy (scored in another process)."""
        ...

    def field(self, name: str, signature: Signature) -> Any:
        """The first row's value of feature ``name`` (a release's sticky key), or None."""
        ...


@dataclass(slots=True)
class TensorPayload:
    """Open Inference Protocol tensors (V2 REST JSON or binary, gRPC)."""

    inputs: list[Tensor]
    size: int = 0

    def columns(self, signature: Signature) -> tuple[Batch, int, np.ndarray | None]:
        return batch_from_tensors(self.inputs, signature)

    def tensors(self, signature: Signature) -> list[Tensor]:
        return self.inputs

    def field(self, name: str, signature: Signature) -> Any:
        for tensor in self.inputs:
            if tensor.name == name and tensor.data.size:
                return tensor.data.flat[0]
        only = self.inputs[0].data if len(self.inputs) == 1 else None
        if only is not None and only.ndim == 2 and only.shape[0] and name in signature.names:
            return only[0, signature.names.index(name)]
        return None


@dataclass(slots=True)
class InferenceResult:
    model: str
    version: int
    prediction: Prediction
    signature: Signature
    flags: dict[str, dict[str, int]] = field(default_factory=dict)
    rows: int = 0

    def outputs(self, requested: list[str] | None = None) -> list[Tensor]:
        """The prediction as Open Inference Protocol tensors, only ``requested`` ones if named."""
        outputs = tensors_from_prediction(self.prediction, self.signature)
        if requested:
            known = {t.name for t in outputs}
            unknown = [name for name in requested if name not in known]
            if unknown:
                raise InputMismatch(
                    f"unknown output(s) {', '.join(unknown)}; outputs are {', '.join(sorted(known))}"
                )
            outputs = [t for t in outputs if t.name in requested]
        return outputs


@dataclass(slots=True)
class ModelStats:
    success: int = 0
    failure: int = 0
    success_ns: int = 0
    failure_ns: int = 0
    last_inference_ms: int = 0
    flagged_requests: int = 0
    rejected_requests: int = 0


@dataclass
class DataPlane:
    pool: ModelPool
    max_batch_rows: int = 256
    draining: bool = False
    _batchers: dict[tuple[str, int], tuple[LoadedVersion, Batcher]] = field(default_factory=dict)
    stats: dict[tuple[str, int], ModelStats] = field(default_factory=dict)
    predictions: PredictionLog | None = None
    _policy_cache: dict[str, tuple[Any, LogPolicy]] = field(default_factory=dict)
    tracing: bool = False  # batchers stamp the timelines of traced requests (monitoring/tracing.py)
    release_counts: ReleaseCounters = field(default_factory=ReleaseCounters)
    shadow_capacity: int = 1024
    shadow_config: dict[str, Any] | None = None  # the shadow scorer's registry (serving/shadow_scorer.py)
    _shadow: ShadowMirror | None = None
    scoring_limits: ScoringLimits = field(default_factory=ScoringLimits)
    _threads: ScoringThreads = field(default_factory=ScoringThreads)
    _process: ScoringProcess | None = None
    _hangs: Hangs | None = None

    def __post_init__(self) -> None:
        self.pool.on_evict = self._forget

    def _forget(self, key: tuple[str, int]) -> None:
        """Drop an evicted version's batcher (called on the pool's loader thread: one dict operation,
        atomic under the GIL), so that its memory goes at once unless a request still holds it."""
        self._batchers.pop(key, None)

    # -- health and metadata --------------------------------------------------------------------

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return not self.draining

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS}

    def resolve(self, ref: ModelRef) -> int:
        # Routes are refreshed in the background (Worker duties): no database read per request.
        return self.pool.resolve(ref.name, ref.selector)

    async def loaded(self, ref: ModelRef) -> LoadedVersion:
        return await self.loaded_number(ref.name, self.resolve(ref))

    async def loaded_number(self, model: str, number: int) -> LoadedVersion:
        """The loaded version; a cold one is awaited from the pool's loader thread (one load however
        many requests wait for it), and neither the event loop nor a thread of its executor waits."""
        loaded = self.pool.hot(model, number)
        if loaded is not None:
            return loaded
        return await asyncio.wrap_future(self.pool.load(model, number))

    async def model_metadata(self, ref: ModelRef) -> dict[str, Any]:
        """The Open Inference Protocol's model metadata. ``inputs`` lists exactly one request form the
        server accepts — a client that sends each listed input gets an answer: one 2-D ``input`` tensor
        in feature order when every feature is numeric, else one tensor per feature. The other form
        (per-feature tensors for numeric models) is described in ``parameters.named_inputs``."""
        model = ref.name
        loaded = await self.loaded(ref)
        signature = loaded.signature
        routes = self.pool.models().get(model, {})
        named = [
            {"name": f.name, "datatype": "FP64" if f.numeric else "BYTES", "shape": [-1]}
            for f in signature.features
        ]
        inputs: list[dict[str, Any]] = (
            [{"name": "input", "datatype": "FP64", "shape": [-1, len(signature.features)]}]
            if signature.all_numeric
            else named
        )
        if signature.outputs.task == "regression":
            outputs = [{"name": "prediction", "datatype": "FP64", "shape": [-1]}]
        else:
            label_type = "INT64" if all(isinstance(c, int) for c in signature.outputs.classes) else "BYTES"
            outputs = [
                {"name": "label", "datatype": label_type, "shape": [-1]},
                {"name": "probabilities", "datatype": "FP64", "shape": [-1, len(signature.outputs.classes)]},
            ]
        versions = sorted({str(n) for n in routes.values()} | {str(loaded.version.number)}, key=int)
        return {
            "name": model,
            "versions": versions,
            "platform": f"modelport-{loaded.runtime.format}",
            "inputs": inputs,
            "outputs": outputs,
            "parameters": {
                "version": loaded.version.number,
                "aliases": sorted(a for a, n in routes.items() if n == loaded.version.number),
                "classes": list(signature.outputs.classes),
                "features": signature.names,
                # the alternative form: one tensor per feature instead of the 2-D "input"
                **({"named_inputs": named} if signature.all_numeric else {}),
            },
        }

    async def model_ready(self, ref: ModelRef) -> bool:
        try:
            loaded = await self.loaded(ref)
            scoring = self.batcher_for((ref.name, loaded.version.number), loaded).scoring
            if scoring.isolated:  # ready means loaded where it scores: in the scoring process
                await asyncio.shield(self.scoring_process().prepare(loaded))
        except ModelportError:
            return False
        return not self.draining

    # -- inference ------------------------------------------------------------------------------

    async def infer(
        self,
        ref: ModelRef,
        payload: Payload,
        *,
        request_id: str = "",
        key_id: str = "",
        timeline: Timeline | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> InferenceResult:
        """Score one request of any protocol — V2 REST (JSON or binary), gRPC, MLflow, batch. One path:
        the version chosen by alias, release arm or number; the payload's columns for that version's
        signature; value checks with the model's policy (flag or reject); the version's batcher
        (deadline, isolation, micro-batching); statistics, release counts, shadow copies, the
        prediction log and the flag metrics. Decoding a large payload leaves the event loop.

        Counted in ``modelport_requests_in_flight`` from here until it returns or raises (a cold
        load, the queue and the runtime call included; reading the body and writing the answer not)."""
        LOCAL.in_flight += 1
        try:
            return await self._infer(ref, payload, request_id, key_id, timeline, headers)
        finally:
            LOCAL.in_flight -= 1

    async def _infer(
        self,
        ref: ModelRef,
        payload: Payload,
        request_id: str,
        key_id: str,
        timeline: Timeline | None,
        headers: Mapping[str, str] | None,
    ) -> InferenceResult:
        number, release, arm = self.choose(ref, payload, headers)
        model = ref.name
        started = time.perf_counter_ns()
        try:
            loaded = await self.loaded_number(model, number)
        except Exception as exc:
            if release is not None:
                self.count_failure(release, model, arm, exc, 0.0)
            raise
        key = (model, loaded.version.number)
        if timeline is not None:
            timeline.validating = started
        stats = self.stats.setdefault(key, ModelStats())
        try:
            if payload.size >= OFFLOAD_BYTES:
                batch, rows, flags = await asyncio.to_thread(self.validate, model, loaded, payload)
            else:
                batch, rows, flags = self.validate(model, loaded, payload)
            if flags:
                stats.flagged_requests += 1
            prediction = await self.batcher_for(key, loaded).submit(batch, rows, timeline)
        except Exception as exc:
            stats.failure += 1
            stats.failure_ns += time.perf_counter_ns() - started
            if isinstance(exc, InputMismatch) and exc.rejected:
                stats.rejected_requests += 1
            if release is not None:
                seconds = (time.perf_counter_ns() - started) / 1e9
                self.count_failure(
                    release, model, arm, exc, seconds, lambda primary: self.validate(model, primary, payload)
                )
            raise
        big = rows >= OFFLOAD_ROWS  # its bookkeeping runs on a thread: probes keep answering
        if release is not None:
            seconds = (time.perf_counter_ns() - started) / 1e9
            if big and prediction.labels is not None:
                tally: Counter[Any] = await asyncio.to_thread(Counter, prediction.labels.tolist())
                self.release_counts.request(release.release_id, arm, seconds, error=False, label_counts=tally)
            else:
                self.release_counts.request(
                    release.release_id, arm, seconds, error=False, labels=prediction.labels
                )
            if release.shadow is not None and arm != CANARY:
                self.shadow.offer(
                    model, release, payload.tensors(loaded.signature), rows, prediction, request_id, key_id
                )
        version = str(loaded.version.number)
        LOCAL.rows(model, version, rows)
        if self.predictions is not None and model in self.pool.log_policies:
            latency_ms = (time.perf_counter_ns() - started) / 1e6
            logged = (loaded, batch, prediction, flags, request_id, key_id, latency_ms)
            if big:
                await asyncio.to_thread(self._log, *logged)
            else:
                self._log(*logged)
        for feature, kinds in flags.items():
            for kind, count in kinds.items():
                METRICS.flags.labels(model, version, feature, kind).inc(count)
        stats.success += 1
        stats.success_ns += time.perf_counter_ns() - started
        stats.last_inference_ms = int(time.time() * 1000)
        if timeline is not None:
            timeline.serialising = time.perf_counter_ns()
        return InferenceResult(model, loaded.version.number, prediction, loaded.signature, flags, rows)

    def _log(
        self,
        loaded: LoadedVersion,
        batch: Batch,
        prediction: Prediction,
        flags: dict[str, dict[str, int]],
        request_id: str,
        key_id: str,
        latency_ms: float,
    ) -> None:
        """Offer an answered request to the prediction log (its policy samples it or not)."""
        assert self.predictions is not None
        model = loaded.version.model
        self.predictions.offer(
            self.log_policy(model),
            model,
            loaded.version.number,
            batch,
            prediction,
            request_id=request_id,
            key_id=key_id,
            latency_ms=latency_ms,
            flags=flags,
        )

    def validate(
        self, model: str, loaded: LoadedVersion, payload: Payload
    ) -> tuple[Batch, int, dict[str, dict[str, int]]]:
        """The request's columns for ``loaded``, its rows and its value flags — or InputMismatch when
        the payload does not fit the signature, ValuesRejected when the model's policy refuses them."""
        batch, rows, matrix = payload.columns(loaded.signature)
        flags = loaded.signature.violations(batch, matrix)
        if flags and self.pool.policy(model) == "reject":
            raise ValuesRejected(
                f"values outside what {loaded.version.ref} was trained on: "
                + loaded.signature.describe_violations(flags)
            )
        return batch, rows, flags

    def count_failure(
        self,
        release: Release,
        model: str,
        arm: str,
        error: BaseException,
        seconds: float,
        primary_accepts: Callable[[LoadedVersion], object] | None = None,
    ) -> None:
        """Count a failed request of a release's arm. Only failures that are the arm's fault count as
        errors — they drive automatic rollback, which a client must not be able to trigger: a refusal
        of the request itself (400) is the client's, unless the canary refused what the primary
        accepts (its signature or checks are narrower). Timeouts and model failures always count."""
        self.release_counts.request(
            release.release_id,
            arm,
            seconds,
            error=self._arm_fault(release, model, arm, error, primary_accepts),
        )

    def _arm_fault(
        self,
        release: Release,
        model: str,
        arm: str,
        error: BaseException,
        primary_accepts: Callable[[LoadedVersion], object] | None,
    ) -> bool:
        if not isinstance(error, InvalidInput):
            return True
        if arm != CANARY or primary_accepts is None or not self.pool.is_loaded(model, release.primary):
            return False
        try:
            primary_accepts(self.pool.get(model, release.primary))
        except InvalidInput:
            return False  # the primary refuses it too: the request's fault
        except ModelportError:
            return True
        return True

    def choose(
        self, ref: ModelRef, payload: Payload | None, headers: Mapping[str, str] | None
    ) -> tuple[int, Release | None, str]:
        """The version that answers this request, the release it belongs to (if any) and its arm."""
        number, release, alias = self.pool.route(ref.name, ref.selector)
        if release is None:
            return number, None, PRIMARY
        key_value = None
        if release.sticky is not None:
            key_value = self._sticky_key(release, ref.name, payload, headers)
        arm = release.arm(ref.name, alias, key_value)
        return release.version_of(arm), release, arm

    @property
    def shadow(self) -> ShadowMirror:
        if self._shadow is None:
            self._shadow = ShadowMirror(
                self, self.release_counts, self.shadow_config, capacity=self.shadow_capacity
            )
        return self._shadow

    def sync_shadows(self) -> None:
        """Start, warm or stop the shadow scorer for the releases in force (on the event loop)."""
        releases = [(m, r) for m, by_alias in self.pool.releases().items() for r in by_alias.values()]
        if self._shadow is not None or any(r.shadow is not None for _, r in releases):
            self.shadow.sync(releases)

    async def close_shadows(self) -> None:
        if self._shadow is not None:
            await self._shadow.close()

    def _sticky_key(
        self, release: Release, model: str, payload: Payload | None, headers: Mapping[str, str] | None
    ) -> str | None:
        """The request's assignment key: a header's value, or a field of its first row (read in the
        primary's signature: a named input, a column of a table, or a column of a numeric matrix)."""
        sticky = release.sticky
        assert sticky is not None
        if sticky.source == "header":
            value = None if headers is None else headers.get(sticky.name)
            return value or None
        if payload is None:
            return None
        try:
            signature = self.pool.get(model, release.primary).signature
            value = payload.field(sticky.name, signature)
        except ModelportError:
            return None
        return None if value is None else _text(value)

    def log_policy(self, model: str) -> LogPolicy:
        document = self.pool.log_policies[model]
        cached = self._policy_cache.get(model)
        if cached is None or cached[0] is not document:
            cached = (document, LogPolicy.of(document))
            self._policy_cache[model] = cached
        return cached[1]

    def batcher_for(self, key: tuple[str, int], loaded: LoadedVersion) -> Batcher:
        entry = self._batchers.get(key)
        if entry is None or entry[0] is not loaded:
            model, version = key[0], str(key[1])

            def observe(rows: int, waited: float) -> None:
                LOCAL.batch(model, version, rows, waited)

            scoring = VersionScoring(
                loaded, self.scoring_limits, self.hangs, self._threads, process=self.scoring_process
            )
            if scoring.isolated:
                self.scoring_process().prepare(loaded)  # its first request should not wait for it
            entry = (loaded, Batcher(scoring, self.max_batch_rows, observe, timed=self.tracing))
            self._batchers[key] = entry
            # An eviction drops its batcher at once (_forget); this catches a batcher made for a version
            # evicted while its request was under way, which would keep its runtime alive.
            live = set(self.pool.loaded())
            for stale in [k for k in list(self._batchers) if k not in live and k != key]:
                self._batchers.pop(stale, None)  # list(): the loader thread may pop meanwhile
        return entry[1]

    def batcher_keys(self) -> set[tuple[str, int]]:
        """The versions this worker holds a batcher for (each keeps its runtime alive)."""
        return set(self._batchers)

    async def score(self, loaded: LoadedVersion, batch: Batch, rows: int) -> Prediction:
        """Score columns already converted by ``loaded``'s signature through its batcher: the one path
        of every runtime call of the server (deadline, isolation, batching)."""
        key = (loaded.version.model, loaded.version.number)
        return await self.batcher_for(key, loaded).submit(batch, rows)

    @property
    def hangs(self) -> Hangs:
        if self._hangs is None:
            self._hangs = Hangs(self.scoring_limits, self.pool.record_failure)
        return self._hangs

    def scoring_process(self) -> ScoringProcess:
        """The worker's scoring process for runtimes that cannot be stopped (serving/isolated.py)."""
        if self._process is None:
            config = self.shadow_config
            if config is None:
                from modelport.serving.shadow_scorer import scorer_config
                from modelport.settings import Settings

                config = scorer_config(Settings(), log=False)
            self._process = ScoringProcess(config)
        return self._process

    async def close_scoring(self) -> None:
        self._threads.close()
        if self._process is not None:
            await self._process.close()

    # -- repository -----------------------------------------------------------------------------

    def repository_index(self) -> list[dict[str, Any]]:
        loaded = set(self.pool.loaded())
        rows = []
        for model, routes in sorted(self.pool.models().items()):
            for number in sorted(set(routes.values())):
                rows.append(
                    {
                        "name": model,
                        "version": str(number),
                        "state": "READY" if (model, number) in loaded else "UNAVAILABLE",
                        "reason": self.pool.failures[f"{model}@{number}"].reason
                        if f"{model}@{number}" in self.pool.failures
                        else "",
                    }
                )
        return rows

    async def load(self, ref: ModelRef) -> None:
        await self.loaded(ref)

    def unload(self, ref: ModelRef) -> None:
        model = ref.name
        self.resolve(ref)  # 404 for unknown models
        self.pool.unload(model)
        for key in [k for k in self._batchers if k[0] == model]:
            self._batchers.pop(key)

    def statistics(self, ref: ModelRef | None) -> list[dict[str, Any]]:
        keys = [(ref.name, self.resolve(ref))] if ref is not None else sorted(self.stats)
        result = []
        for key in keys:
            stats = self.stats.get(key, ModelStats())
            batcher = self._batchers.get(key)
            result.append(
                {
                    "name": key[0],
                    "version": str(key[1]),
                    "last_inference": stats.last_inference_ms,
                    "inference_count": batcher[1].rows if batcher else 0,
                    "execution_count": batcher[1].batches if batcher else 0,
                    "inference_stats": {
                        "success": {"count": stats.success, "ns": stats.success_ns},
                        "fail": {"count": stats.failure, "ns": stats.failure_ns},
                    },
                    "flagged_requests": stats.flagged_requests,
                    "rejected_requests": stats.rejected_requests,
                }
            )
        return result


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))  # 42.0 sent as a float and 42 sent as an int are the same customer
    return str(value)
