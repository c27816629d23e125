"""Automatic rollback counts only the canary's own faults: a client cannot force a rollback by sending
requests that every arm refuses, while a canary that refuses what the primary accepts is rolled back.
The app in-process (one worker), keys on (the defaults), a consumer key as the attacker."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from modelport.app import open_registry
from modelport.settings import Settings
from tests.conftest import FEATURES
from tests.conftest import invoke_cli as cli
from tests.serving.conftest import InProcess, registered_home, serve_in_process

RULE = "error_rate=0.2,window=60,min_requests=20"
# counts reach the database, and are judged, ten times a second (the duties run every poll interval)
FLUSH = 0.1


@pytest.fixture(scope="module")
def narrow_base(tmp_path_factory: pytest.TempPathFactory, data: pd.DataFrame, sklearn_model: object) -> Path:
    """``credit`` v4: the same model registered from a narrow sample (f0 in its middle fifth), under
    the ``reject`` policy — it refuses values the primary (v1) was trained on. Registered once."""
    home = registered_home(
        "releases", tmp_path_factory.mktemp("narrow") / "home", tmp_path_factory, data, sklearn_model
    )
    middle = data[(data.f0 > data.f0.quantile(0.4)) & (data.f0 < data.f0.quantile(0.6))]
    registry = open_registry(Settings(home=home, equivalence_rows=100))
    try:
        assert registry.register(sklearn_model, name="credit", sample=middle, target="label").number == 4
    finally:
        registry.close()
    assert cli(home, "policy", "credit", "--on-violation", "reject").returncode == 0
    return home


@pytest.fixture
def narrow_home(narrow_base: Path, tmp_path: Path) -> Path:
    """A fresh copy of ``narrow_base`` for one test."""
    return Path(shutil.copytree(narrow_base, tmp_path / "home"))


@pytest.fixture
def keyed(narrow_home: Path) -> Iterator[tuple[InProcess, str]]:
    """The keyed app on ``narrow_home``, and a consumer key."""
    created = cli(narrow_home, "keys", "create", "--name", "app", "--role", "consumer", "--json")
    assert created.returncode == 0, created.stderr
    import json

    key = json.loads(created.stdout)["token"]
    settings = {"release_flush_seconds": FLUSH, "route_poll_seconds": FLUSH}
    with serve_in_process(narrow_home, insecure_dev=False, **settings) as app:
        yield app, key


def _start_release(home: Path) -> None:
    """Half the traffic of credit@production to the narrow v4, rolled back above a 20 % error rate."""
    started = cli(
        home,
        "release",
        "start",
        "credit@production",
        "--canary",
        "4",
        "--weight",
        "50",
        "--auto-rollback",
        RULE,
    )
    assert started.returncode == 0, started.stderr


def _release(home: Path) -> dict[str, object] | None:
    shown = cli(home, "release", "status", "credit@production", "--json")
    assert shown.returncode == 0, shown.stderr
    import json

    release = json.loads(shown.stdout)["release"]
    return release if isinstance(release, dict) else None


def test_refusals_every_arm_gives_do_not_roll_back(
    narrow_home: Path, keyed: tuple[InProcess, str], data: pd.DataFrame
) -> None:
    app, key = keyed
    middle = {
        "inputs": [
            {
                "name": "input",
                "datatype": "FP64",
                "shape": [1, 6],
                "data": [float(data[f].median()) for f in FEATURES],
            }
        ]
    }
    _start_release(narrow_home)
    bad_shape = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 5], "data": [0.1] * 5}]}
    far = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 6], "data": [1e9] * 6}]}
    with app.client(key) as http:
        deadline = time.monotonic() + 10
        while True:  # the release reaches the worker
            answer = http.post("/v2/models/credit/infer", json=middle)
            if answer.status_code == 200 and answer.json()["model_version"] == "4":
                break
            assert time.monotonic() < deadline, "the canary never answered"
        for _ in range(60):  # refused by both arms: the shape is wrong, the values far out of every range
            assert http.post("/v2/models/credit/infer", json=bad_shape).status_code == 400
            assert http.post("/v2/models/credit/infer", json=far).status_code == 400
    # counts are flushed every FLUSH seconds and judged right after: give it ten rounds
    deadline = time.monotonic() + 10 * FLUSH
    while time.monotonic() < deadline:
        release = _release(narrow_home)
        assert release is not None, "a client forced an automatic rollback"
        time.sleep(FLUSH)
    assert release is not None
    arms = release["arms"]
    assert isinstance(arms, dict) and arms["canary"]["requests"] > 20 and arms["canary"]["errors"] == 0


def test_a_canary_refusing_what_the_primary_accepts_is_rolled_back(
    narrow_home: Path, keyed: tuple[InProcess, str], data: pd.DataFrame
) -> None:
    app, key = keyed
    _start_release(narrow_home)
    row = [float(data[f].median()) for f in FEATURES]
    row[0] = float(data.f0.max())  # inside v1's range, outside v4's
    body = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 6], "data": row}]}
    deadline = time.monotonic() + 20
    with app.client(key) as http:
        while _release(narrow_home) is not None:
            assert time.monotonic() < deadline, "the canary's own refusals were not counted"
            for _ in range(20):
                assert http.post("/v2/models/credit/infer", json=body).status_code in (200, 400)
    registry = open_registry(Settings(home=narrow_home))
    try:
        last = registry.store.releases.history("credit", "production")[-1]
    finally:
        registry.close()
    assert (last.action, last.version) == ("auto-rollback", 1)
