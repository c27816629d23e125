"""The public transaction every store runs its SQL in, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from modelport.errors import ModelNotFound
from modelport.monitoring.store import MonitoringStore
from modelport.registry.service import Registry
from modelport.releases.store import ReleaseStore
from modelport.validation.store import ValidationStore


def test_audit_and_generation_commit_or_roll_back_with_the_change(registry: Registry) -> None:
    store = registry.store
    before = store.generation()
    with store.db.write() as tx:
        tx.audit("local:test", "test.change", "thing", after={"n": 1})
        tx.bump_generation()
    assert store.generation() == before + 1
    with pytest.raises(RuntimeError), store.db.write() as tx:
        tx.audit("local:test", "test.change", "thing", after={"n": 2})
        tx.bump_generation()
        raise RuntimeError("the change fails after both")
    assert store.generation() == before + 1
    assert [r.after for r in store.audit_records(action="test.change")] == [{"n": 1}]
    assert store.verify_audit().ok


def test_domain_stores_share_the_registry_database(registry: Registry) -> None:
    store = registry.store
    assert isinstance(store.releases, ReleaseStore)
    assert isinstance(store.monitoring, MonitoringStore)
    assert isinstance(store.validation, ValidationStore)
    assert store.releases.db is store.monitoring.db is store.validation.db is store.db
    with store.db.read() as tx, pytest.raises(ModelNotFound):
        store.model_id(tx, "nosuch")
