"""The audit trail: append-only, hash-chained records of every change (docs/security.md).

Each record's ``hash`` is SHA-256 over the previous record's hash and the record's canonical JSON
(sequence number, time, actor, action, target, before, after). :func:`append` runs inside the
transaction of the change it describes, so a change whose record cannot be written does not happen.
Appends are serialised: SQLite's ``BEGIN IMMEDIATE`` does it already, PostgreSQL locks the one
``registry_state`` row, which also holds the chain's head (so deleting the newest records is detected
too). :func:`verify` recomputes everything and names the first record that does not match.

When a record cannot be written, the change fails with :data:`NOT_WRITTEN`, a fixed message: the
database's own words (a trigger's text, a table name, a lock) go to the operator's log only, never into
the error a client or an approver reads.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Select, select, update
from sqlalchemy.exc import SQLAlchemyError

from modelport.errors import AuditFailure, brief
from modelport.registry.schema import audit_log, registry_state

__all__ = ["GENESIS", "NOT_WRITTEN", "AuditRecord", "Verification", "append", "records", "verify"]

GENESIS = "0" * 64
NOT_WRITTEN = "the change was not applied: its audit record could not be written"

log = logging.getLogger("modelport.registry")


@dataclass(frozen=True, slots=True)
class AuditRecord:
    seq: int
    at: datetime
    actor: str
    action: str
    target: str
    before: Any
    after: Any
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "before": self.before,
            "after": self.after,
            "hash": self.hash,
        }


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    count: int
    head: str
    problem: str = ""
    seq: int | None = None


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _digest(
    prev_hash: str, seq: int, at: datetime, actor: str, action: str, target: str, before: Any, after: Any
) -> str:
    body = json.dumps(
        {
            "seq": seq,
            "at": _utc(at).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "actor": actor,
            "action": action,
            "target": target,
            "before": before,
            "after": after,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        default=str,
    )
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def _plain(value: Any) -> Any:
    """JSON-round-tripped, as the database will hand it back (so the hash is reproducible)."""
    return None if value is None else json.loads(json.dumps(value, default=str))


def append(
    conn: Connection,
    *,
    actor: str,
    action: str,
    target: str,
    before: Any = None,
    after: Any = None,
    is_sqlite: bool,
) -> AuditRecord:
    """Append one record inside the caller's (write) transaction."""
    head = select(registry_state.c.audit_seq, registry_state.c.audit_hash).where(registry_state.c.id == 1)
    if not is_sqlite:
        head = head.with_for_update()
    last_seq, prev_hash = conn.execute(head).one()
    seq = int(last_seq) + 1
    # Whole microseconds, as both databases store them; the stored (cut) actor and target are hashed.
    at = datetime.now(UTC)
    actor, target = actor[:200], target[:300]
    before, after = _plain(before), _plain(after)
    digest = _digest(prev_hash, seq, at, actor, action, target, before, after)
    try:
        _write(conn, seq, at, actor, action, target, before, after, prev_hash, digest)
    except SQLAlchemyError as exc:
        cause = brief(getattr(exc, "orig", None) or exc)
        log.error("audit record %d (%s on %r) could not be written: %s", seq, action, target[:100], cause)
        raise AuditFailure(NOT_WRITTEN) from None
    return AuditRecord(seq, at, actor, action, target, before, after, prev_hash, digest)


def _write(
    conn: Connection,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    target: str,
    before: Any,
    after: Any,
    prev_hash: str,
    digest: str,
) -> None:
    conn.execute(
        audit_log.insert().values(
            seq=seq,
            at=at,
            actor=actor,
            action=action,
            target=target,
            before=before,
            after=after,
            prev_hash=prev_hash,
            hash=digest,
        )
    )
    conn.execute(
        update(registry_state).where(registry_state.c.id == 1).values(audit_seq=seq, audit_hash=digest)
    )


def _record(row: Any) -> AuditRecord:
    return AuditRecord(
        int(row.seq),
        _utc(row.at),
        row.actor,
        row.action,
        row.target,
        row.before,
        row.after,
        row.prev_hash,
        row.hash,
    )


def records(
    conn: Connection,
    *,
    action: str | None = None,
    target: str | None = None,
    actor: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before: int | None = None,
    limit: int | None = None,
) -> list[AuditRecord]:
    """Records in sequence order, optionally filtered (``target`` matches a prefix: ``credit`` finds
    ``credit@production``; ``until`` is inclusive; ``before`` keeps sequence numbers below it, so the
    console pages newest first on the primary key instead of an offset)."""
    query: Select[Any] = select(audit_log).order_by(audit_log.c.seq)
    if action is not None:
        query = query.where(audit_log.c.action == action)
    if target is not None:
        query = query.where(audit_log.c.target.startswith(target, autoescape=True))
    if actor is not None:
        query = query.where(audit_log.c.actor == actor)
    if since is not None:
        query = query.where(audit_log.c.at >= since)
    if until is not None:
        query = query.where(audit_log.c.at <= until)
    if before is not None:
        query = query.where(audit_log.c.seq < before)
    if limit is not None:
        query = query.order_by(None).order_by(audit_log.c.seq.desc()).limit(limit)
        return sorted((_record(r) for r in conn.execute(query)), key=lambda r: r.seq)
    return [_record(r) for r in conn.execute(query)]


def verify(conn: Connection) -> Verification:
    """Recompute the chain; the first record that was edited, deleted, inserted or reordered fails."""
    head_seq, head_hash = conn.execute(
        select(registry_state.c.audit_seq, registry_state.c.audit_hash).where(registry_state.c.id == 1)
    ).one()
    prev_hash, expected_seq, count = GENESIS, 1, 0
    for row in conn.execute(select(audit_log).order_by(audit_log.c.seq)):
        record = _record(row)
        if record.seq != expected_seq:
            missing = "missing" if record.seq > expected_seq else "out of order"
            return Verification(False, count, prev_hash, f"record {expected_seq} is {missing}", expected_seq)
        if record.prev_hash != prev_hash:
            return Verification(
                False,
                count,
                prev_hash,
                f"record {record.seq} does not follow record {record.seq - 1}",
                record.seq,
            )
        recomputed = _digest(
            prev_hash,
            record.seq,
            record.at,
            record.actor,
            record.action,
            record.target,
            record.before,
            record.after,
        )
        if recomputed != record.hash:
            return Verification(False, count, prev_hash, f"record {record.seq} was edited", record.seq)
        prev_hash, expected_seq, count = record.hash, expected_seq + 1, count + 1
    if count != int(head_seq) or prev_hash != head_hash:
        return Verification(
            False,
            count,
            prev_hash,
            f"records {count + 1}–{int(head_seq)} were deleted (the chain ends at {count}, "
            f"{int(head_seq)} were written)",
            count + 1,
        )
    return Verification(True, count, prev_hash)
