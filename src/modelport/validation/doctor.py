"""`modelport doctor`: does every stored version still compute what it computed at registration, in
*this* environment? Each artifact of each version is loaded (digest-verified) with the libraries
installed now, its golden cases are replayed, and the answers are compared with the ground truth
recorded at registration. Run it after a dependency bump (docs/upgrades.md); it fails when a version
that traffic reaches by name no longer serves correctly: the version of any alias (whatever it is
called: `production`, `live`, `2026-Q3`), the newest version (``NAME@latest``, the default route of a
model without `production`) and the canary of a release. A version reached only by its number or its
label — a client that pinned it chose it — and a shadow, whose answers no client sees, are reported
but do not fail the run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from modelport.environment import snapshot
from modelport.errors import ModelportError, brief
from modelport.progress import Progress, no_progress
from modelport.registry.records import ModelRecord, VersionRecord
from modelport.registry.service import GOLDEN_TOLERANCE, Registry
from modelport.releases.policy import Release
from modelport.runtimes.base import Prediction
from modelport.runtimes.equivalence import compare

__all__ = ["Diagnosis", "diagnose", "environment_change", "failing", "fix"]

_SHOWN = ("python", "numpy", "scikit-learn", "onnxruntime", "xgboost", "xgboost-cpu", "lightgbm", "skops")


@dataclass(frozen=True, slots=True)
class Diagnosis:
    ref: str
    role: str  # "onnx" or "native"
    format: str
    serving: bool  # the artifact the server answers with
    aliases: tuple[str, ...]
    routes: tuple[str, ...]  # the names whose traffic it answers: its aliases, `latest`, `ALIAS (canary)`
    recorded: str  # what changed since registration, "recorded → now"; "" when nothing did
    max_deviation: float | None
    label_mismatches: int
    verdict: str  # "ok", "drift" (answers differ) or "fails" (cannot load or score)
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def environment_change(recorded: dict[str, Any], current: dict[str, Any]) -> str:
    """The tracked versions that differ, as ``name recorded → current``."""
    before = {"python": recorded.get("python"), **recorded.get("packages", {})}
    after = {"python": current.get("python"), **current.get("packages", {})}
    changes = [
        f"{name} {before.get(name) or '—'} → {after.get(name) or '—'}"
        for name in _SHOWN
        if before.get(name) != after.get(name) and (before.get(name) or after.get(name))
    ]
    return ", ".join(changes)


def _expected(version: VersionRecord) -> Prediction:
    outputs = version.golden["outputs"]
    if "values" in outputs:
        return Prediction(
            values=np.array([np.nan if v is None else v for v in outputs["values"]], dtype=np.float64)
        )
    return Prediction(
        labels=np.array(outputs["labels"], dtype=object),
        probabilities=np.array(outputs["probabilities"], dtype=np.float64),
    )


def _check(
    registry: Registry, version: VersionRecord, role: str, current: dict[str, Any], routes: tuple[str, ...]
) -> Diagnosis:
    artifact = version.artifact(role)
    assert artifact is not None
    serving_role = "onnx" if version.serving_format == "onnx" else "native"
    common: dict[str, Any] = {
        "ref": version.ref,
        "role": role,
        "format": artifact.format,
        "serving": role == serving_role,
        "aliases": tuple(version.aliases),
        "routes": routes,
        "recorded": environment_change(version.environment, current),
    }
    try:
        loaded = registry.load(version, role=role)
    except ModelportError as exc:
        return Diagnosis(**common, max_deviation=None, label_mismatches=0, verdict="fails", reason=str(exc))
    except OSError as exc:  # a damaged store must name the version, not stop the whole check
        reason = f"cannot read the {role} artifact: {brief(exc)}"
        return Diagnosis(**common, max_deviation=None, label_mismatches=0, verdict="fails", reason=reason)
    try:
        golden = version.golden
        got = loaded.predict_batch(loaded.signature.rows_batch(golden["columns"], golden["rows"]))
    except ModelportError as exc:
        return Diagnosis(**common, max_deviation=None, label_mismatches=0, verdict="fails", reason=str(exc))
    finally:
        loaded.close()
    report = compare(_expected(version), got, GOLDEN_TOLERANCE)
    verdict = "ok" if report.equivalent else "drift"
    reason = "" if report.equivalent else report.summary()
    return Diagnosis(
        **common,
        max_deviation=report.max_abs_diff,
        label_mismatches=report.label_mismatches,
        verdict=verdict,
        reason=reason,
    )


def diagnose(
    registry: Registry, model: str | None = None, *, progress: Progress = no_progress
) -> list[Diagnosis]:
    """Every artifact of every version (of ``model``, or of all models), checked in this environment;
    ``progress`` hears each artifact as its check starts."""
    current = snapshot()
    names = [model] if model is not None else [m.name for m in registry.models()]
    releases = registry.store.releases.releases_table()
    work = []
    for name in names:
        routes = _routes(registry.model(name), releases.get(name, {}))
        for version in registry.versions(name):
            for artifact in sorted(version.artifacts, key=lambda a: a.role != "onnx"):
                work.append((version, artifact.role, routes.get(version.number, ())))
    results = []
    for done, (version, role, version_routes) in enumerate(work):
        progress(f"replaying the golden cases of {version.ref} ({role})", done, len(work))
        results.append(_check(registry, version, role, current, version_routes))
    return results


def _routes(model: ModelRecord, releases: dict[str, Release]) -> dict[int, tuple[str, ...]]:
    """Version number → the names whose traffic it answers (see the module docstring)."""
    routes: dict[int, list[str]] = {}
    for alias, number in sorted(model.aliases.items()):
        routes.setdefault(number, []).append(alias)
    routes.setdefault(model.latest_version, []).append("latest")
    for alias, release in sorted(releases.items()):
        if release.canary is not None:
            routes.setdefault(release.canary, []).append(f"{alias} (canary)")
    return {number: tuple(names) for number, names in routes.items()}


def failing(diagnoses: list[Diagnosis]) -> list[Diagnosis]:
    """What makes `modelport doctor` fail: the artifact that serves a version some name routes traffic
    to, when it no longer reproduces its golden cases."""
    return [d for d in diagnoses if d.serving and d.routes and d.verdict != "ok"]


def fix(registry: Registry, diagnoses: list[Diagnosis], actor: str) -> list[tuple[str, str]]:
    """Re-make the ONNX twin of every version whose twin serves wrongly while its native artifact still
    reproduces the golden cases: convert the native model afresh with this environment's converters,
    prove the new twin equivalent (golden rows plus rows sampled from the signature, as at
    registration), store it and record the migration. Returns ``(ref, outcome)`` pairs."""
    by_ref: dict[str, dict[str, Diagnosis]] = {}
    for diagnosis in diagnoses:
        by_ref.setdefault(diagnosis.ref, {})[diagnosis.role] = diagnosis
    outcomes = []
    for ref, roles in by_ref.items():
        twin, native = roles.get("onnx"), roles.get("native")
        broken = [d for d in roles.values() if d.serving and d.verdict != "ok"]
        if not broken or (twin is not None and twin.verdict == "ok"):
            continue  # nothing serves wrongly, or the twin is fine (serving from native by design)
        if native is None or native.verdict != "ok":
            outcomes.append((ref, "cannot fix: no native artifact that still reproduces the golden cases"))
            continue
        outcomes.append((ref, _reconvert(registry, registry.get(ref), actor)))
    return outcomes


def _reconvert(registry: Registry, version: VersionRecord, actor: str) -> str:
    import pandas as pd

    from modelport.registry import intake
    from modelport.registry.records import ArtifactRecord
    from modelport.registry.registration import _convert, twin_details

    loaded = registry.load(version, role="native")
    try:
        estimator = getattr(loaded.runtime, "estimator", None)
        if estimator is None:
            return f"cannot fix: re-converting {loaded.runtime.format} models is not supported yet"
        native = intake.from_object(estimator)
        golden = version.golden
        frame = pd.DataFrame(golden["rows"], columns=golden["columns"])
        conversion, blob = _convert(native, loaded.signature, frame, loaded.runtime, registry.settings)
    finally:
        loaded.close()
    if blob is None:
        return f"cannot fix: the new twin is {conversion['status']}: {conversion['reason']}"
    with registry.artifacts.staging() as staging:
        digest = staging.put(blob)
        record = ArtifactRecord("onnx", "onnx", digest, len(blob), twin_details(native))
        migration = {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "by": actor,
            "action": "re-converted the native artifact to a new ONNX twin",
            "environment": snapshot(),
            "proof": conversion.get("reason", ""),
        }
        registry.store.replace_twin(
            version.model,
            version.number,
            artifact=record,
            conversion=conversion,
            migration=migration,
            actor=actor,
        )
    return f"fixed: new ONNX twin sha256:{digest[:12]}…, {conversion['reason']}"
