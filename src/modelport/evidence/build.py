"""Evidence at time T (docs/evidence.md): what served model NAME at a moment, why, and the proof.

:func:`build_evidence` reads the audit trail up to T and folds it (evidence/timeline.py) into the
version each alias pointed at, the release running on it and the approved change that put it there;
adds the validation reports that existed at T, each serving version's lineage and model card, and —
when the caller can compute it — drift and accuracy over the windows ending at T; and writes the audit
records with the hash chain from the first record to T's last. Plain Python: the CLI and the REST
handler call it and only translate.

The audit file holds the whole chain prefix up to T's last record, but in full only this model's
records of the actions in :data:`SHOWN` (versions, aliases, releases, approvals, validation, its
policies); every run of other records is one line with the hash it started from and the hash it ended
at. The chain still verifies from genesis to the head at T — the full records are recomputed, the runs
are linked — and the bundle carries no other model's names, no key records and no webhook URLs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from modelport._version import __version__
from modelport.errors import AuditFailure, InvalidInput, ModelportError
from modelport.evidence.bundle import Bundle, canonical_json
from modelport.evidence.markdown import card, summary_markdown
from modelport.evidence.timeline import (
    Change,
    aliases_of,
    approval_of,
    changes_at,
    release_at,
    served_at,
)
from modelport.registry.audit import GENESIS, AuditRecord
from modelport.registry.names import ModelRef, check_model_name

if TYPE_CHECKING:
    from modelport.registry.records import VersionRecord
    from modelport.registry.service import Registry

__all__ = ["SHOWN", "Monitoring", "build_evidence", "local_monitoring", "parse_at"]

# The actions on the model's own targets written out in full (a prefix each); anything else — other
# models, keys, sign-outs, jobs, webhooks, erasures, actions added later — is a linked run of hashes.
SHOWN = (
    "version.",
    "alias.",
    "release.",
    "approval.",
    "validation.",
    "policy.",
    "retention.",
    "profile.",
)
_SKEW = timedelta(seconds=5)  # a T this far past the clock is refused as the future

Monitoring = Callable[[str, datetime], dict[str, Any]]
"""Drift and accuracy of model NAME over the windows ending at T (the CLI's :func:`local_monitoring`)."""


def parse_at(text: str, *, now: datetime | None = None) -> datetime:
    """T from ISO 8601 (``2026-12-06T21:46``, ``…Z``, ``…+01:00``), UTC when it names no offset, or
    ``now``."""
    text = text.strip()
    if text.lower() == "now":
        return now if now is not None else datetime.now(UTC)
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"the time must be ISO 8601 like 2026-12-06T21:46:00Z (UTC unless it names an offset) or "
            f"'now', not {text[:40]!r}"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def local_monitoring(registry: Registry) -> Monitoring:
    """Drift and accuracy computed in this process from the prediction log (pyarrow: the CLI, never a
    serving process — see monitoring/monitor.py)."""

    def compute(name: str, at: datetime) -> dict[str, Any]:
        from modelport.app import drift_settings
        from modelport.monitoring.monitor import accuracy_report, drift_report

        home, tuned = registry.settings.home.resolve(), drift_settings(registry.settings)
        moment = at.timestamp()
        return {
            "drift": drift_report(home, registry, name, settings=tuned, now=moment),
            "accuracy": accuracy_report(home, registry, name, settings=tuned, now=moment),
        }

    return compute


def _shown(record: AuditRecord, name: str) -> bool:
    model, sep, _ = record.target.partition("@")
    ours = record.target == name or (sep != "" and model == name)
    return ours and record.action.startswith(SHOWN)


def _canonical_at(moment: datetime) -> str:
    # the time exactly as registry/audit.py hashes it
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def audit_lines(records: list[AuditRecord], name: str) -> tuple[bytes, int]:
    """``audit.jsonl``: the model's records in full, every run of others as ``{"omitted": [first,
    last], "prev_hash", "hash"}``; and how many records are in full."""
    lines: list[dict[str, Any]] = []
    run: list[AuditRecord] = []
    full = 0

    def close_run() -> None:
        if run:
            lines.append(
                {"omitted": [run[0].seq, run[-1].seq], "prev_hash": run[0].prev_hash, "hash": run[-1].hash}
            )
            run.clear()

    for record in records:
        if not _shown(record, name):
            run.append(record)
            continue
        close_run()
        full += 1
        lines.append(
            {
                "seq": record.seq,
                "at": _canonical_at(record.at),
                "actor": record.actor,
                "action": record.action,
                "target": record.target,
                "before": record.before,
                "after": record.after,
                "prev_hash": record.prev_hash,
                "hash": record.hash,
            }
        )
    close_run()
    text = "".join(
        json.dumps(line, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str) + "\n"
        for line in lines
    )
    return text.encode(), full


def _when(text: str) -> datetime:
    """A stored ISO time (UTC when naive); an unreadable one counts as after any T."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return datetime.max.replace(tzinfo=UTC)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _moved(record: AuditRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {"seq": record.seq, "at": record.at.isoformat(), "actor": record.actor, "action": record.action}


def _release(record: AuditRecord | None) -> dict[str, Any] | None:
    if record is None or not isinstance(record.after, dict):
        return None
    return {**record.after, "record": _moved(record)}


def _approval(change: Change | None) -> dict[str, Any] | None:
    return None if change is None else change.to_dict()


def _lineage(version: VersionRecord, at: datetime) -> dict[str, Any]:
    migrations = version.lineage.get("migrations") or []
    return {
        "ref": version.ref,
        "uuid": version.uuid,
        "created_at": version.created_at.isoformat(),
        "creator": version.creator,
        "description": version.description,
        "tags": version.tags,
        "label": version.label,
        "serving_format": version.serving_format,
        "artifacts": [
            {"role": a.role, "format": a.format, "sha256": a.digest, "size": a.size}
            for a in version.artifacts
        ],
        "environment": version.environment,
        "conversion": version.conversion,
        "lineage": version.lineage,
        # `doctor --fix` re-makes the twin in place: those after T did not serve at T
        "migrations_after_t": [
            m for m in migrations if isinstance(m, dict) and _when(str(m.get("at", ""))) > at
        ],
        "archived_at": None if version.archived_at is None else version.archived_at.isoformat(),
    }


def _verdict(reports: list[dict[str, Any]]) -> dict[str, Any]:
    if not reports:
        return {"verdict": "no report", "report": None, "by": None, "at": None, "environment": None}
    newest = reports[0]
    return {
        "verdict": "passed" if newest["passed"] else "failed",
        "report": newest["id"],
        "by": newest["created_by"],
        "at": newest["created_at"],
        "environment": newest["environment_hash"],
    }


def build_evidence(
    registry: Registry,
    name: str,
    at: datetime,
    *,
    monitoring: Monitoring | None = None,
    monitoring_note: str = "drift and accuracy were not computed",
    now: datetime | None = None,
) -> Bundle:
    """The evidence bundle of model ``name`` at ``at`` (see the module text). ``monitoring`` computes
    drift and accuracy at T; without it ``monitoring.json`` says ``monitoring_note``. Raises
    :class:`ModelNotFound`, :class:`InvalidInput` (T in the future, or before the model existed) and
    :class:`AuditFailure` (the chain does not verify: no evidence can rest on it)."""
    check_model_name(name)
    now = now if now is not None else datetime.now(UTC)
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    model = registry.model(name)  # ModelNotFound
    if at > now + _SKEW:
        raise InvalidInput(f"{at.isoformat()} is in the future: evidence is of what already happened")
    store = registry.store
    checked = store.verify_audit()
    if not checked.ok:
        raise AuditFailure(f"the audit chain does not verify ({checked.problem}): no evidence can rest on it")
    last = store.audit_records(until=at, limit=1)
    prefix = store.audit_records(before=last[0].seq + 1) if last else []
    ours = [r for r in prefix if _shown(r, name) and r.at <= at]
    if not any(r.action == "version.register" for r in ours):
        raise InvalidInput(
            f"model {name!r} did not exist at {at.isoformat()}: it was created at "
            f"{model.created_at.isoformat()}"
        )

    serving: dict[str, Any] = {}
    approvals: dict[str, Any] = {}
    summary_aliases: dict[str, Any] = {}
    versions: set[int] = set()
    for alias in aliases_of(ours, name):
        target = f"{name}@{alias}"
        state = served_at(ours, target, at)
        running = release_at(ours, target, at)
        changes = changes_at(ours, target, at)
        moved_by, released_by = approval_of(changes, state.record), approval_of(changes, running)
        release = _release(running)
        serving[alias] = {"version": state.version, "moved": _moved(state.record), "release": release}
        approvals[alias] = {
            "changes": [c.to_dict() for c in changes],
            "version_approved_by": _approval(moved_by),
            "release_approved_by": _approval(released_by),
        }
        if state.version is not None:
            versions.add(state.version)
        for arm in ("canary", "shadow"):
            if release is not None and isinstance(release.get(arm), int):
                versions.add(release[arm])
        summary_aliases[alias] = {
            "version": state.version,
            "since": None if state.record is None else state.record.at.isoformat(),
            "moved_by": None if state.record is None else state.record.actor,
            "release": None
            if release is None
            else {k: release.get(k) for k in ("canary", "weight", "shadow", "started_by", "started_at")},
            "approved": None
            if moved_by is None
            else {
                "change": moved_by.id,
                "requested_by": moved_by.requested_by,
                "approved_by": moved_by.decided_by,
                "reason": moved_by.reason,
            },
        }

    from modelport.ui.card import golden_of, lineage_of, proof_of

    files: dict[str, bytes] = {}
    validation: dict[str, Any] = {}
    verdicts: dict[str, Any] = {}
    profiles = store.monitoring.profiles(name)
    for number in sorted(versions):
        version = registry.get(ModelRef(name, version=number))
        reports = [r for r in store.validation.reports(name, number) if _when(r["created_at"]) <= at]
        validation[str(number)] = reports
        verdicts[str(number)] = _verdict(reports)
        files[f"lineage/{number}.json"] = canonical_json(_lineage(version, at))
        files[f"cards/{number}.md"] = card(
            version,
            reports,
            proof_of(version.conversion),
            golden_of(version.golden),
            lineage_of(version),
            profiles.get(number),
        ).encode()

    if monitoring is None:
        watched: dict[str, Any] = {"included": False, "note": monitoring_note}
    else:
        try:
            watched = {"included": True, **monitoring(name, at)}
        except ModelportError as exc:  # no prediction log, no pyarrow: said in the bundle, not fatal
            watched = {"included": False, "note": f"drift and accuracy could not be computed: {exc}"}

    audit_text, full = audit_lines(prefix, name)
    head = prefix[-1].hash if prefix else GENESIS
    chain = {"records": len(prefix), "head": head, "in_full": full, "omitted": len(prefix) - full}
    summary = {
        "model": name,
        "at": at.isoformat(),
        "aliases": summary_aliases,
        "validation": verdicts,
        "monitoring": watched.get("included", False),
        "audit": chain,
    }
    generated = now.astimezone(UTC).isoformat()
    files.update(
        {
            "serving.json": canonical_json({"model": name, "at": at.isoformat(), "aliases": serving}),
            "approvals.json": canonical_json({"model": name, "at": at.isoformat(), "aliases": approvals}),
            "validation.json": canonical_json({"model": name, "at": at.isoformat(), "versions": validation}),
            "monitoring.json": canonical_json({"model": name, "at": at.isoformat(), **watched}),
            "audit.jsonl": audit_text,
            "summary.md": summary_markdown(summary, generated).encode(),
        }
    )
    header = {
        "model": name,
        "at": at.isoformat(),
        "generated_at": generated,
        "generator": {"name": "modelport", "version": __version__},
        "audit": chain,
    }
    return Bundle.assemble(header, files, summary)
