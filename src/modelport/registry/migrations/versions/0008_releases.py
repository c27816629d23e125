"""Releases: traffic policies on aliases, alias history, approvals, per-arm counts, retention, labels,
archived versions (docs/releases.md).

Revision ID: 0008_releases
Revises: 0007_monitoring
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0008_releases"
down_revision = "0007_monitoring"
branch_labels = None
depends_on = None

JSONDoc = sa.JSON().with_variant(JSONB(), "postgresql")


def _model_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["model_id"], ["models.id"], name=f"fk_{table}_model_id_models", ondelete="CASCADE"
    )


def _version_fk(table: str, column: str, ondelete: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], ["model_versions.id"], name=f"fk_{table}_{column}_model_versions", ondelete=ondelete
    )


def upgrade() -> None:
    op.add_column(
        "protected_aliases",
        sa.Column("require_approval", sa.Boolean(), nullable=False, server_default="0"),
    )
    op.create_table(
        "alias_releases",
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("alias", sa.String(63), nullable=False),
        sa.Column("release_id", sa.String(32), nullable=False),
        sa.Column("canary_version_id", sa.Integer(), nullable=True),
        sa.Column("canary_weight", sa.Float(), nullable=False),
        sa.Column("sticky_by", sa.String(140), nullable=True),
        sa.Column("shadow_version_id", sa.Integer(), nullable=True),
        sa.Column("auto_rollback", JSONDoc, nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_by", sa.String(200), nullable=False),
        _model_fk("alias_releases"),
        _version_fk("alias_releases", "canary_version_id", "RESTRICT"),
        _version_fk("alias_releases", "shadow_version_id", "RESTRICT"),
        sa.PrimaryKeyConstraint("model_id", "alias", name="pk_alias_releases"),
        sa.UniqueConstraint("release_id", name="uq_alias_releases_release_id"),
    )
    op.create_table(
        "alias_history",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("alias", sa.String(63), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=True),
        sa.Column("state", JSONDoc, nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        _model_fk("alias_history"),
        _version_fk("alias_history", "version_id", "RESTRICT"),
        sa.PrimaryKeyConstraint("id", name="pk_alias_history"),
    )
    op.create_index("ix_alias_history_model_id_alias", "alias_history", ["model_id", "alias", "id"])
    # The aliases that exist now start their history where they stand.
    op.execute(
        "INSERT INTO alias_history (model_id, alias, version_id, state, action, at, actor) "
        "SELECT a.model_id, a.name, a.version_id, '{}', 'set', a.updated_at, a.updated_by FROM aliases a"
    )
    op.create_table(
        "pending_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("alias", sa.String(63), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("payload", JSONDoc, nullable=False),
        sa.Column("requested_by", sa.String(200), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("decided_by", sa.String(200), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        _model_fk("pending_changes"),
        sa.PrimaryKeyConstraint("id", name="pk_pending_changes"),
    )
    op.create_table(
        "release_stats",
        sa.Column("release_id", sa.String(32), nullable=False),
        sa.Column("arm", sa.String(16), nullable=False),
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.Column("metric", sa.String(16), nullable=False),
        sa.Column("key", sa.String(100), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("release_id", "arm", "bucket", "metric", "key", name="pk_release_stats"),
    )
    op.create_table(
        "retention_policies",
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("keep_last", sa.Integer(), nullable=False),
        sa.Column("keep_days", sa.Float(), nullable=False),
        sa.Column("legal_hold", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
        _model_fk("retention_policies"),
        sa.PrimaryKeyConstraint("model_id", name="pk_retention_policies"),
    )
    op.create_table(
        "version_labels",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        _version_fk("version_labels", "version_id", "CASCADE"),
        _model_fk("version_labels"),
        sa.PrimaryKeyConstraint("version_id", name="pk_version_labels"),
        sa.UniqueConstraint("model_id", "label", name="uq_version_labels_model_id_label"),
    )
    op.create_table(
        "archived_versions",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("archived_by", sa.String(200), nullable=False),
        sa.Column("freed_bytes", sa.BigInteger(), nullable=False),
        _version_fk("archived_versions", "version_id", "CASCADE"),
        sa.PrimaryKeyConstraint("version_id", name="pk_archived_versions"),
    )


def downgrade() -> None:
    for table in (
        "archived_versions",
        "version_labels",
        "retention_policies",
        "release_stats",
        "pending_changes",
        "alias_history",
        "alias_releases",
    ):
        op.drop_table(table)
    with op.batch_alter_table("protected_aliases") as batch:
        batch.drop_column("require_approval")
