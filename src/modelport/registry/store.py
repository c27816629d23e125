"""The registry store: models, versions, artifacts rows and aliases in SQL.

The other domains keep their SQL beside their packages — ``releases/store.py``, ``monitoring/store.py``,
``validation/store.py``, ``security/store.py`` — over the same :class:`~modelport.registry.database.Database`,
audit chain and generation; this store hands out the first three as ``releases``, ``monitoring`` and
``validation`` and resolves names for them inside their transactions (``model_id``, ``version_id``, …).

It knows nothing of files or formats: callers hand it finished version data whose blobs are already
durable in the artifact store. Version numbers are allocated inside the transaction that inserts the
version (``UPDATE models SET latest_version = latest_version + 1 … RETURNING``), so concurrent
registrations of one name serialise on that row and a failed one rolls its number back: no gaps, no
duplicates, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row, delete, func, select, update

from modelport.errors import (
    AliasNotFound,
    Conflict,
    InvalidInput,
    ModelNotFound,
    PromotionRefused,
    VersionArchived,
    VersionNotFound,
)
from modelport.registry import audit
from modelport.registry.database import Database, Transaction
from modelport.registry.names import (
    LATEST,
    ModelRef,
    check_alias_name,
    check_model_name,
    check_version_number,
)
from modelport.registry.records import ArtifactRecord, ModelRecord, VersionRecord
from modelport.registry.schema import (
    alias_history,
    alias_releases,
    aliases,
    archived_versions,
    artifacts,
    model_versions,
    models,
    protected_aliases,
    reference_profiles,
    registry_state,
    version_labels,
)

if TYPE_CHECKING:
    from modelport.batch.store import JobStore
    from modelport.monitoring.store import MonitoringStore
    from modelport.releases.store import ReleaseStore
    from modelport.validation.store import ValidationStore

__all__ = ["POLICIES", "NewVersion", "RegistryStore", "VersionSummary"]

POLICIES = ("flag", "reject")


@dataclass(frozen=True, slots=True)
class NewVersion:
    """Everything a version row holds, before it has a number."""

    model: str
    status: str
    serving_format: str
    signature: dict[str, Any]
    golden: dict[str, Any]
    environment: dict[str, Any]
    lineage: dict[str, Any]
    conversion: dict[str, Any]
    description: str
    tags: dict[str, str]
    creator: str
    artifacts: tuple[ArtifactRecord, ...]
    model_description: str = ""
    profile: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class VersionSummary:
    """A version as a listing shows it (the console's Model page): no signature, golden cases or
    artifacts, so a page of them is two queries however many versions the model has."""

    number: int
    status: str
    label: str | None
    creator: str
    created_at: datetime
    aliases: tuple[str, ...]


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything stored is UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class RegistryStore:
    """SQL access for the registry. Every public method is one transaction, except those under
    "inside a caller's transaction", which the other domains' stores call in theirs."""

    def __init__(self, database: Database) -> None:
        # Imported here: each domain store imports the registry, which imports this module.
        from modelport.batch.store import JobStore
        from modelport.monitoring.store import MonitoringStore
        from modelport.releases.store import ReleaseStore
        from modelport.validation.store import ValidationStore

        self.db = database
        self.releases: ReleaseStore = ReleaseStore(self)
        self.monitoring: MonitoringStore = MonitoringStore(self)
        self.validation: ValidationStore = ValidationStore(self)
        self.jobs: JobStore = JobStore(self)

    # -- writes ---------------------------------------------------------------------------------

    def add_version(self, new: NewVersion, *, alias: str | None = None) -> VersionRecord:
        """Insert a version (creating the model on first use) and optionally point ``alias`` at it."""
        check_model_name(new.model)
        if alias is not None:
            check_alias_name(alias)
        now = datetime.now(UTC)
        with self.db.write() as tx:
            tx.execute(
                self.db.insert_ignoring_conflict(
                    models,
                    {
                        "name": new.model,
                        "description": new.model_description,
                        "latest_version": 0,
                        "created_at": now,
                        "on_violation": "flag",
                    },
                )
            )
            model_id, number = tx.execute(
                update(models)
                .where(models.c.name == new.model)
                .values(latest_version=models.c.latest_version + 1)
                .returning(models.c.id, models.c.latest_version)
            ).one()
            version_uuid = str(uuidlib.uuid4())
            version_id = tx.execute(
                model_versions.insert()
                .values(
                    uuid=version_uuid,
                    model_id=model_id,
                    number=number,
                    status=new.status,
                    serving_format=new.serving_format,
                    signature=new.signature,
                    golden=new.golden,
                    environment=new.environment,
                    lineage=new.lineage,
                    conversion=new.conversion,
                    description=new.description,
                    tags=new.tags,
                    creator=new.creator,
                    created_at=now,
                )
                .returning(model_versions.c.id)
            ).scalar_one()
            for artifact in new.artifacts:
                tx.execute(
                    artifacts.insert().values(
                        version_id=version_id,
                        role=artifact.role,
                        format=artifact.format,
                        digest=artifact.digest,
                        size=artifact.size,
                        details=artifact.details,
                    )
                )
            if new.profile is not None:
                tx.execute(
                    reference_profiles.insert().values(
                        version_id=version_id, profile=new.profile, created_at=now
                    )
                )
            record = self._version_by_id(tx, version_id)
            tx.audit(
                new.creator,
                "version.register",
                record.ref,
                after={
                    "uuid": record.uuid,
                    "serving_format": record.serving_format,
                    "artifacts": {a.role: a.digest for a in record.artifacts},
                },
            )
            if alias is not None:
                self._refuse_if_releasing(tx, model_id, new.model, alias)
                guarded = tx.execute(
                    select(protected_aliases.c.alias).where(
                        protected_aliases.c.model_id == model_id, protected_aliases.c.alias == alias
                    )
                ).first()
                if guarded is not None:  # a new version has no validation report (nor an approval)
                    raise PromotionRefused(
                        f"{new.model}@{alias} is protected: register without --alias, validate the new "
                        f"version, then move the alias (`modelport alias set`)"
                    )
                self.point_alias(tx, model_id, alias, version_id, new.creator, now)
                tx.audit(new.creator, "alias.set", f"{new.model}@{alias}", after={"version": number})
            tx.bump_generation()
            return record if alias is None else self._version_by_id(tx, version_id)

    def set_alias(
        self, name: str, alias: str, number: int, *, actor: str = "", note: dict[str, Any] | None = None
    ) -> VersionRecord:
        """Point ``name@alias`` at version ``number`` (creating or moving the alias); ``note`` is added to
        the audit record (a promotion override's reason)."""
        check_alias_name(alias)
        check_version_number(number)
        with self.db.write() as tx:
            model_id = self.model_id(tx, name)
            version_id = self.version_id(tx, name, number)
            self._refuse_if_releasing(tx, model_id, name, alias)
            before = self.alias_number(tx, model_id, alias)
            self.point_alias(tx, model_id, alias, version_id, actor, datetime.now(UTC))
            tx.audit(
                actor,
                "alias.set",
                f"{name}@{alias}",
                before=None if before is None else {"version": before},
                after={"version": number, **(note or {})},
            )
            tx.bump_generation()
            return self._version_by_id(tx, version_id)

    def remove_alias(self, name: str, alias: str, *, actor: str = "") -> None:
        check_alias_name(alias)
        with self.db.write() as tx:
            model_id = self.model_id(tx, name)
            self._refuse_if_releasing(tx, model_id, name, alias)
            before = self.alias_number(tx, model_id, alias)
            removed = tx.execute(
                delete(aliases).where(aliases.c.model_id == model_id, aliases.c.name == alias)
            ).rowcount
            if not removed:
                raise AliasNotFound(f"model {name!r} has no alias {alias!r}")
            self.add_history(tx, model_id, alias, None, {}, "remove", actor, datetime.now(UTC))
            tx.audit(actor, "alias.remove", f"{name}@{alias}", before={"version": before})
            tx.bump_generation()

    def replace_twin(
        self,
        name: str,
        number: int,
        *,
        artifact: ArtifactRecord,
        conversion: dict[str, Any],
        migration: dict[str, Any],
        actor: str,
    ) -> VersionRecord:
        """A version's ONNX twin, re-made in a newer environment (`doctor --fix`): the one audited
        exception to immutable versions. The migration is appended to the version's lineage."""
        with self.db.write() as tx:
            version_id = self.version_id(tx, name, number)
            before = self._version_by_id(tx, version_id)
            old = before.artifact("onnx")
            tx.execute(
                delete(artifacts).where(artifacts.c.version_id == version_id, artifacts.c.role == "onnx")
            )
            tx.execute(
                artifacts.insert().values(
                    version_id=version_id,
                    role="onnx",
                    format=artifact.format,
                    digest=artifact.digest,
                    size=artifact.size,
                    details=artifact.details,
                )
            )
            lineage = dict(before.lineage)
            lineage["migrations"] = [*lineage.get("migrations", []), migration]
            tx.execute(
                update(model_versions)
                .where(model_versions.c.id == version_id)
                .values(serving_format="onnx", conversion=conversion, lineage=lineage)
            )
            tx.audit(
                actor,
                "version.migrate",
                before.ref,
                before={"onnx": old.digest if old else None, "serving_format": before.serving_format},
                after={"onnx": artifact.digest, "serving_format": "onnx", "migration": migration},
            )
            tx.bump_generation()
            return self._version_by_id(tx, version_id)

    # -- the promotion gate (the validation reports it checks: validation/store.py) -------------

    def protect_alias(self, name: str, alias: str, *, actor: str, protect: bool = True) -> bool:
        """Declare ``name@alias`` protected (or not); returns whether anything changed."""
        check_alias_name(alias)
        with self.db.write() as tx:
            model_id = self.model_id(tx, name)
            key = (protected_aliases.c.model_id == model_id) & (protected_aliases.c.alias == alias)
            exists = tx.execute(select(protected_aliases.c.alias).where(key)).first() is not None
            if exists == protect:
                return False
            if protect:
                tx.execute(
                    protected_aliases.insert().values(
                        model_id=model_id, alias=alias, created_at=datetime.now(UTC), created_by=actor
                    )
                )
            else:
                tx.execute(delete(protected_aliases).where(key))
            tx.audit(actor, "alias.protect" if protect else "alias.unprotect", f"{name}@{alias}")
            tx.bump_generation()
            return True

    def protected(self, name: str) -> list[str]:
        with self.db.read() as tx:
            model_id = self.model_id(tx, name)
            return sorted(
                tx.execute(
                    select(protected_aliases.c.alias).where(protected_aliases.c.model_id == model_id)
                ).scalars()
            )

    # -- the audit chain, policies and what servers read ----------------------------------------

    def append_audit(
        self, actor: str, action: str, target: str, *, before: Any = None, after: Any = None
    ) -> None:
        """A record of its own (a denied attempt: nothing else changes)."""
        with self.db.write() as tx:
            tx.audit(actor, action, target, before=before, after=after)

    def audit_records(self, **filters: Any) -> list[audit.AuditRecord]:
        with self.db.read() as tx:
            return audit.records(tx.connection, **filters)

    def verify_audit(self) -> audit.Verification:
        with self.db.read() as tx:
            return audit.verify(tx.connection)

    def set_policy(self, name: str, on_violation: str, *, actor: str = "") -> None:
        if on_violation not in POLICIES:
            raise InvalidInput(
                f"on-violation policy must be one of {', '.join(POLICIES)}, not {on_violation!r}"
            )
        with self.db.write() as tx:
            model_id = self.model_id(tx, name)
            before = tx.execute(select(models.c.on_violation).where(models.c.id == model_id)).scalar_one()
            tx.execute(update(models).where(models.c.id == model_id).values(on_violation=on_violation))
            tx.audit(
                actor,
                "policy.set",
                name,
                before={"on_violation": before},
                after={"on_violation": on_violation},
            )
            tx.bump_generation()

    def policies(self) -> dict[str, str]:
        with self.db.read() as tx:
            return dict(tx.execute(select(models.c.name, models.c.on_violation)).all())

    def generation(self) -> int:
        """The change counter: differs from the last value read iff something servers see changed."""
        with self.db.read() as tx:
            return int(
                tx.execute(select(registry_state.c.generation).where(registry_state.c.id == 1)).scalar_one()
            )

    def routing_table(self) -> dict[str, dict[str, int]]:
        """Every model's aliases (plus ``latest``) as ``{model: {alias: version number}}``."""
        with self.db.read() as tx:
            names = dict(tx.execute(select(models.c.id, models.c.name)).all())
            latest = dict(tx.execute(select(models.c.id, models.c.latest_version)).all())
            table: dict[str, dict[str, int]] = {name: {} for name in names.values()}
            for model_id, alias_numbers in self._aliases_by_model(tx, None).items():
                table[names[model_id]].update(alias_numbers)
            for model_id, number in latest.items():
                if number:
                    table[names[model_id]][LATEST] = number
            return table

    # -- reads ----------------------------------------------------------------------------------

    def list_models(self) -> list[ModelRecord]:
        with self.db.read() as tx:
            rows = tx.execute(select(models).order_by(models.c.name)).all()
            alias_map = self._aliases_by_model(tx, None)
        return [self._model_record(row, alias_map.get(row.id, {})) for row in rows]

    def get_model(self, name: str) -> ModelRecord:
        check_model_name(name)
        with self.db.read() as tx:
            row = tx.execute(select(models).where(models.c.name == name)).one_or_none()
            if row is None:
                raise ModelNotFound(f"no model named {name!r}")
            return self._model_record(row, self._aliases_by_model(tx, row.id).get(row.id, {}))

    def list_versions(self, name: str) -> list[VersionRecord]:
        with self.db.read() as tx:
            model_id = self.model_id(tx, name)
            ids = tx.execute(
                select(model_versions.c.id)
                .where(model_versions.c.model_id == model_id)
                .order_by(model_versions.c.number)
            ).scalars()
            return [self._version_by_id(tx, version_id) for version_id in ids]

    def version_metrics(self, name: str, numbers: Iterable[int]) -> dict[int, dict[str, Any]]:
        """The metrics recorded in the lineage of ``name``'s versions ``numbers`` (at most 1,000; a page
        of a listing), by number: one query on the ``(model_id, number)`` index, joined to the model."""
        check_model_name(name)
        chosen = sorted(set(numbers))[:1000]
        if not chosen:
            return {}
        with self.db.read() as tx:
            rows = tx.execute(
                select(model_versions.c.number, model_versions.c.lineage)
                .join(models, models.c.id == model_versions.c.model_id)
                .where(models.c.name == name, model_versions.c.number.in_(chosen))
            ).all()
        return {row.number: dict((row.lineage or {}).get("metrics") or {}) for row in rows}

    def version_summaries(
        self, name: str, *, limit: int = 50, before: int | None = None
    ) -> list[VersionSummary]:
        """Up to ``limit`` versions of ``name``, newest first, numbered below ``before`` if given: one
        query for the rows (label and archive state joined in, on the ``(model_id, number)`` index) and
        one for their aliases. ``list_versions`` reads five queries per version."""
        limit = max(1, min(limit, 1000))
        with self.db.read() as tx:
            model_id = self.model_id(tx, name)
            query = (
                select(
                    model_versions.c.id,
                    model_versions.c.number,
                    model_versions.c.status,
                    model_versions.c.creator,
                    model_versions.c.created_at,
                    version_labels.c.label,
                    archived_versions.c.archived_at,
                )
                .outerjoin(version_labels, version_labels.c.version_id == model_versions.c.id)
                .outerjoin(archived_versions, archived_versions.c.version_id == model_versions.c.id)
                .where(model_versions.c.model_id == model_id)
                .order_by(model_versions.c.number.desc())
                .limit(limit)
            )
            if before is not None:
                query = query.where(model_versions.c.number < before)
            rows = tx.execute(query).all()
            names: dict[int, list[str]] = {}
            if rows:
                for version_id, alias in tx.execute(
                    select(aliases.c.version_id, aliases.c.name)
                    .where(  # the primary key's model_id first: aliases has no version_id index
                        aliases.c.model_id == model_id,
                        aliases.c.version_id.in_([row.id for row in rows]),
                    )
                    .order_by(aliases.c.name)
                ):
                    names.setdefault(version_id, []).append(alias)
        return [
            VersionSummary(
                number=row.number,
                status="archived" if row.archived_at is not None else row.status,
                label=row.label,
                creator=row.creator,
                created_at=_utc(row.created_at),
                aliases=tuple(names.get(row.id, ())),
            )
            for row in rows
        ]

    def get_version(self, ref: ModelRef) -> VersionRecord:
        """Resolve a reference (number, alias or ``latest``) to its version."""
        with self.db.read() as tx:
            model_id = self.model_id(tx, ref.name)
            query = select(model_versions.c.id).where(model_versions.c.model_id == model_id)
            if ref.version is not None:
                query = query.where(model_versions.c.number == ref.version)
                missing = f"model {ref.name!r} has no version {ref.version}"
            elif ref.label is not None:
                query = select(version_labels.c.version_id).where(
                    version_labels.c.model_id == model_id, version_labels.c.label == ref.label
                )
                missing = f"model {ref.name!r} has no version labelled {ref.label}"
            elif ref.alias == LATEST:
                query = query.order_by(model_versions.c.number.desc()).limit(1)
                missing = f"model {ref.name!r} has no versions"
            else:
                query = select(aliases.c.version_id).where(
                    aliases.c.model_id == model_id, aliases.c.name == ref.alias
                )
                missing = f"model {ref.name!r} has no alias {ref.alias!r}"
            version_id = tx.execute(query).scalar_one_or_none()
            if version_id is None:
                if ref.alias not in (None, LATEST):
                    raise AliasNotFound(missing)
                raise VersionNotFound(missing)
            return self._version_by_id(tx, version_id)

    def referenced_digests(self) -> set[str]:
        """Every digest a committed version points at (the artifact store's live set)."""
        with self.db.read() as tx:
            return set(tx.execute(select(artifacts.c.digest).distinct()).scalars())

    def count_versions(self, name: str) -> int:
        with self.db.read() as tx:
            model_id = self.model_id(tx, name)
            return int(
                tx.execute(select(func.count()).where(model_versions.c.model_id == model_id)).scalar_one()
            )

    # -- inside a caller's transaction ----------------------------------------------------------
    # The stores of releases, monitoring, validation and security share the registry's rows: they
    # resolve names and point aliases through these, in their own transaction.

    def model_id(self, tx: Transaction, name: str) -> int:
        """The model's row id; :class:`ModelNotFound` when there is none."""
        check_model_name(name)
        model_id = tx.execute(select(models.c.id).where(models.c.name == name)).scalar_one_or_none()
        if model_id is None:
            raise ModelNotFound(f"no model named {name!r}")
        return int(model_id)

    def version_id(self, tx: Transaction, name: str, number: int) -> int:
        """The version's row id; :class:`ModelNotFound` or :class:`VersionNotFound` when there is none."""
        model_id = self.model_id(tx, name)
        version_id = tx.execute(
            select(model_versions.c.id).where(
                model_versions.c.model_id == model_id, model_versions.c.number == number
            )
        ).scalar_one_or_none()
        if version_id is None:
            raise VersionNotFound(f"model {name!r} has no version {number}")
        return int(version_id)

    @staticmethod
    def alias_number(tx: Transaction, model_id: int, alias: str) -> int | None:
        """The version number the alias points at (``None``: no such alias)."""
        number = tx.execute(
            select(model_versions.c.number)
            .join(aliases, aliases.c.version_id == model_versions.c.id)
            .where(aliases.c.model_id == model_id, aliases.c.name == alias)
        ).scalar_one_or_none()
        return None if number is None else int(number)

    @staticmethod
    def refuse_archived(tx: Transaction, version_id: int) -> None:
        """Raise :class:`VersionArchived` if the version was archived (nothing can point at it)."""
        archived = tx.execute(
            select(archived_versions.c.archived_at).where(archived_versions.c.version_id == version_id)
        ).scalar_one_or_none()
        if archived is not None:
            row = tx.execute(
                select(models.c.name, model_versions.c.number)
                .join(models, models.c.id == model_versions.c.model_id)
                .where(model_versions.c.id == version_id)
            ).one()
            raise VersionArchived(
                f"{row.name}@{row.number} was archived on {_utc(archived).date().isoformat()}: "
                "its record and audit history are kept, its artifacts were freed"
            )

    def point_alias(
        self,
        tx: Transaction,
        model_id: int,
        alias: str,
        version_id: int,
        actor: str,
        now: datetime,
        action: str = "set",
    ) -> None:
        """Point the alias and append the new state to its history (the same transaction)."""
        self.refuse_archived(tx, version_id)
        number = tx.execute(
            select(model_versions.c.number).where(model_versions.c.id == version_id)
        ).scalar_one()
        self.add_history(tx, model_id, alias, version_id, {"version": number}, action, actor, now)
        tx.execute(
            self.db.upsert(
                aliases,
                {
                    "model_id": model_id,
                    "name": alias,
                    "version_id": version_id,
                    "updated_at": now,
                    "updated_by": actor[:200],
                },
                keys=["model_id", "name"],
                update=["version_id", "updated_at", "updated_by"],
            )
        )

    @staticmethod
    def add_history(
        tx: Transaction,
        model_id: int,
        alias: str,
        version_id: int | None,
        state: dict[str, Any],
        action: str,
        actor: str,
        at: datetime,
    ) -> None:
        """Append the alias's new state to its history (what rollback and retention read)."""
        tx.execute(
            alias_history.insert().values(
                model_id=model_id,
                alias=alias,
                version_id=version_id,
                state=state,
                action=action,
                at=at,
                actor=actor[:200] or "unknown",
            )
        )

    # -- helpers --------------------------------------------------------------------------------

    @staticmethod
    def _refuse_if_releasing(tx: Transaction, model_id: int, name: str, alias: str) -> None:
        running = tx.execute(
            select(alias_releases.c.release_id).where(
                alias_releases.c.model_id == model_id, alias_releases.c.alias == alias
            )
        ).first()
        if running is not None:
            raise Conflict(
                f"a release is running on {name}@{alias}: promote it, roll it back or stop it first "
                f"(`modelport release status {name}@{alias}`)"
            )

    @staticmethod
    def _aliases_by_model(tx: Transaction, model_id: int | None) -> dict[int, dict[str, int]]:
        query = select(aliases.c.model_id, aliases.c.name, model_versions.c.number).join(
            model_versions, model_versions.c.id == aliases.c.version_id
        )
        if model_id is not None:
            query = query.where(aliases.c.model_id == model_id)
        result: dict[int, dict[str, int]] = {}
        for row in tx.execute(query.order_by(aliases.c.name)):
            result.setdefault(row.model_id, {})[row.name] = row.number
        return result

    @staticmethod
    def _model_record(row: Row[Any], alias_numbers: dict[str, int]) -> ModelRecord:
        return ModelRecord(
            name=row.name,
            description=row.description,
            created_at=_utc(row.created_at),
            latest_version=row.latest_version,
            aliases=alias_numbers,
            on_violation=row.on_violation,
        )

    @staticmethod
    def _version_by_id(tx: Transaction, version_id: int) -> VersionRecord:
        row = tx.execute(
            select(model_versions, models.c.name.label("model_name"))
            .join(models, models.c.id == model_versions.c.model_id)
            .where(model_versions.c.id == version_id)
        ).one()
        blobs = tx.execute(
            select(artifacts).where(artifacts.c.version_id == version_id).order_by(artifacts.c.role)
        ).all()
        alias_names: Iterable[str] = tx.execute(
            select(aliases.c.name).where(aliases.c.version_id == version_id).order_by(aliases.c.name)
        ).scalars()
        label = tx.execute(
            select(version_labels.c.label).where(version_labels.c.version_id == version_id)
        ).scalar_one_or_none()
        archived = tx.execute(
            select(archived_versions.c.archived_at).where(archived_versions.c.version_id == version_id)
        ).scalar_one_or_none()
        return VersionRecord(
            model=row.model_name,
            number=row.number,
            uuid=row.uuid,
            # `gc` archives a version in its own table (record kept, artifacts freed): that is its status
            status="archived" if archived is not None else row.status,
            serving_format=row.serving_format,
            signature=row.signature,
            golden=row.golden,
            environment=row.environment,
            lineage=row.lineage,
            conversion=row.conversion,
            description=row.description,
            tags=row.tags,
            creator=row.creator,
            created_at=_utc(row.created_at),
            artifacts=tuple(ArtifactRecord(b.role, b.format, b.digest, b.size, b.details) for b in blobs),
            aliases=tuple(alias_names),
            label=label,
            archived_at=None if archived is None else _utc(archived),
        )
