"""Alembic environment: always run with a connection handed over by ``Database.migrate``."""

from __future__ import annotations

from alembic import context

from modelport.registry.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - guarded by Database.migrate
    raise RuntimeError("modelport migrations run through `modelport init`, not the alembic CLI")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
