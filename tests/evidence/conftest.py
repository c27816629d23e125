"""One registry history with known moments, built once per test module:

``credit`` v1 on production (registration); production then requires approval; v2 and v3 get passing
validation reports; key:alice asks to move production to v2 and key:bob approves it; alice asks for a
10 % canary of v3 and bob approves that too. Between them: an API key is created and another model's
record is written, so the bundle must leave records out and still prove the chain.

T1 is just before the move to v2 (production served v1); T2 is the moment the canary started.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from modelport.app import open_registry
from modelport.environment import fingerprint
from modelport.registry.service import Registry
from modelport.releases.manager import ReleaseManager
from modelport.settings import Settings
from tests.security.conftest import make_key
from tests.serving.conftest import registered_home

REPORT = {"checks": [{"name": "golden cases", "passed": True, "detail": "12 rows reproduced"}]}


@dataclass(frozen=True)
class History:
    home: Path
    t0: datetime  # before the model existed
    t1: datetime  # production → v1
    t2: datetime  # production → v2, canary v3 at 10 %
    admin: str  # tokens: secrets that must never appear in a bundle
    consumer: str


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory, data: pd.DataFrame, sklearn_model: object) -> History:
    home = registered_home(
        "releases", tmp_path_factory.mktemp("evidence") / "home", tmp_path_factory, data, sklearn_model
    )
    admin = make_key(home, "admin")
    consumer = make_key(home, "consumer", ["credit*"])
    registry = open_registry(Settings(home=home))
    try:
        manager = ReleaseManager(registry)
        registry.store.append_audit("key:x", "alias.set", "credit2@production", after={"version": 9})
        registry.store.releases.set_approval("credit", "production", True, actor="key:admin")
        for number in (2, 3):
            registry.store.validation.add_report(
                "credit", number, passed=True, environment_hash=fingerprint(), report=REPORT, actor="key:ci"
            )
        moved = manager.set_alias("credit", "production", 2, actor="key:alice")
        manager.approve(moved["change"]["id"], actor="key:bob")
        asked = manager.start("credit", "production", actor="key:alice", canary=3, weight=10)
        manager.approve(asked["change"]["id"], actor="key:bob")
        records = registry.store.audit_records()
    finally:
        registry.close()
    first = next(r for r in records if r.action == "version.register" and r.target == "credit@1")
    move = next(r for r in records if r.action == "alias.set" and r.after.get("version") == 2)
    start = next(r for r in records if r.action == "release.start")
    return History(
        home,
        first.at - timedelta(microseconds=1),
        move.at - timedelta(microseconds=1),
        start.at,
        admin,
        consumer,
    )


@pytest.fixture
def registry(history: History) -> Iterator[Registry]:
    opened = open_registry(Settings(home=history.home))
    yield opened
    opened.close()
