"""SQL for releases (docs/releases.md): traffic policies on aliases, alias history, approvals, per-arm
counts, retention, labels and archived versions. Every public method is one transaction; each change is
audited and bumps the registry generation in that same transaction, like alias moves. Names resolve and
aliases move through the registry store's public helpers, in this store's transaction.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update

from modelport.errors import AliasNotFound, Conflict, Forbidden, InvalidInput, NotFound
from modelport.registry.names import check_alias_name, check_label, check_version_number
from modelport.registry.schema import (
    alias_history,
    alias_releases,
    aliases,
    archived_versions,
    artifacts,
    model_versions,
    models,
    pending_changes,
    protected_aliases,
    release_stats,
    retention_policies,
    version_labels,
)
from modelport.releases.policy import AutoRollback, Release, Sticky
from modelport.releases.retention import AliasState, RetentionPolicy

if TYPE_CHECKING:
    from modelport.registry.database import Transaction
    from modelport.registry.store import RegistryStore

__all__ = ["APPROVAL_TTL", "HistoryEntry", "PendingChange", "ReleaseStore"]

APPROVAL_TTL = timedelta(days=7)
_ADD_STATS = (
    "INSERT INTO release_stats (release_id, arm, bucket, metric, key, count) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (release_id, arm, bucket, metric, key) "
    "DO UPDATE SET count = release_stats.count + excluded.count"
)
ACTIONS = ("set", "remove", "release", "stop", "promote", "rollback")


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    id: int
    alias: str
    version: int | None
    state: dict[str, Any]
    action: str
    at: datetime
    actor: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "alias": self.alias,
            "version": self.version,
            "state": self.state,
            "action": self.action,
            "at": self.at.isoformat(),
            "actor": self.actor,
        }


@dataclass(frozen=True, slots=True)
class PendingChange:
    id: int
    model: str
    alias: str
    action: str
    payload: dict[str, Any]
    requested_by: str
    requested_at: datetime
    status: str
    decided_by: str | None
    decided_at: datetime | None
    reason: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "alias": self.alias,
            "action": self.action,
            "payload": self.payload,
            "requested_by": self.requested_by,
            "requested_at": self.requested_at.isoformat(),
            "status": self.status,
            "decided_by": self.decided_by,
            "decided_at": None if self.decided_at is None else self.decided_at.isoformat(),
            "reason": self.reason,
        }


class ReleaseStore:
    """Release state in SQL, sharing the registry store's database, audit chain and generation."""

    def __init__(self, store: RegistryStore) -> None:
        self.store = store
        self.db = store.db

    # -- reads ----------------------------------------------------------------------------------

    def release(self, name: str, alias: str) -> Release | None:
        with self.db.read() as tx:
            model_id = self.store.model_id(tx, name)
            return self._release(tx, model_id, alias)

    def releases_table(self) -> dict[str, dict[str, Release]]:
        """Every running release as ``{model: {alias: Release}}`` (what servers route by)."""
        with self.db.read() as tx:
            names = dict(tx.execute(select(models.c.id, models.c.name)).all())
            table: dict[str, dict[str, Release]] = {}
            for row in tx.execute(select(alias_releases)).all():
                release = self._release(tx, row.model_id, row.alias)
                if release is not None:
                    table.setdefault(names[row.model_id], {})[row.alias] = release
            return table

    def labels_table(self) -> dict[str, dict[str, int]]:
        """Every label as ``{model: {label: version number}}``."""
        with self.db.read() as tx:
            rows = tx.execute(
                select(models.c.name, version_labels.c.label, model_versions.c.number)
                .select_from(version_labels)
                .join(model_versions, model_versions.c.id == version_labels.c.version_id)
                .join(models, models.c.id == version_labels.c.model_id)
            ).all()
        table: dict[str, dict[str, int]] = {}
        for row in rows:
            table.setdefault(row.name, {})[row.label] = row.number
        return table

    def archived(self) -> dict[str, set[int]]:
        with self.db.read() as tx:
            rows = tx.execute(
                select(models.c.name, model_versions.c.number)
                .select_from(archived_versions)
                .join(model_versions, model_versions.c.id == archived_versions.c.version_id)
                .join(models, models.c.id == model_versions.c.model_id)
            ).all()
        table: dict[str, set[int]] = {}
        for row in rows:
            table.setdefault(row.name, set()).add(row.number)
        return table

    def history(self, name: str, alias: str | None = None, *, limit: int = 1000) -> list[HistoryEntry]:
        """The alias's states, oldest first (every alias of the model when ``alias`` is None)."""
        with self.db.read() as tx:
            model_id = self.store.model_id(tx, name)
            return self._history(tx, model_id, alias, limit)

    # -- releases -------------------------------------------------------------------------------

    def start(
        self,
        name: str,
        alias: str,
        *,
        canary: int | None,
        weight: float,
        sticky: Sticky | None,
        shadow: int | None,
        auto_rollback: AutoRollback | None,
        actor: str,
        note: dict[str, Any] | None = None,
    ) -> Release:
        """Start (or change) the release on ``name@alias``. Changing the weight, sticky key or bounds of
        a running release with the same canary and shadow keeps its id and its numbers. ``note`` is added
        to the audit record (an override's reason or the differences an override let through)."""
        check_alias_name(alias)
        if canary is None and shadow is None:
            raise InvalidInput(
                "a release needs a canary (--canary N --weight P) and/or a shadow (--shadow N)"
            )
        now = datetime.now(UTC)
        with self.db.write() as tx:
            model_id = self.store.model_id(tx, name)
            primary = self.store.alias_number(tx, model_id, alias)
            if primary is None:
                raise AliasNotFound(
                    f"model {name!r} has no alias {alias!r}: set it first (`modelport alias set`)"
                )
            ids: dict[str, int | None] = {}
            for role, number in (("canary", canary), ("shadow", shadow)):
                if number is None:
                    ids[role] = None
                    continue
                check_version_number(number)
                if number == primary:
                    raise InvalidInput(f"the {role} must differ from {name}@{alias}'s version ({primary})")
                ids[role] = self.store.version_id(tx, name, number)
                self.store.refuse_archived(tx, ids[role] or 0)
            current = self._release(tx, model_id, alias)
            same = current is not None and current.canary == canary and current.shadow == shadow
            release_id = current.release_id if same and current is not None else secrets.token_hex(8)
            values = {
                "release_id": release_id,
                "canary_version_id": ids["canary"],
                "canary_weight": weight if canary is not None else 0.0,
                "sticky_by": None if sticky is None else str(sticky),
                "shadow_version_id": ids["shadow"],
                "auto_rollback": None if auto_rollback is None else auto_rollback.to_dict(),
                "started_at": now
                if not same or current is None
                else tx.execute(
                    select(alias_releases.c.started_at).where(
                        alias_releases.c.model_id == model_id, alias_releases.c.alias == alias
                    )
                ).scalar_one(),
                "started_by": actor[:200],
            }
            tx.execute(
                delete(alias_releases).where(
                    alias_releases.c.model_id == model_id, alias_releases.c.alias == alias
                )
            )
            tx.execute(alias_releases.insert().values(model_id=model_id, alias=alias, **values))
            release = self._release(tx, model_id, alias)
            assert release is not None
            version_id = self.store.version_id(tx, name, primary)
            self.store.add_history(tx, model_id, alias, version_id, release.state(), "release", actor, now)
            tx.audit(
                actor,
                "release.start" if not same else "release.change",
                f"{name}@{alias}",
                before=None if current is None else current.state(),
                after={**release.state(), **(note or {})},
            )
            tx.bump_generation()
            return release

    def stop(self, name: str, alias: str, *, actor: str) -> Release:
        """End the running release; the alias keeps its primary."""
        now = datetime.now(UTC)
        with self.db.write() as tx:
            model_id = self.store.model_id(tx, name)
            current = self._require_release(tx, model_id, name, alias)
            self._end(tx, model_id, name, alias, current, "stop", actor, now, None)
            return current

    def promote(self, name: str, alias: str, *, actor: str, note: dict[str, Any] | None = None) -> Release:
        """Make the canary the alias's version and end the release (``note``: added to the audit record)."""
        now = datetime.now(UTC)
        with self.db.write() as tx:
            model_id = self.store.model_id(tx, name)
            current = self._require_release(tx, model_id, name, alias)
            if current.canary is None:
                raise Conflict(f"the release on {name}@{alias} has no canary to promote (it only shadows)")
            tx.execute(
                delete(alias_releases).where(
                    alias_releases.c.model_id == model_id, alias_releases.c.alias == alias
                )
            )
            version_id = self.store.version_id(tx, name, current.canary)
            self.store.point_alias(tx, model_id, alias, version_id, actor, now, action="promote")
            tx.audit(
                actor,
                "release.promote",
                f"{name}@{alias}",
                before=current.state(),
                after={"version": current.canary, **(note or {})},
            )
            tx.bump_generation()
            return current

    def rollback(
        self, name: str, alias: str, *, actor: str, release_id: str | None = None, reason: str | None = None
    ) -> dict[str, Any]:
        """End the running release, or — with none running — return the alias to the version it pointed
        at before its last move. With ``release_id`` (automatic rollback) nothing happens unless that
        release is still the one running. Returns ``{"action": ..., "version": ...}``."""
        now = datetime.now(UTC)
        with self.db.write() as tx:
            model_id = self.store.model_id(tx, name)
            current = self._release(tx, model_id, alias)
            if release_id is not None and (current is None or current.release_id != release_id):
                return {"action": "none", "version": None}
            if current is not None:
                note = None if reason is None else {"reason": reason[:500]}
                action = "rollback" if release_id is None else "auto-rollback"
                self._end(tx, model_id, name, alias, current, action, actor, now, note)
                return {"action": "release withdrawn", "version": current.primary}
            primary = self.store.alias_number(tx, model_id, alias)
            if primary is None:
                raise AliasNotFound(f"model {name!r} has no alias {alias!r}")
            target = None
            for entry in reversed(self._history(tx, model_id, alias, 100_000)):
                if entry.version is not None and entry.version != primary:
                    target = entry.version
                    break
            if target is None:
                raise Conflict(f"{name}@{alias} has pointed at no other version: nothing to roll back to")
            version_id = self.store.version_id(tx, name, target)
            self.store.point_alias(tx, model_id, alias, version_id, actor, now, action="rollback")
            tx.audit(
                actor,
                "alias.rollback",
                f"{name}@{alias}",
                before={"version": primary},
                after={"version": target},
            )
            tx.bump_generation()
            return {"action": "alias moved back", "version": target}

    # -- per-arm counts -------------------------------------------------------------------------

    def add_stats(self, rows: Iterable[tuple[str, str, int, str, str, int]]) -> None:
        """Add ``(release_id, arm, bucket, metric, key, count)`` counts (an upsert that adds)."""
        batch = [
            {"release_id": r, "arm": a, "bucket": b, "metric": m, "key": k[:100], "count": c}
            for r, a, b, m, k, c in rows
        ]
        if not batch:
            return
        # One driver-level executemany of a plain statement: through SQLAlchemy's compiled upsert the
        # ~40 rows a worker adds each second cost 6-8 ms of CPU holding the GIL, which showed in the
        # serving p99 (docs/performance.md); this costs well under a millisecond.
        statement = (
            _ADD_STATS if self.db.engine.dialect.paramstyle == "qmark" else _ADD_STATS.replace("?", "%s")
        )
        values = [(r["release_id"], r["arm"], r["bucket"], r["metric"], r["key"], r["count"]) for r in batch]
        with self.db.write() as tx:
            tx.connection.exec_driver_sql(statement, values)

    def stats(self, release_id: str, since_bucket: int = 0) -> list[tuple[str, int, str, str, int]]:
        """``(arm, bucket, metric, key, count)`` rows of a release from ``since_bucket`` on."""
        with self.db.read() as tx:
            rows = tx.execute(
                select(
                    release_stats.c.arm,
                    release_stats.c.bucket,
                    release_stats.c.metric,
                    release_stats.c.key,
                    release_stats.c.count,
                ).where(release_stats.c.release_id == release_id, release_stats.c.bucket >= since_bucket)
            ).all()
        return [(r.arm, int(r.bucket), r.metric, r.key, int(r[4])) for r in rows]

    # -- approvals ------------------------------------------------------------------------------

    def set_approval(self, name: str, alias: str, required: bool, *, actor: str) -> None:
        """Require (or stop requiring) a second key for every change of ``name@alias``; the alias
        becomes protected (the promotion gate applies too)."""
        check_alias_name(alias)
        now = datetime.now(UTC)
        with self.db.write() as tx:
            model_id = self.store.model_id(tx, name)
            key = (protected_aliases.c.model_id == model_id) & (protected_aliases.c.alias == alias)
            row = tx.execute(select(protected_aliases.c.require_approval).where(key)).first()
            if row is None:
                tx.execute(
                    protected_aliases.insert().values(
                        model_id=model_id,
                        alias=alias,
                        created_at=now,
                        created_by=actor[:200],
                        require_approval=required,
                    )
                )
            elif bool(row.require_approval) == required:
                return
            else:
                tx.execute(update(protected_aliases).where(key).values(require_approval=required))
            tx.audit(actor, "alias.require-approval" if required else "alias.no-approval", f"{name}@{alias}")
            tx.bump_generation()

    def requires_approval(self, name: str, alias: str) -> bool:
        with self.db.read() as tx:
            model_id = self.store.model_id(tx, name)
            value = tx.execute(
                select(protected_aliases.c.require_approval).where(
                    protected_aliases.c.model_id == model_id, protected_aliases.c.alias == alias
                )
            ).scalar_one_or_none()
            return bool(value)

    def request(
        self, name: str, alias: str, action: str, payload: dict[str, Any], *, actor: str
    ) -> PendingChange:
        """Record a change waiting for approval (audited)."""
        if action not in ACTIONS:
            raise InvalidInput(f"unknown change {action!r}")
        now = datetime.now(UTC)
        with self.db.write() as tx:
            model_id = self.store.model_id(tx, name)
            change_id = tx.execute(
                pending_changes.insert()
                .values(
                    model_id=model_id,
                    alias=alias,
                    action=action,
                    payload=payload,
                    requested_by=actor[:200],
                    requested_at=now,
                    status="pending",
                )
                .returning(pending_changes.c.id)
            ).scalar_one()
            tx.audit(
                actor,
                "approval.request",
                f"{name}@{alias}",
                after={"change": int(change_id), "action": action, **payload},
            )
            return self._change(tx, int(change_id))

    def changes(self, *, status: str | None = None) -> list[PendingChange]:
        with self.db.read() as tx:
            query = select(pending_changes.c.id).order_by(pending_changes.c.id)
            if status is not None:
                query = query.where(pending_changes.c.status == status)
            return [self._change(tx, int(i)) for i in tx.execute(query).scalars()]

    def change(self, change_id: int) -> PendingChange:
        with self.db.read() as tx:
            return self._change(tx, change_id)

    def claim(self, change_id: int, *, approve: bool, actor: str, reason: str | None) -> PendingChange:
        """Approve or reject a pending change: refused for its requester, for a change no longer
        pending, and for one older than :data:`APPROVAL_TTL`. Approval only marks it; the caller then
        applies it (:meth:`finish` records the outcome). Audited either way."""
        now = datetime.now(UTC)
        refusal: Exception | None = None  # raised after the commit: the refusal's audit record stays
        with self.db.write() as tx:
            change = self._change(tx, change_id)
            target = f"{change.model}@{change.alias}"
            if change.status != "pending":
                raise Conflict(f"change {change_id} is {change.status}, not pending")
            if change.requested_by == actor:
                tx.audit(
                    actor,
                    "approval.refused",
                    target,
                    after={"change": change_id, "reason": "self-approval"},
                )
                refusal = _SelfApproval(
                    f"change {change_id} was requested by this key: another admin or publisher must decide it"
                )
            elif now - change.requested_at > APPROVAL_TTL:
                tx.execute(
                    update(pending_changes).where(pending_changes.c.id == change_id).values(status="expired")
                )
                tx.audit(actor, "approval.expired", target, after={"change": change_id})
                refusal = Conflict(f"change {change_id} expired: it was requested more than 7 days ago")
            else:
                status = "approved" if approve else "rejected"
                claimed = tx.execute(
                    update(pending_changes)
                    .where(pending_changes.c.id == change_id, pending_changes.c.status == "pending")
                    .values(
                        status=status,
                        decided_by=actor[:200],
                        decided_at=now,
                        reason=(reason or "")[:1000] or None,
                    )
                ).rowcount
                if not claimed:
                    raise Conflict(f"change {change_id} was decided meanwhile")
                note = {"reason": reason[:500]} if reason else {}
                tx.audit(
                    actor,
                    "approval.approve" if approve else "approval.reject",
                    target,
                    after={
                        "change": change_id,
                        "action": change.action,
                        "requested_by": change.requested_by,
                        **note,
                    },
                )
                decided = self._change(tx, change_id)
        if refusal is not None:
            raise refusal
        return decided

    def finish(self, change_id: int, *, applied: bool, detail: str, actor: str) -> None:
        with self.db.write() as tx:
            change = self._change(tx, change_id)
            tx.execute(
                update(pending_changes)
                .where(pending_changes.c.id == change_id)
                .values(status="applied" if applied else "failed", reason=detail[:1000] or change.reason)
            )
            tx.audit(
                actor,
                "approval.applied" if applied else "approval.failed",
                f"{change.model}@{change.alias}",
                after={"change": change_id, "detail": detail[:500]},
            )

    # -- retention ------------------------------------------------------------------------------

    def set_retention(self, name: str, policy: RetentionPolicy, *, actor: str) -> None:
        now = datetime.now(UTC)
        with self.db.write() as tx:
            model_id = self.store.model_id(tx, name)
            before = self._retention(tx, model_id)
            tx.execute(
                self.db.upsert(
                    retention_policies,
                    {"model_id": model_id, **policy.to_dict(), "updated_at": now, "updated_by": actor[:200]},
                    keys=["model_id"],
                    update=["keep_last", "keep_days", "legal_hold", "updated_at", "updated_by"],
                )
            )
            tx.audit(
                actor,
                "retention.set",
                name,
                before=None if before is None else before.to_dict(),
                after=policy.to_dict(),
            )

    def retention(self, name: str) -> RetentionPolicy | None:
        with self.db.read() as tx:
            return self._retention(tx, self.store.model_id(tx, name))

    def retention_inputs(
        self, name: str
    ) -> tuple[list[int], list[AliasState], set[int], RetentionPolicy | None]:
        """What :func:`~modelport.releases.retention.archivable` needs for one model: its live
        (unarchived) version numbers, alias history as states, and the numbers pinned now."""
        with self.db.read() as tx:
            model_id = self.store.model_id(tx, name)
            return self._retention_inputs(tx, model_id)

    def archive(
        self, name: str, numbers: list[int], *, actor: str, policy: RetentionPolicy
    ) -> dict[str, Any]:
        """Archive versions that the rule still allows, checked again inside the transaction. Returns
        ``{"archived": [...], "digests": [digests no live version uses any more], "freed_bytes": n}``."""
        from modelport.releases.retention import archivable

        now = datetime.now(UTC)
        with self.db.write() as tx:
            model_id = self.store.model_id(tx, name)
            live, history, pinned, _ = self._retention_inputs(tx, model_id)
            allowed = set(archivable(live, history, pinned, policy, now.timestamp()))
            chosen = sorted(n for n in numbers if n in allowed)
            archived_ids = []
            for number in chosen:
                archived_ids.append(self.store.version_id(tx, name, number))
            still_used = set(
                tx.execute(
                    select(artifacts.c.digest)
                    .join(model_versions, model_versions.c.id == artifacts.c.version_id)
                    .where(
                        ~model_versions.c.id.in_(select(archived_versions.c.version_id)),
                        ~model_versions.c.id.in_(archived_ids),
                    )
                ).scalars()
            )
            freed: dict[str, int] = {}
            for version_id, number in zip(archived_ids, chosen, strict=True):
                blobs = tx.execute(
                    select(artifacts.c.digest, artifacts.c.size).where(artifacts.c.version_id == version_id)
                ).all()
                size = sum(int(b.size) for b in blobs if b.digest not in still_used and b.digest not in freed)
                for blob in blobs:
                    if blob.digest not in still_used:
                        freed[blob.digest] = int(blob.size)
                tx.execute(
                    archived_versions.insert().values(
                        version_id=version_id, archived_at=now, archived_by=actor[:200], freed_bytes=size
                    )
                )
                tx.audit(
                    actor,
                    "version.archive",
                    f"{name}@{number}",
                    after={"freed_bytes": size, **policy.to_dict()},
                )
            if chosen:
                tx.bump_generation()
            return {"archived": chosen, "digests": sorted(freed), "freed_bytes": sum(freed.values())}

    def live_digests(self) -> set[str]:
        """Digests that an unarchived version uses (the artifact store must keep them)."""
        with self.db.read() as tx:
            return set(
                tx.execute(
                    select(artifacts.c.digest).where(
                        ~artifacts.c.version_id.in_(select(archived_versions.c.version_id))
                    )
                ).scalars()
            )

    # -- labels ---------------------------------------------------------------------------------

    def set_label(self, name: str, number: int, label: str, *, actor: str) -> str:
        label = check_label(label)
        now = datetime.now(UTC)
        with self.db.write() as tx:
            model_id = self.store.model_id(tx, name)
            version_id = self.store.version_id(tx, name, number)
            taken = tx.execute(
                select(model_versions.c.number)
                .join(version_labels, version_labels.c.version_id == model_versions.c.id)
                .where(version_labels.c.model_id == model_id, version_labels.c.label == label)
            ).scalar_one_or_none()
            if taken is not None and taken != number:
                raise Conflict(
                    f"{name} already has label {label} on version {taken}: labels are unique per model"
                )
            existing = tx.execute(
                select(version_labels.c.label).where(version_labels.c.version_id == version_id)
            ).scalar_one_or_none()
            if existing == label:
                return label
            if existing is not None:
                raise Conflict(f"{name}@{number} is already labelled {existing}: a version keeps its label")
            tx.execute(
                version_labels.insert().values(
                    version_id=version_id,
                    model_id=model_id,
                    label=label,
                    created_at=now,
                    created_by=actor[:200],
                )
            )
            tx.audit(actor, "version.label", f"{name}@{number}", after={"label": label})
            tx.bump_generation()
            return label

    # -- helpers --------------------------------------------------------------------------------

    def _release(self, tx: Transaction, model_id: int, alias: str) -> Release | None:
        row = tx.execute(
            select(alias_releases).where(
                alias_releases.c.model_id == model_id, alias_releases.c.alias == alias
            )
        ).first()
        if row is None:
            return None
        numbers = dict(
            tx.execute(
                select(model_versions.c.id, model_versions.c.number).where(
                    model_versions.c.id.in_(
                        [v for v in (row.canary_version_id, row.shadow_version_id) if v is not None]
                    )
                )
            ).all()
        )
        primary = self.store.alias_number(tx, model_id, alias)
        assert primary is not None  # a release row only exists beside its alias
        return Release(
            release_id=row.release_id,
            primary=primary,
            canary=numbers.get(row.canary_version_id),
            weight=float(row.canary_weight),
            sticky=None if row.sticky_by is None else Sticky.parse(row.sticky_by),
            shadow=numbers.get(row.shadow_version_id),
            auto_rollback=None if row.auto_rollback is None else AutoRollback.of(row.auto_rollback),
            started_at=_utc(row.started_at).isoformat(),
            started_by=row.started_by,
        )

    def _require_release(self, tx: Transaction, model_id: int, name: str, alias: str) -> Release:
        current = self._release(tx, model_id, alias)
        if current is None:
            raise NotFound(f"no release is running on {name}@{alias}")
        return current

    def _end(
        self,
        tx: Transaction,
        model_id: int,
        name: str,
        alias: str,
        current: Release,
        action: str,
        actor: str,
        now: datetime,
        note: Any,
    ) -> None:
        tx.execute(
            delete(alias_releases).where(
                alias_releases.c.model_id == model_id, alias_releases.c.alias == alias
            )
        )
        version_id = self.store.version_id(tx, name, current.primary)
        self.store.add_history(
            tx, model_id, alias, version_id, {"version": current.primary}, action, actor, now
        )
        tx.audit(
            actor,
            f"release.{action}",
            f"{name}@{alias}",
            before=current.state(),
            after={"version": current.primary, **(note or {})},
        )
        tx.bump_generation()

    def _history(self, tx: Transaction, model_id: int, alias: str | None, limit: int) -> list[HistoryEntry]:
        query = (
            select(alias_history, model_versions.c.number)
            .outerjoin(model_versions, model_versions.c.id == alias_history.c.version_id)
            .where(alias_history.c.model_id == model_id)
        )
        if alias is not None:
            query = query.where(alias_history.c.alias == alias)
        rows = tx.execute(query.order_by(alias_history.c.id.desc()).limit(limit)).all()
        return [
            HistoryEntry(r.id, r.alias, r.number, dict(r.state or {}), r.action, _utc(r.at), r.actor)
            for r in reversed(rows)
        ]

    def _change(self, tx: Transaction, change_id: int) -> PendingChange:
        row = tx.execute(
            select(pending_changes, models.c.name)
            .join(models, models.c.id == pending_changes.c.model_id)
            .where(pending_changes.c.id == change_id)
        ).first()
        if row is None:
            raise NotFound(f"no change {change_id}")
        return PendingChange(
            id=row.id,
            model=row.name,
            alias=row.alias,
            action=row.action,
            payload=dict(row.payload),
            requested_by=row.requested_by,
            requested_at=_utc(row.requested_at),
            status=row.status,
            decided_by=row.decided_by,
            decided_at=None if row.decided_at is None else _utc(row.decided_at),
            reason=row.reason,
        )

    @staticmethod
    def _retention(tx: Transaction, model_id: int) -> RetentionPolicy | None:
        row = tx.execute(select(retention_policies).where(retention_policies.c.model_id == model_id)).first()
        if row is None:
            return None
        return RetentionPolicy(int(row.keep_last), float(row.keep_days), bool(row.legal_hold))

    def _retention_inputs(
        self, tx: Transaction, model_id: int
    ) -> tuple[list[int], list[AliasState], set[int], RetentionPolicy | None]:
        numbers = [
            int(n)
            for n in tx.execute(
                select(model_versions.c.number).where(
                    model_versions.c.model_id == model_id,
                    ~model_versions.c.id.in_(select(archived_versions.c.version_id)),
                )
            ).scalars()
        ]
        history = []
        for entry in self._history(tx, model_id, None, 10_000_000):
            pointed = {entry.version} if entry.version is not None else set()
            pointed |= {entry.state[k] for k in ("canary", "shadow") if isinstance(entry.state.get(k), int)}
            history.append(AliasState(entry.alias, entry.at.timestamp(), frozenset(pointed)))
        pinned = {
            int(n)
            for n in tx.execute(
                select(model_versions.c.number)
                .join(aliases, aliases.c.version_id == model_versions.c.id)
                .where(aliases.c.model_id == model_id)
            ).scalars()
        }
        for row in tx.execute(select(alias_releases).where(alias_releases.c.model_id == model_id)).all():
            for version_id in (row.canary_version_id, row.shadow_version_id):
                if version_id is not None:
                    pinned.add(
                        int(
                            tx.execute(
                                select(model_versions.c.number).where(model_versions.c.id == version_id)
                            ).scalar_one()
                        )
                    )
        for payload in tx.execute(
            select(pending_changes.c.payload).where(
                pending_changes.c.model_id == model_id, pending_changes.c.status == "pending"
            )
        ).scalars():
            for key in ("version", "canary", "shadow"):
                if isinstance(payload.get(key), int):
                    pinned.add(int(payload[key]))
        return numbers, history, pinned, self._retention(tx, model_id)


class _SelfApproval(Forbidden):
    """The requester of a change tried to approve or reject it."""
