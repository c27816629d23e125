"""SQL for monitoring (docs/monitoring.md): what the prediction log keeps per model, the reference
profiles drift is measured against, and ground-truth feedback for live accuracy.

Every public method is one transaction over the registry's database; a settings change is audited and
bumps the registry generation in that same transaction (servers then log by the new policy).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from modelport.registry.schema import (
    feedback,
    model_versions,
    models,
    prediction_log_policies,
    reference_profiles,
)

if TYPE_CHECKING:
    from modelport.registry.store import RegistryStore

__all__ = ["MonitoringStore"]


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything stored is UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _log_policy(row: Mapping[Any, Any]) -> dict[str, Any]:
    return {
        "sample_rate": float(row["sample_rate"]),
        "redact": list(row["redact"]),
        "pseudonymise": list(row["pseudonymise"]),
        "subject": row["subject"],
    }


class MonitoringStore:
    """Prediction-log policies, reference profiles and feedback, sharing the registry store's database,
    audit chain and generation (``registry.store.monitoring``)."""

    def __init__(self, store: RegistryStore) -> None:
        self.store = store
        self.db = store.db

    # -- the prediction log ---------------------------------------------------------------------

    def set_log_policy(self, name: str, policy: dict[str, Any], *, actor: str) -> None:
        """Store what the prediction log keeps for ``name`` (audited as a settings change)."""
        with self.db.write() as tx:
            model_id = self.store.model_id(tx, name)
            before = (
                tx.execute(
                    select(prediction_log_policies).where(prediction_log_policies.c.model_id == model_id)
                )
                .mappings()
                .one_or_none()
            )
            values = {
                "model_id": model_id,
                "sample_rate": float(policy["sample_rate"]),
                "redact": list(policy["redact"]),
                "pseudonymise": list(policy["pseudonymise"]),
                "subject": policy.get("subject"),
                "updated_at": datetime.now(UTC),
                "updated_by": actor[:200],
            }
            tx.execute(
                self.db.upsert(
                    prediction_log_policies,
                    values,
                    keys=["model_id"],
                    update=["sample_rate", "redact", "pseudonymise", "subject", "updated_at", "updated_by"],
                )
            )
            tx.audit(
                actor,
                "log_policy.set",
                name,
                before=None if before is None else _log_policy(before),
                after=_log_policy(values),
            )
            tx.bump_generation()

    def log_policies(self) -> dict[str, dict[str, Any]]:
        """Every model's prediction-log policy (models without one log nothing)."""
        with self.db.read() as tx:
            rows = (
                tx.execute(
                    select(models.c.name, prediction_log_policies).join(
                        prediction_log_policies, prediction_log_policies.c.model_id == models.c.id
                    )
                )
                .mappings()
                .all()
            )
        return {row["name"]: _log_policy(row) for row in rows}

    # -- reference profiles (drift) ------------------------------------------------------------

    def set_profile(self, name: str, number: int, profile: dict[str, Any], *, actor: str) -> None:
        """Store (or replace) a version's reference profile (audited)."""
        with self.db.write() as tx:
            version_id = self.store.version_id(tx, name, number)
            tx.execute(
                self.db.upsert(
                    reference_profiles,
                    {"version_id": version_id, "profile": profile, "created_at": datetime.now(UTC)},
                    keys=["version_id"],
                    update=["profile", "created_at"],
                )
            )
            tx.audit(actor, "profile.set", f"{name}@{number}", after={"rows": profile.get("rows")})

    def profiles(self, name: str) -> dict[int, dict[str, Any]]:
        """Reference profiles of a model's versions, by version number (versions without one are absent)."""
        with self.db.read() as tx:
            model_id = self.store.model_id(tx, name)
            rows = tx.execute(
                select(model_versions.c.number, reference_profiles.c.profile)
                .join(reference_profiles, reference_profiles.c.version_id == model_versions.c.id)
                .where(model_versions.c.model_id == model_id)
            ).all()
        return {int(row.number): row.profile for row in rows}

    # -- ground truth (live accuracy) -----------------------------------------------------------

    def add_feedback(self, name: str, labels: list[tuple[str, int, str]], *, actor: str) -> int:
        """Store ground-truth labels ``(request id, row, label)`` for ``name``; a label given again for
        the same request row replaces the earlier one. Returns how many were stored."""
        now = datetime.now(UTC)
        with self.db.write() as tx:
            model_id = self.store.model_id(tx, name)
            latest = {(request_id, row): label for request_id, row, label in labels}  # last one wins
            if latest:
                tx.execute(
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
        with self.db.read() as tx:
            model_id = self.store.model_id(tx, name)
            return (
                tx.execute(select(feedback.c.row).where(feedback.c.model_id == model_id).limit(1)).first()
                is not None
            )

    def feedback_labels(self, name: str) -> dict[tuple[str, int], str]:
        """Every ground-truth label of ``name`` as ``{(request id, row): label}``."""
        with self.db.read() as tx:
            model_id = self.store.model_id(tx, name)
            rows = tx.execute(
                select(feedback.c.request_id, feedback.c.row, feedback.c.label).where(
                    feedback.c.model_id == model_id
                )
            ).all()
        return {(row.request_id, int(row.row)): row.label for row in rows}

    def feedback_received(self, name: str) -> dict[tuple[str, int], datetime]:
        """When each ground-truth label of ``name`` arrived, as ``{(request id, row): received_at}``
        (UTC; a label sent again counts from its latest arrival): the label lag of live accuracy."""
        with self.db.read() as tx:
            model_id = self.store.model_id(tx, name)
            rows = tx.execute(
                select(feedback.c.request_id, feedback.c.row, feedback.c.received_at).where(
                    feedback.c.model_id == model_id
                )
            ).all()
        return {(row.request_id, int(row.row)): _utc(row.received_at) for row in rows}
