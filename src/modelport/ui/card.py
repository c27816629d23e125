"""The evidence a version carries, folded for the Version page, and its printable model card,
``/ui/models/{name}/versions/{number}/card`` (docs/console.md, "A version and its model card").

Everything shown was *recorded* — nothing is recomputed and no model is loaded in the serving process:

- the ONNX twin's **equivalence proof**, from the version's ``conversion`` record (registration, or the
  newest ``doctor --fix``): rows compared, worst deviation, rows over tolerance, label mismatches, ties;
- the **golden cases**: the first :data:`GOLDEN_SHOWN` stored rows and the answers recorded for them;
- the **doctor verdict** — does the version still reproduce its golden cases? ``modelport doctor``
  prints its results and stores none, so the page shows the newest *stored* replay: the "golden cases"
  check of the newest validation report (when, by whom, and whether it ran in this server's library
  environment), then what this server process saw when it warmed the version up (a version that does
  not reproduce its golden cases is refused before traffic), then the ``doctor --fix`` migrations
  recorded in the lineage;
- for the card, the registration metrics and the reference profile's accuracy.

The folding is pure (:func:`proof_of`, :func:`golden_of`, :func:`doctor_of`), tested without a server.
"""

from __future__ import annotations

import asyncio
import functools
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from modelport.environment import fingerprint
from modelport.errors import ModelNotFound
from modelport.registry.names import ModelRef

if TYPE_CHECKING:
    from modelport.registry.records import VersionRecord
    from modelport.serving.worker import Worker
    from modelport.ui.routes import Console, Page, UIRequest

__all__ = [
    "GOLDEN_SHOWN",
    "Doctor",
    "Evidence",
    "Golden",
    "Proof",
    "doctor_of",
    "evidence",
    "golden_of",
    "lineage_of",
    "page",
    "proof_of",
]

GOLDEN_SHOWN = 10  # golden rows on the page: enough to read them, bounded whatever was recorded
_TEXT = 120  # a recorded cell longer than this is cut
_LINEAGE_TEXT = 4000  # a lineage entry (training parameters: a few hundred bytes) longer than this is cut


def _cell(value: Any, limit: int = _TEXT) -> str:
    if value is None:
        return "missing"
    if isinstance(value, float):
        return f"{value:.6g}"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def lineage_of(version: VersionRecord) -> list[tuple[str, str]]:
    """The lineage as (name, JSON text) pairs; the migrations are shown with the doctor verdict."""
    return [(str(k), _cell(v, _LINEAGE_TEXT)) for k, v in version.lineage.items() if k != "migrations"]


@dataclass(frozen=True, slots=True)
class Proof:
    """The ONNX twin's equivalence proof as recorded (``numbers`` empty when no comparison ran)."""

    status: str  # "equivalent", "not_equivalent", "failed", "not_needed", or "not recorded"
    reason: str
    converter: str
    numbers: tuple[tuple[str, str], ...]  # (what, value), in the order a reader checks them

    @property
    def verdict(self) -> str:
        return {
            "equivalent": "equivalent: the ONNX twin serves",
            "not_equivalent": "not equivalent: the native model serves",
            "failed": "conversion failed: the native model serves",
            "not_needed": "not needed: the model was registered as ONNX",
        }.get(self.status, self.status)


def proof_of(conversion: dict[str, Any]) -> Proof:
    proof = conversion.get("proof")
    numbers: list[tuple[str, str]] = []
    if isinstance(proof, dict):
        labelled = (
            ("rows", "Rows compared"),
            ("tolerance", "Tolerance"),
            ("max_abs_diff", "Largest deviation"),
            ("rows_over_tolerance", "Rows over tolerance"),
            ("label_mismatches", "Label mismatches"),
            ("ties", "Ties (labels that may differ)"),
        )
        for key, label in labelled:
            if key in proof:
                value = proof[key]
                shown = f"{value:.2e}" if key in ("tolerance", "max_abs_diff") else _cell(value)
                numbers.append((label, shown))
    return Proof(
        str(conversion.get("status") or "not recorded"),
        str(conversion.get("reason") or ""),
        str(conversion.get("converter") or ""),
        tuple(numbers),
    )


@dataclass(frozen=True, slots=True)
class Golden:
    """The first stored golden rows: inputs and the answer recorded for each."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    answers: tuple[str, ...]
    answer_heading: str
    total: int
    computed_with: str


def golden_of(golden: dict[str, Any], limit: int = GOLDEN_SHOWN) -> Golden:
    rows = golden.get("rows") if isinstance(golden.get("rows"), list) else []
    assert isinstance(rows, list)
    outputs = golden.get("outputs") if isinstance(golden.get("outputs"), dict) else {}
    assert isinstance(outputs, dict)
    shown = rows[:limit]
    if "values" in outputs:
        heading = "Recorded value"
        answers = [_cell(v) for v in outputs["values"][:limit]]
    else:
        heading = "Recorded label (probability)"
        labels, probabilities = outputs.get("labels", []), outputs.get("probabilities", [])
        answers = []
        for index, label in enumerate(labels[:limit]):
            row = probabilities[index] if index < len(probabilities) else []
            top = max((p for p in row if isinstance(p, int | float)), default=None)
            answers.append(_cell(label) + ("" if top is None else f" ({top:.3f})"))
    return Golden(
        tuple(str(c) for c in golden.get("columns", [])),
        tuple(tuple(_cell(v) for v in row) for row in shown),
        tuple(answers),
        heading,
        len(rows),
        str(golden.get("computed_with") or ""),
    )


@dataclass(frozen=True, slots=True)
class Doctor:
    """Does the version still reproduce its golden cases — from stored and live evidence only."""

    verdict: str  # "reproduces", "does not reproduce", "not checked yet"
    ok: bool | None
    source: str  # what the verdict is, in words
    taken: str  # when it was taken (UTC), "" when never
    here: bool | None  # taken in this server's library environment (None: unknown)
    detail: str
    warmup: str  # what this server process saw when it loaded the version
    migrations: tuple[str, ...]  # `doctor --fix` re-conversions recorded in the lineage


def doctor_of(
    version: VersionRecord,
    reports: list[dict[str, Any]],
    environment_hash: str,
    *,
    loaded: bool,
    failure: tuple[str, float] | None,
) -> Doctor:
    """``reports`` newest first; ``failure`` is this server's (reason, time) when it refused the version."""
    verdict, ok, source, taken, here, detail = "not checked yet", None, "", "", None, ""
    for report in reports:
        body = report.get("report")
        checks = body.get("checks") if isinstance(body, dict) else None
        golden = next(
            (c for c in checks or [] if isinstance(c, dict) and c.get("name") == "golden cases"), None
        )
        if golden is None:
            continue
        ok = bool(golden.get("passed"))
        verdict = "reproduces" if ok else "does not reproduce"
        source = (
            f"the golden-cases check of validation report #{report.get('id')} (by {report.get('created_by')})"
        )
        taken = str(report.get("created_at", ""))[:16].replace("T", " ")
        here = report.get("environment_hash") == environment_hash
        failures = golden.get("failures") or []
        detail = str(golden.get("detail") or "") + (f"; first failure: {failures[0]}" if failures else "")
        break
    if failure is not None:
        reason, at = failure
        when = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M")
        warmup = f"refused by this server at {when} UTC: {reason}"
    elif loaded:
        warmup = "loaded by this server, which replayed its golden cases and got the recorded answers"
    else:
        warmup = "not loaded by this server process (it replays the golden cases when it loads a version)"
    migrations = tuple(
        f"{m.get('at', '?')} by {m.get('by', '?')}: {m.get('action', '')} — {m.get('proof', '')}"
        for m in version.lineage.get("migrations", [])
        if isinstance(m, dict)
    )
    return Doctor(verdict, ok, source, taken, here, detail, warmup, migrations)


@functools.cache
def _here() -> str:
    # The library versions of this process do not change while it runs: read them once.
    return fingerprint()


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the Version page and the card show of one version."""

    version: VersionRecord
    reports: list[dict[str, Any]]
    proof: Proof
    golden: Golden
    doctor: Doctor
    environment_hash: str

    def values(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "reports": self.reports,
            "proof": self.proof,
            "golden": self.golden,
            "doctor": self.doctor,
            "environment_hash": self.environment_hash,
            "lineage": lineage_of(self.version),
        }


def evidence(worker: Worker, name: str, number: int) -> Evidence:
    """Read on a thread (the caller's ``to_thread``): two queries and this process's pool state."""
    registry = worker.registry
    version = registry.get(ModelRef(name, version=number))  # VersionNotFound: 404
    reports = registry.store.validation.reports(name, number)
    pool = worker.plane.pool
    refused = pool.failures.get(version.ref)
    here = _here()
    doctor = doctor_of(
        version,
        reports,
        here,
        loaded=pool.is_loaded(name, number),
        failure=None if refused is None else (refused.reason, refused.at),
    )
    return Evidence(version, reports, proof_of(version.conversion), golden_of(version.golden), doctor, here)


def _metrics(version: VersionRecord, profile: dict[str, Any] | None) -> list[tuple[str, str]]:
    metrics = [(str(k), _cell(v)) for k, v in (version.lineage.get("metrics") or {}).items()]
    if profile:
        if profile.get("accuracy") is not None:
            metrics.append(("reference accuracy (registration sample)", f"{profile['accuracy']:.4f}"))
        if profile.get("log_loss") is not None:
            metrics.append(("reference log loss (registration sample)", f"{profile['log_loss']:.4f}"))
        if profile.get("rows") is not None:
            metrics.append(("reference sample rows", _cell(profile["rows"])))
    return metrics


def _card(worker: Worker, name: str, number: int) -> tuple[Evidence, list[tuple[str, str]]]:
    found = evidence(worker, name, number)
    profile = worker.registry.store.monitoring.profiles(name).get(number)
    return found, _metrics(found.version, profile)


async def page(console: Console, request: UIRequest) -> Page:
    name = request.params["name"]
    if not request.principal.sees(name):  # outside the key's patterns: as if it did not exist
        raise ModelNotFound(f"no model named {name!r}")
    number = int(request.params["number"])
    found, metrics = await asyncio.to_thread(_card, console.app.worker, name, number)
    version = found.version
    tags = {k.lower().replace(" ", "_").replace("-", "_"): v for k, v in version.tags.items()}
    intended = tags.get("intended_use") or tags.get("use") or version.description
    return console.render(
        request,
        "card.html",
        **found.values(),
        metrics=metrics,
        params=[(str(k), _cell(v)) for k, v in (version.lineage.get("params") or {}).items()],
        training=[(k, v) for k, v in lineage_of(version) if k not in ("metrics", "params")],
        intended=intended,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
    )
