"""The registry on SQLite and PostgreSQL: versions, aliases, lookups, concurrency, migrations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from modelport.app import open_registry
from modelport.errors import (
    AliasNotFound,
    InvalidName,
    ModelNotFound,
    StoreNotReady,
    VersionNotFound,
)
from modelport.registry.records import VersionRecord
from modelport.registry.schema import metadata
from modelport.registry.service import Registry
from modelport.settings import Settings
from tests.conftest import FEATURES, invoke_cli
from tests.serving.conftest import registered_home


def _register(registry: Registry, model: object, data: pd.DataFrame, **options: Any) -> VersionRecord:
    return registry.register(model, name="credit", sample=data, target="label", **options)


def test_version_records_everything(registry: Registry, sklearn_model: object, data: pd.DataFrame) -> None:
    version = _register(
        registry,
        sklearn_model,
        data,
        description="first",
        tags={"team": "risk"},
        metrics={"accuracy": 0.9},
        training_data=data,
        code_revision="abc123",
        alias="production",
    )
    assert (version.model, version.number, version.status) == ("credit", 1, "ready")
    assert len(version.uuid) == 36
    assert version.serving_format == "onnx"
    assert set(version.formats) == {"skops", "onnx"}
    assert all(len(a.digest) == 64 for a in version.artifacts)
    assert [f["name"] for f in version.signature["inputs"]] == FEATURES
    assert version.signature["outputs"] == {"task": "classification", "classes": ["c0", "c1", "c2"]}
    assert len(version.golden["rows"]) == 50 and len(version.golden["outputs"]["labels"]) == 50
    assert version.environment["packages"]["scikit-learn"]
    assert version.lineage["code_revision"] == "abc123"
    assert version.lineage["metrics"] == {"accuracy": 0.9}
    assert version.lineage["training_data"]["rows"] == len(data)
    assert version.lineage["params"]["logisticregression__max_iter"] == 500
    assert version.tags == {"team": "risk"} and version.description == "first"
    assert version.conversion["status"] == "equivalent"
    assert version.aliases == ("production",)
    again = registry.get("credit@production")
    assert again == version


def test_aliases_move_and_latest_is_computed(
    registry: Registry, sklearn_model: object, data: pd.DataFrame
) -> None:
    v1 = _register(registry, sklearn_model, data, alias="production")
    v2 = _register(registry, sklearn_model, data, parent=1)
    assert v2.number == 2 and v2.lineage["parent_version"] == 1
    assert registry.get("credit").number == 1  # a bare name is the default route: production
    assert registry.get("credit@latest").number == 2
    assert registry.get("credit@production").number == 1
    registry.set_alias("credit", "production", 2)
    registry.set_alias("credit", "staging", 1)
    assert registry.get("credit@production").uuid == v2.uuid
    assert registry.model("credit").aliases == {"production": 2, "staging": 1}
    registry.remove_alias("credit", "staging")
    with pytest.raises(AliasNotFound, match="no alias 'staging'"):
        registry.get("credit@staging")
    assert registry.get("credit@1").uuid == v1.uuid
    assert [v.number for v in registry.versions("credit")] == [1, 2]


def test_unknown_references(registry: Registry, sklearn_model: object, data: pd.DataFrame) -> None:
    with pytest.raises(ModelNotFound, match="no model named 'nope'"):
        registry.get("nope@1")
    _register(registry, sklearn_model, data)
    with pytest.raises(VersionNotFound, match="no version 7"):
        registry.get("credit@7")
    with pytest.raises(AliasNotFound, match="no alias 'production'"):
        registry.get("credit@production")
    with pytest.raises(VersionNotFound, match="no version 9"):
        registry.set_alias("credit", "production", 9)
    with pytest.raises(AliasNotFound):
        registry.remove_alias("credit", "production")
    with pytest.raises(InvalidName):
        registry.set_alias("credit", "123", 1)
    with pytest.raises(InvalidName):
        registry.set_alias("credit", "latest", 1)
    with pytest.raises(VersionNotFound):
        _register(registry, sklearn_model, data, parent=5)


def test_twenty_concurrent_registrations_get_versions_1_to_20(
    settings: Settings, sklearn_model: object, data: pd.DataFrame
) -> None:
    """Each thread opens its own registry (own engine) as separate clients would, on a database that
    does not exist yet: the first registrations also race to create the schema."""
    small = data.head(200)

    def register_one(_: int) -> int:
        registry = open_registry(settings, create=True)
        try:
            return registry.register(sklearn_model, name="race", sample=small, target="label").number
        finally:
            registry.close()

    with ThreadPoolExecutor(max_workers=20) as pool:
        numbers = list(pool.map(register_one, range(20)))
    assert sorted(numbers) == list(range(1, 21))
    registry = open_registry(settings)
    try:
        versions = registry.versions("race")
        assert [v.number for v in versions] == list(range(1, 21))
        assert len({v.uuid for v in versions}) == 20
        assert registry.model("race").latest_version == 20
    finally:
        registry.close()


def test_concurrent_init_processes_all_succeed(settings: Settings, tmp_path: Path) -> None:
    env = {**os.environ, "MODELPORT_HOME": str(settings.home)}
    if settings.database_url:
        env["MODELPORT_DATABASE_URL"] = settings.database_url
    exe = str(Path(sys.executable).with_name("modelport"))
    children = [
        subprocess.Popen([exe, "init"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    results = [(child.wait(timeout=120), child.stderr.read() if child.stderr else "") for child in children]
    for child in children:
        if child.stderr:
            child.stderr.close()
    assert [code for code, _ in results] == [0, 0, 0, 0], results
    registry = open_registry(settings)
    try:
        from modelport.security.store import KeyStore

        # Exactly one first admin key, however many inits raced.
        assert [
            (k.role, k.created_by.startswith("local:")) for k in KeyStore(registry.store).list_keys()
        ] == [("admin", True)]
        assert [r.action for r in registry.store.audit_records()] == ["key.create"]
    finally:
        registry.close()


def test_head_constant_is_alembics_head(registry: Registry) -> None:
    database = registry.store.db
    assert database.head_revision() == database.alembic_head() == database.current_revision()


def test_migrations_match_the_schema(registry: Registry) -> None:
    with registry.store.db.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    assert differences == []


def test_reading_a_missing_registry_says_run_init(settings: Settings) -> None:
    with pytest.raises(StoreNotReady, match="modelport init"):
        open_registry(settings)
    if settings.database_url is None:
        assert not (settings.home / "registry.db").exists()


def test_init_is_idempotent(settings: Settings) -> None:
    open_registry(settings, create=True).close()
    registry = open_registry(settings, create=True)
    try:
        assert registry.store.db.current_revision() == registry.store.db.head_revision()
    finally:
        registry.close()


def test_sqlite_runs_in_wal_mode(sqlite_registry: Registry) -> None:
    with sqlite_registry.store.db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_show_and_versions_give_the_archived_status_and_the_label(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, sklearn_model: object, data: pd.DataFrame
) -> None:
    """Issue 14: an archived version read ``ready`` and the semantic version label was never shown."""
    home = registered_home("releases", tmp_path / "home", tmp_path_factory, data, sklearn_model)
    assert invoke_cli(home, "label", "credit@3", "2.1.0").returncode == 0
    assert invoke_cli(home, "retention", "credit", "--keep-last", "1", "--keep-days", "30").returncode == 0
    archived = invoke_cli(home, "gc", "--json")
    assert archived.returncode == 0 and json.loads(archived.stdout)["models"][0]["archive"] == [2]

    listed = invoke_cli(home, "versions", "credit", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(v["number"], v["status"], v["label"]) for v in json.loads(listed.stdout)] == [
        (1, "ready", None),
        (2, "archived", None),
        (3, "ready", "2.1.0"),
    ]
    shown = json.loads(invoke_cli(home, "show", "credit@2", "--json").stdout)
    assert shown["status"] == "archived" and shown["archived_at"] is not None
    assert json.loads(invoke_cli(home, "show", "credit@2.1.0", "--json").stdout)["label"] == "2.1.0"

    table = invoke_cli(home, "versions", "credit").stdout
    rows = {line.split("│")[1].strip(): line for line in table.splitlines() if line.count("│") > 2}
    assert "archived" in rows["2"] and "ready" not in rows["2"] and "2.1.0" in rows["3"]
    detail = invoke_cli(home, "show", "credit@2").stdout
    assert "archived on " in detail and "ready" not in detail
    assert "2.1.0" in invoke_cli(home, "show", "credit@3").stdout
