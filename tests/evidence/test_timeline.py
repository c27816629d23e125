"""The pure folds over audit records, on hand-made records (no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from modelport.evidence.timeline import aliases_of, approval_of, changes_at, release_at, served_at
from modelport.registry.audit import AuditRecord

START = datetime(2026, 1, 1, tzinfo=UTC)


def _records(*steps: tuple[str, str, str, Any]) -> list[AuditRecord]:
    return [
        AuditRecord(seq, START + timedelta(minutes=seq), actor, action, target, None, after, "", "")
        for seq, (actor, action, target, after) in enumerate(steps, 1)
    ]


RECORDS = _records(
    ("a", "alias.set", "m@prod", {"version": 1}),  # 1
    ("alice", "approval.request", "m@prod", {"change": 7, "action": "release", "canary": 2, "weight": 5}),
    ("bob", "approval.approve", "m@prod", {"change": 7, "action": "release", "requested_by": "alice"}),
    ("alice+bob", "release.start", "m@prod", {"version": 1, "canary": 2, "weight": 5.0}),  # 4
    ("bob", "approval.applied", "m@prod", {"change": 7, "detail": ""}),
    ("x", "alias.set", "m2@prod", {"version": 9}),  # 6: another model, same prefix
    ("c", "release.stop", "m@prod", {"version": 1}),  # 7
    ("c", "alias.remove", "m@prod", None),  # 8
)


def _at(seq: int) -> datetime:
    return START + timedelta(minutes=seq)


def test_release_at_follows_starts_and_ends() -> None:
    assert release_at(RECORDS, "m@prod", _at(3)) is None
    running = release_at(RECORDS, "m@prod", _at(6))
    assert running is not None and running.seq == 4
    assert release_at(RECORDS, "m@prod", _at(7)) is None


def test_changes_and_the_approval_behind_a_state() -> None:
    [pending] = changes_at(RECORDS, "m@prod", _at(2))
    assert pending.status == "pending" and pending.payload == {"canary": 2, "weight": 5}
    [applied] = changes_at(RECORDS, "m@prod", _at(8))
    assert applied.status == "applied" and applied.decided_by == "bob" and applied.requested_by == "alice"
    running = release_at(RECORDS, "m@prod", _at(4))
    assert approval_of(changes_at(RECORDS, "m@prod", _at(4)), running) is not None
    assert approval_of(changes_at(RECORDS, "m@prod", _at(4)), RECORDS[0]) is None  # no second key


def test_aliases_and_removal() -> None:
    assert aliases_of(RECORDS, "m") == ["prod"]
    assert served_at(RECORDS, "m@prod", _at(7)).version == 1
    assert served_at(RECORDS, "m@prod", _at(8)).version is None
