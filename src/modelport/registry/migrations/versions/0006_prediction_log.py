"""Per-model prediction-log policies (sampling, redaction, pseudonymisation, data subject).

Revision ID: 0006_prediction_log
Revises: 0005_validation
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0006_prediction_log"
down_revision = "0005_validation"
branch_labels = None
depends_on = None

JSONDoc = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "prediction_log_policies",
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("sample_rate", sa.Float(), nullable=False),
        sa.Column("redact", JSONDoc, nullable=False),
        sa.Column("pseudonymise", JSONDoc, nullable=False),
        sa.Column("subject", sa.String(100), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name="fk_prediction_log_policies_model_id_models", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("model_id", name="pk_prediction_log_policies"),
    )


def downgrade() -> None:
    op.drop_table("prediction_log_policies")
