"""Console sessions ended by signing out (docs/console.md): refused by every worker and replica.

Revision ID: 0010_console_signouts
Revises: 0009_batch_jobs
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_console_signouts"
down_revision = "0009_batch_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_signouts",
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("session_id", name="pk_console_signouts"),
    )


def downgrade() -> None:
    op.drop_table("console_signouts")
