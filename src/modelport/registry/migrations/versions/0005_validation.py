"""Validation reports and protected aliases (the promotion gate).

Revision ID: 0005_validation
Revises: 0004_security
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005_validation"
down_revision = "0004_security"
branch_labels = None
depends_on = None

JSONDoc = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "validation_reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("environment_hash", sa.String(64), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("report", JSONDoc, nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["model_versions.id"],
            name="fk_validation_reports_version_id_model_versions",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_validation_reports"),
    )
    op.create_index("ix_validation_reports_version_id", "validation_reports", ["version_id"])
    op.create_table(
        "protected_aliases",
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("alias", sa.String(63), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name="fk_protected_aliases_model_id_models", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("model_id", "alias", name="pk_protected_aliases"),
    )


def downgrade() -> None:
    op.drop_table("protected_aliases")
    op.drop_table("validation_reports")
