"""The registry store: models, versions, artifacts rows and aliases in SQL.

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
from typing import Any

from sqlalchemy import Connection, Row, delete, func, select, update

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
from modelport.registry.database import Database
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
    feedback,
    model_versions,
    models,
    prediction_log_policies,
    protected_aliases,
    reference_profiles,
    registry_state,
    validation_reports,
    version_labels,
)

__all__ = ["POLICIES", "NewVersion", "RegistryStore"]

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


def _log_policy(row: Any) -> dict[str, Any]:
    get: Any = row.__getitem__
    return {
        "sample_rate": float(get("sample_rate")),
        "redact": list(get("redact")),
        "pseudonymise": list(get("pseudonymise")),
        "subject": get("subject"),
    }


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything stored is UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class RegistryStore:
    """SQL access for the registry. Every public method is one transaction."""

    def __init__(self, database: Database) -> None:
        from modelport.registry.release_store import ReleaseStore

        self.db = database
        self.releases = ReleaseStore(self)

    # -- writes ---------------------------------------------------------------------------------

    def add_version(self, new: NewVersion, *, alias: str | None = None) -> VersionRecord:
        """Insert a version (creating the model on first use) and optionally point ``alias`` at it."""
        check_model_name(new.model)
        if alias is not None:
            check_alias_name(alias)
        now = datetime.now(UTC)
        with self.db.write() as conn:
            conn.execute(
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
            model_id, number = conn.execute(
                update(models)
                .where(models.c.name == new.model)
                .values(latest_version=models.c.latest_version + 1)
                .returning(models.c.id, models.c.latest_version)
            ).one()
            version_uuid = str(uuidlib.uuid4())
            version_id = conn.execute(
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
                conn.execute(
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
                conn.execute(
                    reference_profiles.insert().values(
                        version_id=version_id, profile=new.profile, created_at=now
                    )
                )
            record = self._version_by_id(conn, version_id)
            self._audit(
                conn,
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
                self._refuse_if_releasing(conn, model_id, new.model, alias)
                guarded = conn.execute(
                    select(protected_aliases.c.alias).where(
                        protected_aliases.c.model_id == model_id, protected_aliases.c.alias == alias
                    )
                ).first()
                if guarded is not None:  # a new version has no validation report (nor an approval)
                    raise PromotionRefused(
                        f"{new.model}@{alias} is protected: register without --alias, validate the new "
                        f"version, then move the alias (`modelport alias set`)"
                    )
                self._point_alias(conn, model_id, alias, version_id, new.creator, now)
                self._audit(conn, new.creator, "alias.set", f"{new.model}@{alias}", after={"version": number})
            self._bump_generation(conn)
            return record if alias is None else self._version_by_id(conn, version_id)

    def set_alias(
        self, name: str, alias: str, number: int, *, actor: str = "", note: dict[str, Any] | None = None
    ) -> VersionRecord:
        """Point ``name@alias`` at version ``number`` (creating or moving the alias); ``note`` is added to
        the audit record (a promotion override's reason)."""
        check_alias_name(alias)
        check_version_number(number)
        with self.db.write() as conn:
            model_id = self._model_id(conn, name)
            version_id = self._version_id(conn, name, number)
            self._refuse_if_releasing(conn, model_id, name, alias)
            before = self._alias_number(conn, model_id, alias)
            self._point_alias(conn, model_id, alias, version_id, actor, datetime.now(UTC))
            self._audit(
                conn,
                actor,
                "alias.set",
                f"{name}@{alias}",
                before=None if before is None else {"version": before},
                after={"version": number, **(note or {})},
            )
            self._bump_generation(conn)
            return self._version_by_id(conn, version_id)

    def remove_alias(self, name: str, alias: str, *, actor: str = "") -> None:
        check_alias_name(alias)
        with self.db.write() as conn:
            model_id = self._model_id(conn, name)
            self._refuse_if_releasing(conn, model_id, name, alias)
            before = self._alias_number(conn, model_id, alias)
            removed = conn.execute(
                delete(aliases).where(aliases.c.model_id == model_id, aliases.c.name == alias)
            ).rowcount
            if not removed:
                raise AliasNotFound(f"model {name!r} has no alias {alias!r}")
            self.add_history(conn, model_id, alias, None, {}, "remove", actor, datetime.now(UTC))
            self._audit(conn, actor, "alias.remove", f"{name}@{alias}", before={"version": before})
            self._bump_generation(conn)

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
        with self.db.write() as conn:
            version_id = self._version_id(conn, name, number)
            before = self._version_by_id(conn, version_id)
            old = before.artifact("onnx")
            conn.execute(
                delete(artifacts).where(artifacts.c.version_id == version_id, artifacts.c.role == "onnx")
            )
            conn.execute(
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
            conn.execute(
                update(model_versions)
                .where(model_versions.c.id == version_id)
                .values(serving_format="onnx", conversion=conversion, lineage=lineage)
            )
            self._audit(
                conn,
                actor,
                "version.migrate",
                before.ref,
                before={"onnx": old.digest if old else None, "serving_format": before.serving_format},
                after={"onnx": artifact.digest, "serving_format": "onnx", "migration": migration},
            )
            self._bump_generation(conn)
            return self._version_by_id(conn, version_id)

    # -- the promotion gate and validation reports ----------------------------------------------

    def protect_alias(self, name: str, alias: str, *, actor: str, protect: bool = True) -> bool:
        """Declare ``name@alias`` protected (or not); returns whether anything changed."""
        check_alias_name(alias)
        with self.db.write() as conn:
            model_id = self._model_id(conn, name)
            key = (protected_aliases.c.model_id == model_id) & (protected_aliases.c.alias == alias)
            exists = conn.execute(select(protected_aliases.c.alias).where(key)).first() is not None
            if exists == protect:
                return False
            if protect:
                conn.execute(
                    protected_aliases.insert().values(
                        model_id=model_id, alias=alias, created_at=datetime.now(UTC), created_by=actor
                    )
                )
            else:
                conn.execute(delete(protected_aliases).where(key))
            self._audit(conn, actor, "alias.protect" if protect else "alias.unprotect", f"{name}@{alias}")
            self._bump_generation(conn)
            return True

    def protected(self, name: str) -> list[str]:
        with self.db.read() as conn:
            model_id = self._model_id(conn, name)
            return sorted(
                conn.execute(
                    select(protected_aliases.c.alias).where(protected_aliases.c.model_id == model_id)
                ).scalars()
            )

    def add_report(
        self,
        name: str,
        number: int,
        *,
        passed: bool,
        environment_hash: str,
        report: dict[str, Any],
        actor: str,
    ) -> int:
        """Attach a validation report to a version (audited); returns its id."""
        with self.db.write() as conn:
            version_id = self._version_id(conn, name, number)
            report_id = conn.execute(
                validation_reports.insert()
                .values(
                    version_id=version_id,
                    created_at=datetime.now(UTC),
                    created_by=actor,
                    environment_hash=environment_hash,
                    passed=passed,
                    report=report,
                )
                .returning(validation_reports.c.id)
            ).scalar_one()
            self._audit(
                conn,
                actor,
                "validation.record",
                f"{name}@{number}",
                after={"report": int(report_id), "passed": passed, "environment": environment_hash},
            )
            return int(report_id)

    def reports(self, name: str, number: int) -> list[dict[str, Any]]:
        """A version's validation reports, newest first (id, time, actor, environment, verdict, report)."""
        with self.db.read() as conn:
            version_id = self._version_id(conn, name, number)
            rows = conn.execute(
                select(validation_reports)
                .where(validation_reports.c.version_id == version_id)
                .order_by(validation_reports.c.id.desc())
            ).all()
        return [
            {
                "id": row.id,
                "created_at": _utc(row.created_at).isoformat(),
                "created_by": row.created_by,
                "environment_hash": row.environment_hash,
                "passed": bool(row.passed),
                "report": row.report,
            }
            for row in rows
        ]

    def has_passing_report(self, name: str, number: int, environment_hash: str) -> bool:
        """Whether the newest report for this version in this environment passed."""
        with self.db.read() as conn:
            version_id = self._version_id(conn, name, number)
            passed = conn.execute(
                select(validation_reports.c.passed)
                .where(
                    validation_reports.c.version_id == version_id,
                    validation_reports.c.environment_hash == environment_hash,
                )
                .order_by(validation_reports.c.id.desc())
                .limit(1)
            ).scalar_one_or_none()
        return bool(passed)

    def _version_id(self, conn: Connection, name: str, number: int) -> int:
        model_id = self._model_id(conn, name)
        version_id = conn.execute(
            select(model_versions.c.id).where(
                model_versions.c.model_id == model_id, model_versions.c.number == number
            )
        ).scalar_one_or_none()
        if version_id is None:
            raise VersionNotFound(f"model {name!r} has no version {number}")
        return int(version_id)

    def _alias_number(self, conn: Connection, model_id: int, alias: str) -> int | None:
        number = conn.execute(
            select(model_versions.c.number)
            .join(aliases, aliases.c.version_id == model_versions.c.id)
            .where(aliases.c.model_id == model_id, aliases.c.name == alias)
        ).scalar_one_or_none()
        return None if number is None else int(number)

    def _audit(
        self, conn: Connection, actor: str, action: str, target: str, *, before: Any = None, after: Any = None
    ) -> None:
        audit.append(
            conn,
            actor=actor or "unknown",
            action=action,
            target=target,
            before=before,
            after=after,
            is_sqlite=self.db.is_sqlite,
        )

    def append_audit(
        self, actor: str, action: str, target: str, *, before: Any = None, after: Any = None
    ) -> None:
        """A record of its own (a denied attempt: nothing else changes)."""
        with self.db.write() as conn:
            self._audit(conn, actor, action, target, before=before, after=after)

    def audit_records(self, **filters: Any) -> list[audit.AuditRecord]:
        with self.db.read() as conn:
            return audit.records(conn, **filters)

    def verify_audit(self) -> audit.Verification:
        with self.db.read() as conn:
            return audit.verify(conn)

    @staticmethod
    def _bump_generation(conn: Connection) -> None:
        conn.execute(
            update(registry_state)
            .where(registry_state.c.id == 1)
            .values(generation=registry_state.c.generation + 1)
        )

    def set_policy(self, name: str, on_violation: str, *, actor: str = "") -> None:
        if on_violation not in POLICIES:
            raise InvalidInput(
                f"on-violation policy must be one of {', '.join(POLICIES)}, not {on_violation!r}"
            )
        with self.db.write() as conn:
            model_id = self._model_id(conn, name)
            before = conn.execute(select(models.c.on_violation).where(models.c.id == model_id)).scalar_one()
            conn.execute(update(models).where(models.c.id == model_id).values(on_violation=on_violation))
            self._audit(
                conn,
                actor,
                "policy.set",
                name,
                before={"on_violation": before},
                after={"on_violation": on_violation},
            )
            self._bump_generation(conn)

    def set_log_policy(self, name: str, policy: dict[str, Any], *, actor: str) -> None:
        """Store what the prediction log keeps for ``name`` (audited as a settings change)."""
        with self.db.write() as conn:
            model_id = self._model_id(conn, name)
            before = conn.execute(
                select(prediction_log_policies).where(prediction_log_policies.c.model_id == model_id)
            ).one_or_none()
            values = {
                "model_id": model_id,
                "sample_rate": float(policy["sample_rate"]),
                "redact": list(policy["redact"]),
                "pseudonymise": list(policy["pseudonymise"]),
                "subject": policy.get("subject"),
                "updated_at": datetime.now(UTC),
                "updated_by": actor[:200],
            }
            conn.execute(
                self.db.upsert(
                    prediction_log_policies,
                    values,
                    keys=["model_id"],
                    update=["sample_rate", "redact", "pseudonymise", "subject", "updated_at", "updated_by"],
                )
            )
            self._audit(
                conn,
                actor,
                "log_policy.set",
                name,
                before=None if before is None else _log_policy(before._mapping),
                after=_log_policy(values),
            )
            self._bump_generation(conn)

    def log_policies(self) -> dict[str, dict[str, Any]]:
        """Every model's prediction-log policy (models without one log nothing)."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(models.c.name, prediction_log_policies).join(
                    prediction_log_policies, prediction_log_policies.c.model_id == models.c.id
                )
            ).all()
        return {row.name: _log_policy(row._mapping) for row in rows}

    def set_profile(self, name: str, number: int, profile: dict[str, Any], *, actor: str) -> None:
        """Store (or replace) a version's reference profile (audited)."""
        with self.db.write() as conn:
            version_id = self._version_id(conn, name, number)
            conn.execute(
                self.db.upsert(
                    reference_profiles,
                    {"version_id": version_id, "profile": profile, "created_at": datetime.now(UTC)},
                    keys=["version_id"],
                    update=["profile", "created_at"],
                )
            )
            self._audit(conn, actor, "profile.set", f"{name}@{number}", after={"rows": profile.get("rows")})

    def profiles(self, name: str) -> dict[int, dict[str, Any]]:
        """Reference profiles of a model's versions, by version number (versions without one are absent)."""
        with self.db.read() as conn:
            model_id = self._model_id(conn, name)
            rows = conn.execute(
                select(model_versions.c.number, reference_profiles.c.profile)
                .join(reference_profiles, reference_profiles.c.version_id == model_versions.c.id)
                .where(model_versions.c.model_id == model_id)
            ).all()
        return {int(row.number): row.profile for row in rows}

    def add_feedback(self, name: str, labels: list[tuple[str, int, str]], *, actor: str) -> int:
        """Store ground-truth labels ``(request id, row, label)`` for ``name``; a label given again for
        the same request row replaces the earlier one. Returns how many were stored."""
        now = datetime.now(UTC)
        with self.db.write() as conn:
            model_id = self._model_id(conn, name)
            latest = {(request_id, row): label for request_id, row, label in labels}  # last one wins
            if latest:
                conn.execute(
                    self.db.upsert(
                        feedback,
                        None,
                        keys=["model_id", "request_id", "row"],
                        update=["label", "received_at", "received_by"],
                    ),
                    [
                        {
                            "model_id": model_id,
                            "request_id": request_id,
                            "row": row,
                            "label": label,
                            "received_at": now,
                            "received_by": actor[:200],
                        }
                        for (request_id, row), label in latest.items()
                    ],
                )
        return len(latest)

    def has_feedback(self, name: str) -> bool:
        with self.db.read() as conn:
            model_id = self._model_id(conn, name)
            return (
                conn.execute(select(feedback.c.row).where(feedback.c.model_id == model_id).limit(1)).first()
                is not None
            )

    def feedback_labels(self, name: str) -> dict[tuple[str, int], str]:
        """Every ground-truth label of ``name`` as ``{(request id, row): label}``."""
        with self.db.read() as conn:
            model_id = self._model_id(conn, name)
            rows = conn.execute(
                select(feedback.c.request_id, feedback.c.row, feedback.c.label).where(
                    feedback.c.model_id == model_id
                )
            ).all()
        return {(row.request_id, int(row.row)): row.label for row in rows}

    def policies(self) -> dict[str, str]:
        with self.db.read() as conn:
            return dict(conn.execute(select(models.c.name, models.c.on_violation)).all())

    def generation(self) -> int:
        """The change counter: differs from the last value read iff something servers see changed."""
        with self.db.read() as conn:
            return int(
                conn.execute(select(registry_state.c.generation).where(registry_state.c.id == 1)).scalar_one()
            )

    def routing_table(self) -> dict[str, dict[str, int]]:
        """Every model's aliases (plus ``latest``) as ``{model: {alias: version number}}``."""
        with self.db.read() as conn:
            names = dict(conn.execute(select(models.c.id, models.c.name)).all())
            latest = dict(conn.execute(select(models.c.id, models.c.latest_version)).all())
            table: dict[str, dict[str, int]] = {name: {} for name in names.values()}
            for model_id, alias_numbers in self._aliases_by_model(conn, None).items():
                table[names[model_id]].update(alias_numbers)
            for model_id, number in latest.items():
                if number:
                    table[names[model_id]][LATEST] = number
            return table

    def _point_alias(
        self,
        conn: Connection,
        model_id: int,
        alias: str,
        version_id: int,
        actor: str,
        now: datetime,
        action: str = "set",
    ) -> None:
        """Point the alias and append the new state to its history (the same transaction)."""
        self._archived_refusal(conn, version_id)
        number = conn.execute(
            select(model_versions.c.number).where(model_versions.c.id == version_id)
        ).scalar_one()
        self.add_history(conn, model_id, alias, version_id, {"version": number}, action, actor, now)
        conn.execute(
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

    # -- reads ----------------------------------------------------------------------------------

    def list_models(self) -> list[ModelRecord]:
        with self.db.read() as conn:
            rows = conn.execute(select(models).order_by(models.c.name)).all()
            alias_map = self._aliases_by_model(conn, None)
        return [self._model_record(row, alias_map.get(row.id, {})) for row in rows]

    def get_model(self, name: str) -> ModelRecord:
        check_model_name(name)
        with self.db.read() as conn:
            row = conn.execute(select(models).where(models.c.name == name)).one_or_none()
            if row is None:
                raise ModelNotFound(f"no model named {name!r}")
            return self._model_record(row, self._aliases_by_model(conn, row.id).get(row.id, {}))

    def list_versions(self, name: str) -> list[VersionRecord]:
        with self.db.read() as conn:
            model_id = self._model_id(conn, name)
            ids = conn.execute(
                select(model_versions.c.id)
                .where(model_versions.c.model_id == model_id)
                .order_by(model_versions.c.number)
            ).scalars()
            return [self._version_by_id(conn, version_id) for version_id in ids]

    def get_version(self, ref: ModelRef) -> VersionRecord:
        """Resolve a reference (number, alias or ``latest``) to its version."""
        with self.db.read() as conn:
            model_id = self._model_id(conn, ref.name)
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
            version_id = conn.execute(query).scalar_one_or_none()
            if version_id is None:
                if ref.alias not in (None, LATEST):
                    raise AliasNotFound(missing)
                raise VersionNotFound(missing)
            return self._version_by_id(conn, version_id)

    def referenced_digests(self) -> set[str]:
        """Every digest a committed version points at (the artifact store's live set)."""
        with self.db.read() as conn:
            return set(conn.execute(select(artifacts.c.digest).distinct()).scalars())

    def count_versions(self, name: str) -> int:
        with self.db.read() as conn:
            model_id = self._model_id(conn, name)
            return int(
                conn.execute(select(func.count()).where(model_versions.c.model_id == model_id)).scalar_one()
            )

    # -- helpers --------------------------------------------------------------------------------

    @staticmethod
    def add_history(
        conn: Connection,
        model_id: int,
        alias: str,
        version_id: int | None,
        state: dict[str, Any],
        action: str,
        actor: str,
        at: datetime,
    ) -> None:
        conn.execute(
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

    @staticmethod
    def _refuse_if_releasing(conn: Connection, model_id: int, name: str, alias: str) -> None:
        running = conn.execute(
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
    def _archived_refusal(conn: Connection, version_id: int) -> None:
        archived = conn.execute(
            select(archived_versions.c.archived_at).where(archived_versions.c.version_id == version_id)
        ).scalar_one_or_none()
        if archived is not None:
            row = conn.execute(
                select(models.c.name, model_versions.c.number)
                .join(models, models.c.id == model_versions.c.model_id)
                .where(model_versions.c.id == version_id)
            ).one()
            raise VersionArchived(
                f"{row.name}@{row.number} was archived on {_utc(archived).date().isoformat()}: "
                "its record and audit history are kept, its artifacts were freed"
            )

    def _model_id(self, conn: Connection, name: str) -> int:
        check_model_name(name)
        model_id = conn.execute(select(models.c.id).where(models.c.name == name)).scalar_one_or_none()
        if model_id is None:
            raise ModelNotFound(f"no model named {name!r}")
        return int(model_id)

    @staticmethod
    def _aliases_by_model(conn: Connection, model_id: int | None) -> dict[int, dict[str, int]]:
        query = select(aliases.c.model_id, aliases.c.name, model_versions.c.number).join(
            model_versions, model_versions.c.id == aliases.c.version_id
        )
        if model_id is not None:
            query = query.where(aliases.c.model_id == model_id)
        result: dict[int, dict[str, int]] = {}
        for row in conn.execute(query.order_by(aliases.c.name)):
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
    def _version_by_id(conn: Connection, version_id: int) -> VersionRecord:
        row = conn.execute(
            select(model_versions, models.c.name.label("model_name"))
            .join(models, models.c.id == model_versions.c.model_id)
            .where(model_versions.c.id == version_id)
        ).one()
        blobs = conn.execute(
            select(artifacts).where(artifacts.c.version_id == version_id).order_by(artifacts.c.role)
        ).all()
        alias_names: Iterable[str] = conn.execute(
            select(aliases.c.name).where(aliases.c.version_id == version_id).order_by(aliases.c.name)
        ).scalars()
        label = conn.execute(
            select(version_labels.c.label).where(version_labels.c.version_id == version_id)
        ).scalar_one_or_none()
        archived = conn.execute(
            select(archived_versions.c.archived_at).where(archived_versions.c.version_id == version_id)
        ).scalar_one_or_none()
        return VersionRecord(
            model=row.model_name,
            number=row.number,
            uuid=row.uuid,
            status=row.status,
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
