"""Per-model serving policy (what to do with values outside what the model was trained on).

Revision ID: 0003_policy
Revises: 0002_generation
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_policy"
down_revision = "0002_generation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("on_violation", sa.String(16), nullable=False, server_default="flag"))


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.drop_column("on_violation")
