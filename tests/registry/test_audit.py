"""The audit log on SQLite and PostgreSQL: one record per change, in the change's transaction, and a
hash chain that names the first edited, deleted or reordered record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import delete, text, update

from modelport.errors import AuditFailure, InvalidInput
from modelport.registry.schema import audit_log
from modelport.registry.service import Registry
from modelport.security.store import KeyStore
from modelport.settings import Settings


def thirty_changes(registry: Registry, model: object, data: pd.DataFrame) -> None:
    keys = KeyStore(registry.store)
    registry.register(model, name="m", sample=data, target="label")  # 1
    registry.register(model, name="m", sample=data, target="label", alias="staging")  # 2, 3
    for i in range(10):  # 4 … 13
        registry.set_alias("m", "production", 1 + i % 2, verify=False)
    for policy in ("reject", "flag", "reject", "flag"):  # 14 … 17
        registry.set_policy("m", policy)
    registry.remove_alias("m", "staging")  # 18
    made = []
    for i in range(6):  # 19 … 24
        created = keys.create(name=f"k{i}", role="consumer", actor="local:test")
        assert created is not None
        made.append(created[0].id)
    for key_id in made[:3]:  # 25 … 27
        keys.rotate(key_id, grace=timedelta(minutes=5), actor="local:test")
    for key_id in made[3:]:  # 28 … 30
        keys.revoke(key_id, actor="local:test")


def test_thirty_changes_make_thirty_records(
    registry: Registry, sklearn_model: object, data: pd.DataFrame
) -> None:
    thirty_changes(registry, sklearn_model, data)
    records = registry.store.audit_records()
    assert [r.seq for r in records] == list(range(1, 31))
    actions = [r.action for r in records]
    assert actions.count("version.register") == 2 and actions.count("alias.set") == 11
    assert actions.count("policy.set") == 4 and actions.count("alias.remove") == 1
    assert (
        actions.count("key.create") == 6
        and actions.count("key.rotate") == 3
        and actions.count("key.revoke") == 3
    )
    moved = [r for r in records if r.action == "alias.set" and r.target == "m@production"]
    assert moved[0].before is None and moved[0].after == {"version": 1}
    assert moved[1].before == {"version": 1} and moved[1].after == {"version": 2}
    assert all(r.actor for r in records)
    # key records carry no digest of any secret
    assert not any("hash" in json.dumps(r.after) for r in records if r.action.startswith("key."))
    result = registry.store.verify_audit()
    assert result.ok and result.count == 30


@pytest.mark.parametrize("tamper", ["edit", "delete_middle", "delete_last", "reorder", "insert"])
def test_tampering_is_detected_and_named(
    registry: Registry, sklearn_model: object, data: pd.DataFrame, tamper: str
) -> None:
    thirty_changes(registry, sklearn_model, data)
    db = registry.store.db
    with db.engine.begin() as conn:
        if tamper == "edit":
            conn.execute(update(audit_log).where(audit_log.c.seq == 7).values(actor="someone-else"))
        elif tamper == "delete_middle":
            conn.execute(delete(audit_log).where(audit_log.c.seq == 12))
        elif tamper == "delete_last":
            conn.execute(delete(audit_log).where(audit_log.c.seq >= 29))
        elif tamper == "reorder":
            conn.execute(update(audit_log).where(audit_log.c.seq == 5).values(seq=1000))
            conn.execute(update(audit_log).where(audit_log.c.seq == 6).values(seq=5))
            conn.execute(update(audit_log).where(audit_log.c.seq == 1000).values(seq=6))
        else:
            conn.execute(update(audit_log).where(audit_log.c.seq >= 20).values(seq=audit_log.c.seq + 100))
            conn.execute(update(audit_log).where(audit_log.c.seq >= 120).values(seq=audit_log.c.seq - 99))
    result = registry.store.verify_audit()
    assert not result.ok
    expected = {"edit": 7, "delete_middle": 12, "delete_last": 29, "reorder": 5, "insert": 20}[tamper]
    assert result.seq == expected and str(expected) in result.problem, result


def test_audit_verify_cli_fails_and_names_the_record(
    sqlite_settings: Settings, sqlite_registry: Registry, sklearn_model: object, data: pd.DataFrame
) -> None:
    sqlite_registry.register(sklearn_model, name="m", sample=data, target="label", alias="production")
    env = {**os.environ, "MODELPORT_HOME": str(sqlite_settings.home)}
    exe = str(Path(sys.executable).with_name("modelport"))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([exe, *args], env=env, capture_output=True, text=True, timeout=60)

    ok = cli("audit", "verify")
    assert ok.returncode == 0 and "2 record(s)" in ok.stdout
    listed = cli("audit", "--json")
    assert [r["action"] for r in json.loads(listed.stdout)] == ["version.register", "alias.set"]
    assert "alias.set" in cli("audit", "--target", "m@").stdout
    with sqlite_registry.store.db.engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET target = 'm@staging' WHERE seq = 2"))
    failed = cli("audit", "verify")
    assert failed.returncode == 4
    assert "record 2 was edited" in failed.stderr and "Traceback" not in failed.stderr
    as_json = cli("audit", "verify", "--json")
    assert as_json.returncode == 4 and json.loads(as_json.stdout)["ok"] is False


def test_a_change_whose_record_cannot_be_written_does_not_happen(
    registry: Registry, sklearn_model: object, data: pd.DataFrame
) -> None:
    registry.register(sklearn_model, name="m", sample=data, target="label", alias="production")
    registry.register(sklearn_model, name="m", sample=data, target="label")
    db = registry.store.db
    # Make every audit insert fail (a trigger on SQLite, a check constraint on PostgreSQL).
    with db.engine.begin() as conn:
        if db.is_sqlite:
            conn.execute(
                text(
                    "CREATE TRIGGER no_audit BEFORE INSERT ON audit_log "
                    "BEGIN SELECT RAISE(ABORT, 'audit storage full'); END"
                )
            )
        else:
            conn.execute(text("ALTER TABLE audit_log ADD CONSTRAINT no_audit CHECK (seq < 0) NOT VALID"))
    with pytest.raises(AuditFailure, match="audit record could not be written"):
        registry.set_alias("m", "production", 2, verify=False)
    with pytest.raises(AuditFailure, match="audit record could not be written"):
        KeyStore(registry.store).create(name="x", role="admin", actor="local:test")
    assert registry.get("m@production").number == 1
    assert KeyStore(registry.store).count() == 0
    assert registry.store.verify_audit().ok


def test_long_actors_and_targets_keep_the_chain_valid(
    registry: Registry, sklearn_model: object, data: pd.DataFrame
) -> None:
    """What is stored is cut to the column sizes; the hash covers exactly what is stored."""
    with pytest.raises(InvalidInput, match="creator"):
        registry.register(sklearn_model, name="m", sample=data, target="label", creator="c" * 400)
    registry.register(sklearn_model, name="m", sample=data, target="label", creator="c" * 200)
    registry.store.set_alias("m", "production", 1, actor="local:" + "u" * 250)
    registry.store.append_audit("key:" + "k" * 300, "denied", "PUT /" + "p" * 500)
    assert registry.store.verify_audit().ok
