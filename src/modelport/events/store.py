"""Subscriptions, deliveries and attempts in the registry database (docs/webhooks.md).

Events come from the audit log itself, not from the write paths: each subscription keeps a cursor (the
first audit record it has not yet looked at), and :meth:`WebhookStore.enqueue` turns the records after it that
match its filters into delivery rows, moving the cursor in the same transaction. A change therefore
becomes an event exactly when its audit record commits, with no hook in any store. Rows (rather than a
bare cursor) give each event its own retries, dead letter and attempt history, and keep one stubborn
event from holding up the rest.

Deliveries are a job queue: :meth:`WebhookStore.claim` takes a due row with a conditional ``UPDATE …
WHERE lease expired`` (the row count says who won, on SQLite and PostgreSQL alike), so exactly one
worker of one replica attempts each delivery at a time; a worker that dies mid-attempt leaves it to
another once its lease runs out (at-least-once: receivers deduplicate on ``X-Modelport-Delivery``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

from sqlalchemy import Row, delete, func, select, update

from modelport.errors import InvalidInput, NotFound
from modelport.registry.audit import AuditRecord
from modelport.registry.schema import (
    audit_log,
    registry_state,
    webhook_attempts,
    webhook_deliveries,
    webhooks,
)
from modelport.registry.store import RegistryStore

__all__ = ["Attempt", "Delivery", "Subscription", "WebhookStore", "matches", "model_of"]

_PATTERN_MAX = 100
_PATTERNS_MAX = 50
_ENQUEUE_BATCH = 500
_HEAD = select(registry_state.c.audit_seq).where(registry_state.c.id == 1)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _patterns(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ("*",)
    if isinstance(value, str):
        value = [p for p in value.split(",") if p.strip()]
    if not isinstance(value, list | tuple) or not value or len(value) > _PATTERNS_MAX:
        raise InvalidInput(f"{what} must be a list of 1–{_PATTERNS_MAX} patterns")
    out: list[str] = []
    for pattern in value:
        if not isinstance(pattern, str) or not pattern.strip() or len(pattern) > _PATTERN_MAX:
            raise InvalidInput(f"each of {what} must be a pattern of 1–{_PATTERN_MAX} characters")
        if any(ord(c) < 32 for c in pattern):
            raise InvalidInput(f"{what} patterns must be printable")
        out.append(pattern.strip())
    return tuple(out)


def model_of(target: str) -> str | None:
    """The model an audit target names (``credit@production`` → ``credit``), or ``None`` for targets
    that are no model (``key:…``, ``webhook:…``)."""
    if ":" in target.split("@", 1)[0]:
        return None
    return target.split("@", 1)[0] or None


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    url: str
    actions: tuple[str, ...]
    models: tuple[str, ...]
    enabled: bool
    cursor: int
    created_at: datetime
    created_by: str
    secret: str  # for signing only: never in to_dict, logs or the audit log

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "actions": list(self.actions),
            "models": list(self.models),
            "enabled": self.enabled,
            "cursor": self.cursor,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
        }

    def __repr__(self) -> str:  # the dataclass's would print the secret
        return f"Subscription(id={self.id!r}, url={self.url!r})"


def matches(subscription: Subscription, record: AuditRecord) -> bool:
    """Whether ``record`` passes the subscription's action and model filters (shell patterns)."""
    if not any(fnmatchcase(record.action, p) for p in subscription.actions):
        return False
    if subscription.models == ("*",):
        return True
    model = model_of(record.target)
    return model is not None and any(fnmatchcase(model, p) for p in subscription.models)


@dataclass(frozen=True, slots=True)
class Attempt:
    at: datetime
    status_code: int | None
    error: str | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "status_code": self.status_code,
            "error": self.error,
            "seconds": round(self.seconds, 4),
        }


@dataclass(frozen=True, slots=True)
class Delivery:
    id: str
    webhook_id: str
    audit_seq: int
    action: str
    status: str  # pending, delivered, dead
    attempts: int
    next_at: datetime
    created_at: datetime
    finished_at: datetime | None
    history: tuple[Attempt, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "webhook": self.webhook_id,
            "event": self.audit_seq,
            "action": self.action,
            "status": self.status,
            "attempts": self.attempts,
            "next_at": self.next_at.isoformat() if self.status == "pending" else None,
            "created_at": self.created_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "history": [a.to_dict() for a in self.history],
        }


def _subscription(row: Row[Any]) -> Subscription:
    return Subscription(
        id=row.id,
        url=row.url,
        actions=tuple(row.actions),
        models=tuple(row.models),
        enabled=bool(row.enabled),
        cursor=int(row.cursor),
        created_at=_utc(row.created_at) or datetime.now(UTC),
        created_by=row.created_by,
        secret=row.secret,
    )


def _unleased(now: datetime) -> Any:
    return webhook_deliveries.c.lease_until.is_(None) | (webhook_deliveries.c.lease_until < now)


def _event(row: Row[Any]) -> AuditRecord:
    return AuditRecord(
        int(row.seq),
        _utc(row.at) or datetime.now(UTC),
        row.actor,
        row.action,
        row.target,
        row.before,
        row.after,
        row.prev_hash,
        row.hash,
    )


def _delivery(row: Row[Any], history: tuple[Attempt, ...] = ()) -> Delivery:
    return Delivery(
        id=row.id,
        webhook_id=row.webhook_id,
        audit_seq=int(row.audit_seq),
        action=row.action,
        status=row.status,
        attempts=int(row.attempts),
        next_at=_utc(row.next_at) or datetime.now(UTC),
        created_at=_utc(row.created_at) or datetime.now(UTC),
        finished_at=_utc(row.finished_at),
        history=history,
    )


class WebhookStore:
    """Webhooks over the registry's database (its audit chain is both their source and their record)."""

    def __init__(self, registry_store: RegistryStore) -> None:
        self.db = registry_store.db

    # -- subscriptions (admin) ------------------------------------------------------------------

    def create(
        self, *, url: str, actions: Any = None, models: Any = None, enabled: bool = True, actor: str
    ) -> tuple[Subscription, str]:
        """A new subscription and its secret (returned here, and only here). The URL is checked by
        the caller (:func:`modelport.events.urls.check_url`), which needs the settings. It starts at
        the audit log's head: it hears of changes from now on, not of the past."""
        action_patterns = _patterns(actions, "actions")
        model_patterns = _patterns(models, "models")
        webhook_id = "wh_" + secrets.token_hex(8)
        secret = "whsec_" + secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        public = {"url": url, "actions": list(action_patterns), "models": list(model_patterns)}
        with self.db.write() as tx:
            # audited first: the chain's head is then this very record (locked by the append), and the
            # subscription starts after it
            tx.audit(actor, "webhook.create", f"webhook:{webhook_id}", after=public | {"enabled": enabled})
            head = tx.execute(_HEAD).scalar_one()
            tx.execute(
                webhooks.insert().values(
                    id=webhook_id,
                    url=url,
                    actions=list(action_patterns),
                    models=list(model_patterns),
                    secret=secret,
                    enabled=enabled,
                    cursor=int(head) + 1,
                    created_at=now,
                    created_by=actor,
                )
            )
            row = tx.execute(select(webhooks).where(webhooks.c.id == webhook_id)).one()
        return _subscription(row), secret

    def subscriptions(self) -> list[Subscription]:
        with self.db.read() as tx:
            rows = tx.execute(select(webhooks).order_by(webhooks.c.created_at, webhooks.c.id)).all()
        return [_subscription(r) for r in rows]

    def get(self, webhook_id: str) -> Subscription:
        with self.db.read() as tx:
            row = tx.execute(select(webhooks).where(webhooks.c.id == webhook_id)).first()
        if row is None:
            raise NotFound(f"no webhook with id {webhook_id[:40]!r}")
        return _subscription(row)

    def set_enabled(self, webhook_id: str, enabled: bool, *, actor: str) -> Subscription:
        """Pause or resume a subscription (audited). A paused one hears nothing; resumed, it starts at
        the audit log's head again, as a new one does: what happened while it was paused is not sent
        (its deliveries already queued keep their course)."""
        with self.db.write() as tx:
            row = tx.execute(select(webhooks).where(webhooks.c.id == webhook_id)).first()
            if row is None:
                raise NotFound(f"no webhook with id {webhook_id[:40]!r}")
            if bool(row.enabled) == enabled:
                return _subscription(row)
            tx.audit(
                actor,
                "webhook.enable" if enabled else "webhook.disable",
                f"webhook:{webhook_id}",
                before={"enabled": not enabled},
                after={"enabled": enabled},
            )
            values: dict[str, Any] = {"enabled": enabled}
            if enabled:
                values["cursor"] = int(tx.execute(_HEAD).scalar_one()) + 1
            tx.execute(update(webhooks).where(webhooks.c.id == webhook_id).values(**values))
            return _subscription(tx.execute(select(webhooks).where(webhooks.c.id == webhook_id)).one())

    def remove(self, webhook_id: str, *, actor: str) -> Subscription:
        """Delete a subscription with its deliveries and their attempts (audited)."""
        with self.db.write() as tx:
            row = tx.execute(select(webhooks).where(webhooks.c.id == webhook_id)).first()
            if row is None:
                raise NotFound(f"no webhook with id {webhook_id[:40]!r}")
            gone = _subscription(row)
            ids = select(webhook_deliveries.c.id).where(webhook_deliveries.c.webhook_id == webhook_id)
            tx.execute(delete(webhook_attempts).where(webhook_attempts.c.delivery_id.in_(ids)))
            tx.execute(delete(webhook_deliveries).where(webhook_deliveries.c.webhook_id == webhook_id))
            tx.execute(delete(webhooks).where(webhooks.c.id == webhook_id))
            before = {"url": gone.url, "actions": list(gone.actions), "models": list(gone.models)}
            tx.audit(actor, "webhook.remove", f"webhook:{webhook_id}", before=before)
        return gone

    # -- deliveries (read and retry) --------------------------------------------------------------

    def deliveries(self, webhook_id: str, *, status: str | None = None, limit: int = 100) -> list[Delivery]:
        """The subscription's deliveries, newest first, each with its attempts."""
        self.get(webhook_id)
        query = select(webhook_deliveries).where(webhook_deliveries.c.webhook_id == webhook_id)
        if status is not None:
            query = query.where(webhook_deliveries.c.status == status)
        query = query.order_by(webhook_deliveries.c.audit_seq.desc()).limit(limit)
        with self.db.read() as tx:
            rows = tx.execute(query).all()
            ids = [r.id for r in rows]
            attempts: dict[str, list[Attempt]] = {}
            if ids:
                for a in tx.execute(
                    select(webhook_attempts)
                    .where(webhook_attempts.c.delivery_id.in_(ids))
                    .order_by(webhook_attempts.c.id)
                ):
                    attempts.setdefault(a.delivery_id, []).append(
                        Attempt(_utc(a.at) or datetime.now(UTC), a.status_code, a.error, float(a.seconds))
                    )
        return [_delivery(r, tuple(attempts.get(r.id, ()))) for r in rows]

    def retry(self, webhook_id: str, delivery_id: str, *, actor: str) -> Delivery:
        """Send a dead-lettered delivery again now, with a fresh count of attempts (audited)."""
        now = datetime.now(UTC)
        with self.db.write() as tx:
            row = tx.execute(
                select(webhook_deliveries).where(
                    webhook_deliveries.c.id == delivery_id, webhook_deliveries.c.webhook_id == webhook_id
                )
            ).first()
            if row is None:
                raise NotFound(f"no delivery {delivery_id[:40]!r} of webhook {webhook_id[:40]!r}")
            if row.status != "dead":
                raise InvalidInput(f"delivery {delivery_id} is {row.status}: only dead letters are retried")
            tx.execute(
                update(webhook_deliveries)
                .where(webhook_deliveries.c.id == delivery_id)
                .values(
                    status="pending",
                    attempts=0,
                    next_at=now,
                    lease_owner=None,
                    lease_until=None,
                    finished_at=None,
                )
            )
            tx.audit(actor, "webhook.retry", f"webhook:{webhook_id}", after={"delivery": delivery_id})
            row = tx.execute(select(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id)).one()
        return _delivery(row)

    # -- the dispatcher's side ----------------------------------------------------------------

    def enqueue(self) -> int:
        """Turn audit records after each enabled subscription's cursor into deliveries; the cursor
        moves in the same (serialised) write transaction, and a unique (webhook, record) pair makes a
        second enqueue of one record impossible. Returns how many deliveries were added."""
        with self.db.read() as tx:
            head = int(
                tx.execute(select(registry_state.c.audit_seq).where(registry_state.c.id == 1)).scalar_one()
            )
            behind = tx.execute(
                select(webhooks.c.id).where(webhooks.c.enabled.is_(True), webhooks.c.cursor <= head)
            ).all()
        if not behind:
            return 0  # the common case: one cheap read, no write lock taken
        added = 0
        now = datetime.now(UTC)
        with self.db.write() as tx:
            query = select(webhooks).where(webhooks.c.enabled.is_(True), webhooks.c.cursor <= head)
            if not self.db.is_sqlite:
                query = query.with_for_update()  # the cursor's owner for this transaction
            for sub in [_subscription(r) for r in tx.execute(query)]:
                records = self._after(tx, sub.cursor)
                rows = [
                    {
                        "id": "dlv_" + secrets.token_hex(8),
                        "webhook_id": sub.id,
                        "audit_seq": r.seq,
                        "action": r.action,
                        "status": "pending",
                        "attempts": 0,
                        "next_at": now,
                        "created_at": now,
                    }
                    for r in records
                    if matches(sub, r)
                ]
                for values in rows:
                    tx.execute(self.db.insert_ignoring_conflict(webhook_deliveries, values))
                added += len(rows)
                cursor = records[-1].seq + 1 if records else sub.cursor
                tx.execute(update(webhooks).where(webhooks.c.id == sub.id).values(cursor=cursor))
        return added

    @staticmethod
    def _after(tx: Any, cursor: int) -> list[AuditRecord]:
        rows = tx.execute(
            select(audit_log).where(audit_log.c.seq >= cursor).order_by(audit_log.c.seq).limit(_ENQUEUE_BATCH)
        ).all()
        return [_event(r) for r in rows]

    def due(self, limit: int = 20) -> list[str]:
        """Ids of deliveries that may be claimed now (pending, due, no live lease)."""
        now = datetime.now(UTC)
        with self.db.read() as tx:
            return list(
                tx.execute(
                    select(webhook_deliveries.c.id)
                    .where(
                        webhook_deliveries.c.status == "pending",
                        webhook_deliveries.c.next_at <= now,
                        (webhook_deliveries.c.lease_until.is_(None))
                        | (webhook_deliveries.c.lease_until < now),
                    )
                    .order_by(webhook_deliveries.c.next_at, webhook_deliveries.c.audit_seq)
                    .limit(limit)
                ).scalars()
            )

    def claim(
        self, delivery_id: str, owner: str, lease_seconds: float
    ) -> tuple[Delivery, Subscription, AuditRecord] | None:
        """Take the delivery for ``owner`` until the lease ends, if nobody holds it: a conditional
        update whose row count says who won. ``None``: another worker was first."""
        now = datetime.now(UTC)
        with self.db.write() as tx:
            won = tx.execute(
                update(webhook_deliveries)
                .where(
                    webhook_deliveries.c.id == delivery_id,
                    webhook_deliveries.c.status == "pending",
                    webhook_deliveries.c.next_at <= now,
                    _unleased(now),
                )
                .values(lease_owner=owner, lease_until=now + timedelta(seconds=lease_seconds))
            ).rowcount
            if won != 1:
                return None
            row = tx.execute(select(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id)).one()
            sub = tx.execute(select(webhooks).where(webhooks.c.id == row.webhook_id)).one()
            record = tx.execute(select(audit_log).where(audit_log.c.seq == row.audit_seq)).first()
        if record is None:  # the audit record is gone (the chain was tampered with): nothing to send
            self.finish(
                delivery_id, owner, Attempt(now, None, "EventMissing", 0.0), delivered=False, dead=True
            )
            return None
        return _delivery(row), _subscription(sub), _event(record)

    def finish(
        self,
        delivery_id: str,
        owner: str,
        attempt: Attempt,
        *,
        delivered: bool,
        dead: bool = False,
        retry_in: float = 0.0,
    ) -> bool:
        """Record the attempt and settle the delivery, if ``owner`` still holds it (a worker whose
        lease ran out must not overwrite the next holder's outcome)."""
        now = datetime.now(UTC)
        status = "delivered" if delivered else "dead" if dead else "pending"
        with self.db.write() as tx:
            settled = tx.execute(
                update(webhook_deliveries)
                .where(webhook_deliveries.c.id == delivery_id, webhook_deliveries.c.lease_owner == owner)
                .values(
                    status=status,
                    attempts=webhook_deliveries.c.attempts + 1,
                    next_at=now + timedelta(seconds=retry_in),
                    lease_owner=None,
                    lease_until=None,
                    finished_at=now if status != "pending" else None,
                )
            ).rowcount
            if settled != 1:
                return False
            tx.execute(
                webhook_attempts.insert().values(
                    delivery_id=delivery_id,
                    at=attempt.at,
                    status_code=attempt.status_code,
                    error=attempt.error,
                    seconds=attempt.seconds,
                )
            )
        return True

    def pending_count(self) -> int:
        with self.db.read() as tx:
            return int(
                tx.execute(
                    select(func.count())
                    .select_from(webhook_deliveries)
                    .where(webhook_deliveries.c.status == "pending")
                ).scalar_one()
            )
