"""Registry tables (SQLAlchemy Core). The Alembic migrations under ``migrations/`` create exactly this;
``tests/registry/test_store.py`` proves it on SQLite and PostgreSQL.

    models ──< model_versions ──< artifacts
       └────< aliases >──────────┘

    api_keys ──< usage (key × model × day)        audit_log (hash chain, append-only)

    webhooks ──< webhook_deliveries (one per matching audit record) ──< webhook_attempts
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

__all__ = [
    "alias_history",
    "alias_releases",
    "aliases",
    "api_keys",
    "archived_versions",
    "artifacts",
    "audit_log",
    "batch_jobs",
    "console_signouts",
    "feedback",
    "metadata",
    "model_versions",
    "models",
    "pending_changes",
    "prediction_log_policies",
    "protected_aliases",
    "reference_profiles",
    "registry_state",
    "release_stats",
    "retention_policies",
    "usage",
    "validation_reports",
    "version_labels",
    "webhook_attempts",
    "webhook_deliveries",
    "webhooks",
]


class JSONDoc(TypeDecorator[Any]):
    """JSONB on PostgreSQL (indexable, compact), JSON text on SQLite — as ``JSON().with_variant(JSONB(),
    "postgresql")`` would be, without importing PostgreSQL's dialect for an SQLite home (~35 ms of
    every command's start)."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(JSON())


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

models = Table(
    "models",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("description", Text, nullable=False),
    # The highest version number handed out; bumped in the same transaction as the version insert,
    # so a failed registration leaves no gap.
    Column("latest_version", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # What serving does with a value outside the signature (range, category, unexpected missing):
    # "flag" (answer, count and report the violation) or "reject" (400 naming feature and violation).
    Column("on_violation", String(16), nullable=False, server_default="flag"),
)

model_versions = Table(
    "model_versions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("uuid", String(36), nullable=False, unique=True),
    Column("model_id", Integer, ForeignKey("models.id", ondelete="RESTRICT"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("status", String(20), nullable=False),
    Column("serving_format", String(32), nullable=False),
    Column("signature", JSONDoc, nullable=False),
    Column("golden", JSONDoc, nullable=False),
    Column("environment", JSONDoc, nullable=False),
    Column("lineage", JSONDoc, nullable=False),
    Column("conversion", JSONDoc, nullable=False),
    Column("description", Text, nullable=False),
    Column("tags", JSONDoc, nullable=False),
    Column("creator", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("model_id", "number", name="uq_model_versions_model_id_number"),
)

artifacts = Table(
    "artifacts",
    metadata,
    Column(
        "version_id",
        Integer,
        ForeignKey("model_versions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("role", String(16), primary_key=True),
    Column("format", String(32), nullable=False),
    Column("digest", String(64), nullable=False, index=True),
    Column("size", BigInteger, nullable=False),
    Column("details", JSONDoc, nullable=False),
)

aliases = Table(
    "aliases",
    metadata,
    Column("model_id", Integer, ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(63), primary_key=True),
    Column("version_id", Integer, ForeignKey("model_versions.id", ondelete="RESTRICT"), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("updated_by", String(200), nullable=False),
)

# One row (id = 1). ``generation`` grows with every change a server must see: a new version, an alias
# set, moved or removed. Servers poll this single row to notice changes made by any process.
registry_state = Table(
    "registry_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("generation", BigInteger, nullable=False),
    # Head of the audit chain: deleting the newest audit records leaves the chain itself intact, so
    # the head is kept here too, written in the same transaction as each record.
    Column("audit_seq", BigInteger, nullable=False, server_default="0"),
    Column("audit_hash", String(64), nullable=False, server_default="0" * 64),
)

# API keys (docs/security.md). Only digests of secrets are stored; ``previous_hash`` keeps a rotated
# key's old secret working until ``previous_until``.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(16), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("role", String(16), nullable=False),
    Column("models", JSONDoc, nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("previous_hash", String(64), nullable=True),
    Column("previous_until", DateTime(timezone=True), nullable=True),
    Column("rate", Float, nullable=True),
    Column("quota", BigInteger, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

# Per key × model × UTC day; workers add their counts about once a second.
usage = Table(
    "usage",
    metadata,
    Column("key_id", String(16), primary_key=True),
    Column("model", String(100), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("requests", BigInteger, nullable=False),
    Column("rows", BigInteger, nullable=False),
    Column("errors", BigInteger, nullable=False),
    Column("bytes_in", BigInteger, nullable=False),
    Column("bytes_out", BigInteger, nullable=False),
)

# Console sessions signed out before their expiry (ui/sessions.py): the session's id (an HMAC of its
# nonce, never the cookie) until the cookie would have expired anyway; pruned at each sign-out.
console_signouts = Table(
    "console_signouts",
    metadata,
    Column("session_id", String(64), primary_key=True),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

# Append-only audit trail. ``hash`` = SHA-256 over the record's canonical JSON and ``prev_hash``.
audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(40), nullable=False, index=True),
    Column("target", String(300), nullable=False, index=True),
    Column("before", JSONDoc, nullable=True),
    Column("after", JSONDoc, nullable=True),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

# Validation reports (docs/validation.md), attached to a version and the environment they ran in.
validation_reports = Table(
    "validation_reports",
    metadata,
    Column("id", Integer, primary_key=True),
    Column(
        "version_id", Integer, ForeignKey("model_versions.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("environment_hash", String(64), nullable=False),
    Column("passed", Boolean, nullable=False),
    Column("report", JSONDoc, nullable=False),
)

# Aliases that only move to versions with a passing validation report (the promotion gate).
protected_aliases = Table(
    "protected_aliases",
    metadata,
    Column("model_id", Integer, ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
    Column("alias", String(63), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(200), nullable=False),
    # Every change of the alias waits for a second admin/publisher key (docs/releases.md).
    Column("require_approval", Boolean, nullable=False, server_default="0"),
)

# What the prediction log keeps for a model (docs/monitoring.md): sampling rate, fields to drop,
# fields to pseudonymise, and the field that names the data subject (for erasure).
prediction_log_policies = Table(
    "prediction_log_policies",
    metadata,
    Column("model_id", Integer, ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
    Column("sample_rate", Float, nullable=False),
    Column("redact", JSONDoc, nullable=False),
    Column("pseudonymise", JSONDoc, nullable=False),
    Column("subject", String(100), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("updated_by", String(200), nullable=False),
)


# What a version was registered with, summarised for drift (monitoring/drift.py).
reference_profiles = Table(
    "reference_profiles",
    metadata,
    Column("version_id", Integer, ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True),
    Column("profile", JSONDoc, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Ground truth for logged predictions, by request id and row (a later label replaces an earlier one).
feedback = Table(
    "feedback",
    metadata,
    Column("model_id", Integer, ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
    Column("request_id", String(128), primary_key=True),
    Column("row", Integer, primary_key=True),
    Column("label", String(200), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("received_by", String(200), nullable=False),
)


# Releases (docs/releases.md). A row exists while a release runs on the alias: a canary taking
# ``canary_weight`` percent (optionally sticky by a header or field) and/or a shadow getting a copy.
alias_releases = Table(
    "alias_releases",
    metadata,
    Column("model_id", Integer, ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
    Column("alias", String(63), primary_key=True),
    Column("release_id", String(32), nullable=False, unique=True),
    Column("canary_version_id", Integer, ForeignKey("model_versions.id", ondelete="RESTRICT"), nullable=True),
    Column("canary_weight", Float, nullable=False),
    Column("sticky_by", String(140), nullable=True),
    Column("shadow_version_id", Integer, ForeignKey("model_versions.id", ondelete="RESTRICT"), nullable=True),
    Column("auto_rollback", JSONDoc, nullable=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("started_by", String(200), nullable=False),
)

# Every state an alias has been in, appended in the same transaction as the change: rollback reads
# it, retention treats it as intervals. ``version_id`` is the primary (NULL once the alias is removed).
alias_history = Table(
    "alias_history",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("model_id", Integer, ForeignKey("models.id", ondelete="CASCADE"), nullable=False),
    Column("alias", String(63), nullable=False),
    Column("version_id", Integer, ForeignKey("model_versions.id", ondelete="RESTRICT"), nullable=True),
    Column("state", JSONDoc, nullable=False),
    Column("action", String(32), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(200), nullable=False),
    Index("ix_alias_history_model_id_alias", "model_id", "alias", "id"),
)

# Changes of an approval-protected alias waiting for a second key.
pending_changes = Table(
    "pending_changes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("model_id", Integer, ForeignKey("models.id", ondelete="CASCADE"), nullable=False),
    Column("alias", String(63), nullable=False),
    Column("action", String(32), nullable=False),
    Column("payload", JSONDoc, nullable=False),
    Column("requested_by", String(200), nullable=False),
    Column("requested_at", DateTime(timezone=True), nullable=False),
    Column("status", String(16), nullable=False),
    Column("decided_by", String(200), nullable=True),
    Column("decided_at", DateTime(timezone=True), nullable=True),
    Column("reason", Text, nullable=True),
)

# Counts per release, arm and 10-second bucket, added to by every worker about once a second.
# ``metric``: requests, errors, latency (``key`` = histogram bucket), class (``key`` = predicted
# label), agree / compared (shadow), dropped (shadow queue full), unkeyed (sticky key missing).
release_stats = Table(
    "release_stats",
    metadata,
    Column("release_id", String(32), primary_key=True),
    Column("arm", String(16), primary_key=True),
    Column("bucket", BigInteger, primary_key=True),
    Column("metric", String(16), primary_key=True),
    Column("key", String(100), primary_key=True),
    Column("count", BigInteger, nullable=False),
)

# Per-model retention (``modelport retention``, ``modelport gc``).
retention_policies = Table(
    "retention_policies",
    metadata,
    Column("model_id", Integer, ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
    Column("keep_last", Integer, nullable=False),
    Column("keep_days", Float, nullable=False),
    Column("legal_hold", Boolean, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("updated_by", String(200), nullable=False),
)

# Semantic version labels (``credit-rating@2.1.0``), unique within a model.
version_labels = Table(
    "version_labels",
    metadata,
    Column("version_id", Integer, ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True),
    Column("model_id", Integer, ForeignKey("models.id", ondelete="CASCADE"), nullable=False),
    Column("label", String(100), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(200), nullable=False),
    UniqueConstraint("model_id", "label", name="uq_version_labels_model_id_label"),
)

# Versions whose artifacts were freed by ``modelport gc``; their rows, lineage and audit stay.
archived_versions = Table(
    "archived_versions",
    metadata,
    Column("version_id", Integer, ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True),
    Column("archived_at", DateTime(timezone=True), nullable=False),
    Column("archived_by", String(200), nullable=False),
    Column("freed_bytes", BigInteger, nullable=False),
)

# Batch scoring jobs (docs/batch.md): the version, the input and output digests, counts and timings.
batch_jobs = Table(
    "batch_jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column(
        "version_id", Integer, ForeignKey("model_versions.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    Column("actor", String(200), nullable=False),
    Column("engine", String(16), nullable=False),
    Column("runner", String(16), nullable=False),  # cli: the shell that started it; server: `serve`
    Column("status", String(16), nullable=False),
    Column("input", Text, nullable=False),
    Column("input_digest", String(64), nullable=False),
    Column("output", Text, nullable=False),
    Column("output_digest", String(64), nullable=True),
    Column("options", JSONDoc, nullable=False),
    Column("rows_total", BigInteger, nullable=False),
    Column("rows_scored", BigInteger, nullable=False),
    Column("rows_flagged", BigInteger, nullable=False),
    Column("rows_skipped", BigInteger, nullable=False),
    Column("chunks_total", Integer, nullable=False),
    Column("chunks_done", Integer, nullable=False),
    Column("error", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("seconds", Float, nullable=False),
)

# Webhook subscriptions (docs/webhooks.md). ``secret`` signs deliveries, so it is kept as it is (it
# must be read back to sign): never listed, logged or audited. ``cursor``: the first audit record this
# subscription has not yet turned into deliveries.
webhooks = Table(
    "webhooks",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("url", Text, nullable=False),
    Column("actions", JSONDoc, nullable=False),
    Column("models", JSONDoc, nullable=False),
    Column("secret", String(100), nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("cursor", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(200), nullable=False),
)

# One audit record to send to one subscription: a job-queue row. ``lease_until`` is when a claiming
# worker's hold ends; ``status``: pending, delivered or dead.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("webhook_id", String(32), ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False),
    Column("audit_seq", BigInteger, nullable=False),
    Column("action", String(40), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_at", DateTime(timezone=True), nullable=False),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_until", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("webhook_id", "audit_seq", name="uq_webhook_deliveries_webhook_id_audit_seq"),
    Index("ix_webhook_deliveries_status_next_at", "status", "next_at"),
)

# Every attempt of a delivery: when, the answer's status or the error's class, how long it took.
webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column(
        "delivery_id",
        String(32),
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("error", String(100), nullable=True),
    Column("seconds", Float, nullable=False),
)
