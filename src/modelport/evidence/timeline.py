"""Pure folds over audit records: what ``model@alias`` pointed at, which release ran on it, and which
approved change put it there — at a moment T.

The audit log is the record that cannot be edited unnoticed (registry/audit.py), so "what served at T"
is answered from it rather than from the mutable alias, release and approval tables. Every function here
takes records (any order, any targets: the others are skipped) and a time; none reads a database.
The console's audit page (ui/audit.py) and evidence bundles (evidence/build.py) share them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from modelport.registry.audit import AuditRecord

__all__ = [
    "MOVES",
    "AliasState",
    "Change",
    "aliases_of",
    "approval_of",
    "changes_at",
    "release_at",
    "served_at",
]

# The audited actions that point an alias at a version (``after.version``) or take it away.
MOVES = ("alias.set", "alias.rollback", "release.promote")
_REMOVE = "alias.remove"
_STARTS = ("release.start", "release.change")  # ``after`` is the running release's state
_ENDS = ("release.stop", "release.rollback", "release.auto-rollback", "release.promote")


@dataclass(frozen=True, slots=True)
class AliasState:
    """What ``model@alias`` pointed at at a moment, and the audit record that put it there."""

    version: int | None  # None: the alias did not exist (never set, or removed)
    record: AuditRecord | None


def _before(records: Iterable[AuditRecord], target: str, at: datetime) -> list[AuditRecord]:
    return sorted((r for r in records if r.target == target and r.at <= at), key=lambda r: r.seq)


def served_at(records: Iterable[AuditRecord], target: str, at: datetime) -> AliasState:
    """The version ``target`` (``model@alias``) pointed at at ``at``: the last alias move recorded at
    or before it. ``records`` may hold other targets and actions; they are skipped."""
    state = AliasState(None, None)
    for record in _before(records, target, at):
        if record.action in MOVES and isinstance(record.after, dict):
            version = record.after.get("version")
            if isinstance(version, int) and not isinstance(version, bool):
                state = AliasState(version, record)
        elif record.action == _REMOVE:
            state = AliasState(None, record)
    return state


def release_at(records: Iterable[AuditRecord], target: str, at: datetime) -> AuditRecord | None:
    """The ``release.start``/``release.change`` record of the release running on ``target`` at ``at``
    (its ``after`` holds the arms, weight, started by and at), or None when none was running."""
    running: AuditRecord | None = None
    for record in _before(records, target, at):
        if record.action in _STARTS and isinstance(record.after, dict):
            running = record
        elif record.action in _ENDS or record.action == _REMOVE:
            running = None
    return running


def aliases_of(records: Iterable[AuditRecord], name: str) -> list[str]:
    """Every alias of model ``name`` that an audited move, removal or release ever named, sorted."""
    found = set()
    for record in records:
        model, sep, alias = record.target.partition("@")
        if model == name and sep and (record.action in (*MOVES, _REMOVE, *_STARTS, *_ENDS)):
            found.add(alias)
    return sorted(found)


@dataclass(frozen=True, slots=True)
class Change:
    """A change of an approval-protected alias, as its audit records tell it up to T."""

    id: int
    target: str
    action: str
    payload: dict[str, Any]
    requested_by: str
    requested_at: datetime
    status: str  # pending, approved, rejected, expired, applied, failed — at T
    decided_by: str | None = None
    decided_at: datetime | None = None
    reason: str | None = None
    detail: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "change": self.id,
            "target": self.target,
            "action": self.action,
            "payload": self.payload,
            "requested_by": self.requested_by,
            "requested_at": self.requested_at.isoformat(),
            "status": self.status,
            "decided_by": self.decided_by,
            "decided_at": None if self.decided_at is None else self.decided_at.isoformat(),
            "reason": self.reason,
            "detail": self.detail,
        }


def changes_at(records: Iterable[AuditRecord], target: str, at: datetime) -> list[Change]:
    """The changes requested on ``target`` up to ``at``, each in its state at ``at``, oldest first."""
    changes: dict[int, Change] = {}
    for record in _before(records, target, at):
        after = record.after if isinstance(record.after, dict) else {}
        number = after.get("change")
        if not record.action.startswith("approval.") or not isinstance(number, int):
            continue
        if record.action == "approval.request":
            payload = {k: v for k, v in after.items() if k not in ("change", "action")}
            changes[number] = Change(
                number, target, str(after.get("action", "")), payload, record.actor, record.at, "pending"
            )
            continue
        known = changes.get(number)
        if known is None:
            continue
        if record.action in ("approval.approve", "approval.reject"):
            reason = after.get("reason")
            changes[number] = replace(
                known,
                status="approved" if record.action == "approval.approve" else "rejected",
                decided_by=record.actor,
                decided_at=record.at,
                reason=reason if isinstance(reason, str) else None,
            )
        elif record.action in ("approval.applied", "approval.failed", "approval.expired"):
            detail = after.get("detail")
            changes[number] = replace(
                known,
                status=record.action.removeprefix("approval."),
                detail=detail if isinstance(detail, str) and detail else None,
            )
    return sorted(changes.values(), key=lambda c: c.id)


def approval_of(changes: list[Change], record: AuditRecord | None) -> Change | None:
    """The approved change that ``record`` (an alias move or a release start) applied, if any: an
    applied change is recorded with the actor ``REQUESTER+APPROVER`` (releases/manager.py), so it is the
    newest change of that requester decided by that approver before the record."""
    if record is None or "+" not in record.actor:
        return None
    requester, _, approver = record.actor.rpartition("+")
    for change in reversed(changes):
        if (
            change.requested_by == requester
            and change.decided_by == approver
            and change.decided_at is not None
            and change.decided_at <= record.at
            and change.status in ("approved", "applied")
        ):
            return change
    return None
