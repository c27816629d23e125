"""SQL for validation reports (docs/validation.md): the evidence ``modelport validate`` stores on a
version, which the promotion gate of a protected alias checks (``Registry.check_gate``).

Every public method is one transaction over the registry's database; recording a report is audited in
that same transaction.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from modelport.registry.schema import model_versions, models, validation_reports

if TYPE_CHECKING:
    from modelport.registry.store import RegistryStore

__all__ = ["ValidationStore"]


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything stored is UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class ValidationStore:
    """Validation reports, sharing the registry store's database and audit chain
    (``registry.store.validation``)."""

    def __init__(self, store: RegistryStore) -> None:
        self.store = store
        self.db = store.db

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
        with self.db.write() as tx:
            version_id = self.store.version_id(tx, name, number)
            report_id = tx.execute(
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
            tx.audit(
                actor,
                "validation.record",
                f"{name}@{number}",
                after={"report": int(report_id), "passed": passed, "environment": environment_hash},
            )
            return int(report_id)

    def reports(self, name: str, number: int) -> list[dict[str, Any]]:
        """A version's validation reports, newest first (id, time, actor, environment, verdict, report)."""
        with self.db.read() as tx:
            version_id = self.store.version_id(tx, name, number)
            rows = tx.execute(
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

    def verdicts(self, name: str, numbers: list[int]) -> dict[int, bool]:
        """The newest report's verdict for each of ``numbers`` that has a report: one query (the
        console's model page, a page of versions at a time)."""
        if not numbers:
            return {}
        with self.db.read() as tx:
            rows = tx.execute(
                select(model_versions.c.number, validation_reports.c.passed)
                .join(model_versions, model_versions.c.id == validation_reports.c.version_id)
                .join(models, models.c.id == model_versions.c.model_id)
                .where(models.c.name == name, model_versions.c.number.in_(numbers[:1000]))
                .order_by(validation_reports.c.id)
            ).all()
        return {int(row.number): bool(row.passed) for row in rows}  # the newest (highest id) wins

    def has_passing_report(self, name: str, number: int, environment_hash: str) -> bool:
        """Whether the newest report for this version in this environment passed."""
        with self.db.read() as tx:
            version_id = self.store.version_id(tx, name, number)
            passed = tx.execute(
                select(validation_reports.c.passed)
                .where(
                    validation_reports.c.version_id == version_id,
                    validation_reports.c.environment_hash == environment_hash,
                )
                .order_by(validation_reports.c.id.desc())
                .limit(1)
            ).scalar_one_or_none()
        return bool(passed)
