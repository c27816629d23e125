"""API keys and usage records in the registry database.

Every key change is one transaction that also appends its audit record and bumps the registry's
generation counter, which is how every worker of every replica learns of it within a second.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Row, delete, func, select, update

from modelport.errors import InvalidInput, NotFound
from modelport.registry.database import Transaction
from modelport.registry.schema import api_keys, console_signouts, registry_state, usage
from modelport.registry.store import RegistryStore
from modelport.security.keys import (
    ROLES,
    KeyRecord,
    check_given_token,
    check_patterns,
    hash_secret,
    new_token,
)

__all__ = ["KeyStore", "UsageRow"]

_NAME_MAX = 100


@dataclass(frozen=True, slots=True)
class UsageRow:
    key_id: str
    model: str
    day: date
    requests: int
    rows: int
    errors: int
    bytes_in: int
    bytes_out: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "model": self.model,
            "day": self.day.isoformat(),
            "requests": self.requests,
            "rows": self.rows,
            "errors": self.errors,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
        }


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _record(row: Row[Any]) -> KeyRecord:
    return KeyRecord(
        id=row.id,
        name=row.name,
        role=row.role,
        models=tuple(row.models),
        secret_hash=row.secret_hash,
        created_at=_utc(row.created_at) or datetime.now(UTC),
        created_by=row.created_by,
        previous_hash=row.previous_hash,
        previous_until=_utc(row.previous_until),
        rate=row.rate,
        quota=row.quota,
        expires_at=_utc(row.expires_at),
        revoked_at=_utc(row.revoked_at),
    )


class KeyStore:
    """Keys and usage over the registry's database (shares its audit chain and generation)."""

    def __init__(self, registry_store: RegistryStore) -> None:
        self.registry_store = registry_store
        self.db = registry_store.db

    # -- keys -----------------------------------------------------------------------------------

    def create(
        self,
        *,
        name: str,
        role: str,
        models: list[str] | None = None,
        expires_in: timedelta | None = None,
        rate: float | None = None,
        quota: int | None = None,
        actor: str,
        only_if_none: bool = False,
        token: str | None = None,
    ) -> tuple[KeyRecord, str] | None:
        """A new key and its token (the only time the secret exists outside the caller). With
        ``only_if_none``, only when no key exists yet (``init``'s first admin key; returns ``None``
        otherwise — decided inside the transaction, so concurrent inits create one key). ``token``:
        adopt this operator-made token (``init --admin-key-file``, a Kubernetes Secret) instead of
        drawing one; only its hash is stored, as always."""
        if role not in ROLES:
            raise InvalidInput(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        name = name.strip()
        if not name or len(name) > _NAME_MAX or any(ord(c) < 32 for c in name):
            raise InvalidInput(f"key name must be 1–{_NAME_MAX} printable characters")
        patterns = check_patterns(models)
        now = datetime.now(UTC)
        if token is None:
            key_id, secret, token = new_token()
        else:
            key_id, secret = check_given_token(token)
        values = {
            "id": key_id,
            "name": name,
            "role": role,
            "models": patterns,
            "secret_hash": hash_secret(secret),
            "rate": rate,
            "quota": quota,
            "created_at": now,
            "created_by": actor,
            "expires_at": now + expires_in if expires_in is not None else None,
        }
        with self.db.write() as tx:
            if only_if_none:
                lock = select(registry_state.c.id).where(registry_state.c.id == 1)
                tx.execute(lock if self.db.is_sqlite else lock.with_for_update())
                if tx.execute(select(func.count()).select_from(api_keys)).scalar_one():
                    return None
            tx.execute(api_keys.insert().values(**values))
            record = self._existing(tx, key_id)
            tx.audit(actor, "key.create", f"key:{key_id}", after=record.to_dict())
            tx.bump_generation()
        return record, token

    def list_keys(self, *, include_revoked: bool = True) -> list[KeyRecord]:
        with self.db.read() as tx:
            query = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
            if not include_revoked:
                query = query.where(api_keys.c.revoked_at.is_(None))
            return [_record(row) for row in tx.execute(query)]

    def count(self) -> int:
        with self.db.read() as tx:
            return int(tx.execute(select(func.count()).select_from(api_keys)).scalar_one())

    def get(self, key_id: str) -> KeyRecord:
        with self.db.read() as tx:
            row = tx.execute(select(api_keys).where(api_keys.c.id == key_id)).one_or_none()
        if row is None:
            raise NotFound(f"no key with id {key_id!r}")
        return _record(row)

    @staticmethod
    def _existing(tx: Transaction, key_id: str) -> KeyRecord:
        row = tx.execute(select(api_keys).where(api_keys.c.id == key_id)).one_or_none()
        if row is None:
            raise NotFound(f"no key with id {key_id!r}")
        return _record(row)

    def _changed(
        self, tx: Transaction, action: str, before: KeyRecord, values: dict[str, Any], actor: str
    ) -> KeyRecord:
        """Apply ``values`` to the key, audit the change and tell every server (one transaction)."""
        tx.execute(update(api_keys).where(api_keys.c.id == before.id).values(**values))
        after = self._existing(tx, before.id)
        tx.audit(actor, action, f"key:{before.id}", before=before.to_dict(), after=after.to_dict())
        tx.bump_generation()
        return after

    def revoke(self, key_id: str, *, actor: str) -> KeyRecord:
        with self.db.write() as tx:
            before = self._existing(tx, key_id)
            if before.revoked_at is not None:
                return before
            return self._changed(tx, "key.revoke", before, {"revoked_at": datetime.now(UTC)}, actor)

    def update(
        self,
        key_id: str,
        *,
        actor: str,
        models: list[str] | None = None,
        rate: float | None = None,
        quota: int | None = None,
        expires_in: timedelta | None = None,
        clear: tuple[str, ...] = (),
    ) -> KeyRecord:
        """Change a key's scope or limits (``clear`` names limits to remove: rate, quota, expires)."""
        unknown = set(clear) - {"rate", "quota", "expires"}
        if unknown:
            raise InvalidInput(
                f"only rate, quota and expires can be cleared, not {', '.join(sorted(unknown))}"
            )
        values: dict[str, Any] = {}
        if models is not None:
            values["models"] = check_patterns(models)
        if rate is not None or "rate" in clear:
            values["rate"] = rate
        if quota is not None or "quota" in clear:
            values["quota"] = quota
        if expires_in is not None or "expires" in clear:
            values["expires_at"] = datetime.now(UTC) + expires_in if expires_in is not None else None
        if not values:
            raise InvalidInput("nothing to change: give models, rate, quota or expires")
        with self.db.write() as tx:
            before = self._existing(tx, key_id)
            if before.revoked_at is not None:
                raise InvalidInput(f"key {key_id} is revoked")
            return self._changed(tx, "key.update", before, values, actor)

    def rotate(self, key_id: str, *, grace: timedelta, actor: str) -> tuple[KeyRecord, str]:
        """A new secret for ``key_id``; the current one keeps working for ``grace``."""
        if grace < timedelta(0) or grace > timedelta(days=30):
            raise InvalidInput("the grace period must be between 0 and 30 days")
        with self.db.write() as tx:
            before = self._existing(tx, key_id)
            if before.status() != "active":
                raise InvalidInput(f"key {key_id} is {before.status()}: only active keys can be rotated")
            _, secret, _ = new_token()
            token = f"mpk_{key_id}_{secret}"
            now = datetime.now(UTC)
            values = {
                "secret_hash": hash_secret(secret),
                "previous_hash": before.secret_hash if grace > timedelta(0) else None,
                "previous_until": now + grace if grace > timedelta(0) else None,
            }
            return self._changed(tx, "key.rotate", before, values, actor), token

    # -- usage ----------------------------------------------------------------------------------

    def add_usage(self, counts: Iterable[UsageRow]) -> None:
        """Add counts (from one worker's buffer) to the day's totals."""
        rows = list(counts)
        if not rows:
            return
        with self.db.write() as tx:
            for row in rows:
                values = row.to_dict() | {"day": row.day}
                stmt = self.db.insert_dialect(usage).values(**values)
                tx.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["key_id", "model", "day"],
                        set_={
                            column: getattr(usage.c, column) + getattr(stmt.excluded, column)
                            for column in ("requests", "rows", "errors", "bytes_in", "bytes_out")
                        },
                    )
                )

    def usage(
        self, *, key_id: str | None = None, model: str | None = None, since: date | None = None
    ) -> list[UsageRow]:
        query = select(usage).order_by(usage.c.day, usage.c.key_id, usage.c.model)
        if key_id is not None:
            query = query.where(usage.c.key_id == key_id)
        if model is not None:
            query = query.where(usage.c.model == model)
        if since is not None:
            query = query.where(usage.c.day >= since)
        with self.db.read() as tx:
            return [
                UsageRow(r.key_id, r.model, r.day, r.requests, r.rows, r.errors, r.bytes_in, r.bytes_out)
                for r in tx.execute(query)
            ]

    # -- console sessions signed out (ui/sessions.py) -------------------------------------------

    def end_session(self, session_id: str, expires: datetime, *, actor: str) -> None:
        """Record that the console session ``session_id`` signed out: every worker of every replica
        refuses it from its next key reload (the generation moves), though its cookie has not expired.
        Sessions whose cookies have expired anyway are pruned here, so the table stays small."""
        now = datetime.now(UTC)
        with self.db.write() as tx:
            tx.execute(delete(console_signouts).where(console_signouts.c.expires_at <= now))
            if expires > now:
                tx.execute(
                    self.db.upsert(console_signouts, None, keys=["session_id"], update=["expires_at"]),
                    [{"session_id": session_id[:64], "expires_at": expires}],
                )
            tx.audit(actor, "console.sign_out", f"session:{session_id[:12]}")
            tx.bump_generation()

    def ended_sessions(self) -> frozenset[str]:
        """The ids of console sessions signed out before their cookies expire."""
        now = datetime.now(UTC)
        with self.db.read() as tx:
            rows = tx.execute(
                select(console_signouts.c.session_id).where(console_signouts.c.expires_at > now)
            ).all()
        return frozenset(row.session_id for row in rows)

    def requests_this_month(self) -> dict[str, int]:
        """Requests per key since the first of this month (UTC): what quotas are checked against."""
        today = datetime.now(UTC).date()
        first = today.replace(day=1)
        with self.db.read() as tx:
            rows = tx.execute(
                select(usage.c.key_id, func.sum(usage.c.requests))
                .where(usage.c.day >= first)
                .group_by(usage.c.key_id)
            ).all()
        return {key: int(total) for key, total in rows}
