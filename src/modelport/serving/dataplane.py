"""The data plane: the protocol-free core that REST (and later gRPC and batch) call.

It resolves a model and a version selector (number, alias, or none = default route) through the
pool, converts tensors to the signature's columns, scores through the version's batcher and returns
tensors plus the version that answered. It knows nothing of HTTP, JSON or protobuf.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelport._version import __version__
from modelport.errors import InputMismatch, InvalidInput, ModelportError
from modelport.monitoring.metrics import LOCAL, METRICS
from modelport.monitoring.predictions import LogPolicy, PredictionLog
from modelport.monitoring.tracing import Timeline
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
from modelport.signature import Batch

__all__ = ["DataPlane", "InferenceResult", "ModelStats"]

SERVER_NAME = "modelport"
EXTENSIONS = ["binary_tensor_data", "model_repository", "statistics"]


@dataclass(slots=True)
class InferenceResult:
    model: str
    version: int
    outputs: list[Tensor]
    flags: dict[str, dict[str, int]] = field(default_factory=dict)
    rows: int = 0


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

    # -- health and metadata --------------------------------------------------------------------

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return not self.draining

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS}

    def resolve(self, model: str, selector: str | None) -> int:
        # Routes are refreshed in the background (RestApp._poll): no database read per request.
        return self.pool.resolve(model, selector)

    async def loaded(self, model: str, selector: str | None) -> LoadedVersion:
        return await self.loaded_number(model, self.resolve(model, selector))

    async def loaded_number(self, model: str, number: int) -> LoadedVersion:
        if self.pool.is_loaded(model, number):
            return self.pool.get(model, number)
        return await asyncio.to_thread(self.pool.get, model, number)

    async def model_metadata(self, model: str, selector: str | None) -> dict[str, Any]:
        loaded = await self.loaded(model, selector)
        signature = loaded.signature
        routes = self.pool.models().get(model, {})
        if signature.all_numeric:
            inputs: list[dict[str, Any]] = [
                {"name": "input", "datatype": "FP64", "shape": [-1, len(signature.features)]}
            ]
        else:
            inputs = []
        inputs += [
            {"name": f.name, "datatype": "FP64" if f.numeric else "BYTES", "shape": [-1]}
            for f in signature.features
        ]
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
            },
        }

    async def model_ready(self, model: str, selector: str | None) -> bool:
        try:
            loaded = await self.loaded(model, selector)
            scoring = self.batcher_for((model, loaded.version.number), loaded).scoring
            if scoring.isolated:  # ready means loaded where it scores: in the scoring process
                await asyncio.shield(self.scoring_process().prepare(loaded))
        except ModelportError:
            return False
        return not self.draining

    # -- inference ------------------------------------------------------------------------------

    async def infer(
        self,
        model: str,
        selector: str | None,
        inputs: list[Tensor],
        requested: list[str] | None = None,
        *,
        request_id: str = "",
        key_id: str = "",
        timeline: Timeline | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> InferenceResult:
        number, release, arm = self.choose(model, selector, inputs, headers)
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
            batch, rows, flags = self.validate(model, loaded, inputs)
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
                    release, model, arm, exc, seconds, lambda primary: self.validate(model, primary, inputs)
                )
            raise
        if release is not None:
            seconds = (time.perf_counter_ns() - started) / 1e9
            self.release_counts.request(
                release.release_id, arm, seconds, error=False, labels=prediction.labels
            )
            if release.shadow is not None and arm != CANARY:
                self.shadow.offer(model, release, inputs, rows, prediction, request_id, key_id)
        version = str(loaded.version.number)
        LOCAL.rows(model, version, rows)
        if self.predictions is not None and model in self.pool.log_policies:
            self.predictions.offer(
                self.log_policy(model),
                model,
                loaded.version.number,
                batch,
                prediction,
                request_id=request_id,
                key_id=key_id,
                latency_ms=(time.perf_counter_ns() - started) / 1e6,
                flags=flags,
            )
        for feature, kinds in flags.items():
            for kind, count in kinds.items():
                METRICS.flags.labels(model, version, feature, kind).inc(count)
        stats.success += 1
        stats.success_ns += time.perf_counter_ns() - started
        stats.last_inference_ms = int(time.time() * 1000)
        if timeline is not None:
            timeline.serialising = time.perf_counter_ns()
        outputs = tensors_from_prediction(prediction, loaded.signature)
        if requested:
            known = {t.name for t in outputs}
            unknown = [name for name in requested if name not in known]
            if unknown:
                raise InputMismatch(
                    f"unknown output(s) {', '.join(unknown)}; outputs are {', '.join(sorted(known))}"
                )
            outputs = [t for t in outputs if t.name in requested]
        return InferenceResult(model, loaded.version.number, outputs, flags, rows)

    def validate(
        self, model: str, loaded: LoadedVersion, inputs: list[Tensor]
    ) -> tuple[Batch, int, dict[str, dict[str, int]]]:
        """The request's columns for ``loaded``, its rows and its value flags — or InputMismatch when
        the tensors do not fit the signature or the model's policy rejects the values."""
        batch, rows, matrix = batch_from_tensors(inputs, loaded.signature)
        flags = loaded.signature.violations(batch, matrix)
        if flags and self.pool.policy(model) == "reject":
            refusal = InputMismatch(
                f"values outside what {loaded.version.ref} was trained on: "
                + loaded.signature.describe_violations(flags)
            )
            refusal.rejected = True
            raise refusal
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
        self,
        model: str,
        selector: str | None,
        inputs: list[Tensor] | None,
        headers: Mapping[str, str] | None,
    ) -> tuple[int, Release | None, str]:
        """The version that answers this request, the release it belongs to (if any) and its arm."""
        number, release, alias = self.pool.route(model, selector)
        if release is None:
            return number, None, PRIMARY
        key_value = None
        if release.sticky is not None:
            key_value = self._sticky_key(release, model, inputs or [], headers)
        arm = release.arm(model, alias, key_value)
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
        self, release: Release, model: str, inputs: list[Tensor], headers: Mapping[str, str] | None
    ) -> str | None:
        """The request's assignment key: a header's value, or a field of its first row (a named input,
        or the column of a single numeric matrix in the primary's feature order)."""
        sticky = release.sticky
        assert sticky is not None
        if sticky.source == "header":
            value = None if headers is None else headers.get(sticky.name)
            return value or None
        for tensor in inputs:
            if tensor.name == sticky.name and tensor.data.size:
                return _text(tensor.data.flat[0])
        if len(inputs) == 1 and inputs[0].data.ndim == 2 and inputs[0].data.shape[0]:
            try:
                names = self.pool.get(model, release.primary).signature.names
            except ModelportError:
                return None
            if sticky.name in names:
                return _text(inputs[0].data[0, names.index(sticky.name)])
        return None

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
            # Drop batchers of versions the pool has evicted: they would keep their runtimes alive.
            live = set(self.pool.loaded())
            for stale in [k for k in self._batchers if k not in live and k != key]:
                del self._batchers[stale]
        return entry[1]

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

    async def load(self, model: str) -> None:
        await self.loaded(model, None)

    def unload(self, model: str) -> None:
        self.resolve(model, None)  # 404 for unknown models
        self.pool.unload(model)
        for key in [k for k in self._batchers if k[0] == model]:
            self._batchers.pop(key)

    def statistics(self, model: str | None, selector: str | None) -> list[dict[str, Any]]:
        if model is not None:
            number = self.resolve(model, selector)
            keys = [(model, number)]
        else:
            keys = sorted(self.stats)
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
