"""Shared fixtures: real SQLite files, a real PostgreSQL schema per test, real tiny models.

PostgreSQL is selected with MODELPORT_TEST_DATABASE_URL (``.ci/run`` sets it). Without it the
PostgreSQL variants are skipped with a visible reason; with MODELPORT_TEST_REQUIRE_POSTGRES=1 an
unreachable server is a failure, never a skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from modelport.app import open_registry
from modelport.registry.service import Registry
from modelport.settings import Settings


def run_cli(
    home: Path, *args: str, timeout: float = 600, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`modelport ARGS` in a child process with ``MODELPORT_HOME=home`` (exit code, stdout, stderr)."""
    env = {**os.environ, **(env or {}), "MODELPORT_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "modelport.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def invoke_cli(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`modelport ARGS` in this process, through the same ``main()`` (so the same messages and exit
    codes) as :func:`run_cli`, without the ~1 s of a child's start-up: for tests where the process
    boundary is not the point. ``env`` is set for the call only."""
    from click.testing import CliRunner

    from modelport.cli.main import main

    with CliRunner().isolation(env={**(env or {}), "MODELPORT_HOME": str(home)}) as (out, err, _):
        try:
            # a command's own `typer.Exit(n)` comes back as main()'s value (click's non-standalone
            # mode); the console script passes it to sys.exit, so it is the exit code
            result = main(list(args))
            code = result if isinstance(result, int) else 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else int(done.code is not None)
        sys.stdout.flush()  # the isolation's text wrappers buffer what print_json wrote
        sys.stderr.flush()
        stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    return subprocess.CompletedProcess(["modelport", *args], code, stdout, stderr)


def until(check: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy (returned), failing after ``timeout`` seconds:
    the suite waits for what it can observe, never for a fixed time."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        time.sleep(interval)


PG_URL = os.environ.get("MODELPORT_TEST_DATABASE_URL")
REQUIRE_PG = os.environ.get("MODELPORT_TEST_REQUIRE_POSTGRES") == "1"
FEATURES = [f"f{i}" for i in range(6)]


def _postgres_schema_url() -> Iterator[str]:
    if not PG_URL:
        if REQUIRE_PG:
            pytest.fail("MODELPORT_TEST_REQUIRE_POSTGRES=1 but MODELPORT_TEST_DATABASE_URL is unset")
        pytest.skip("PostgreSQL tests need MODELPORT_TEST_DATABASE_URL (set by .ci/run)")
    url = make_url(PG_URL)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    schema = f"mp_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:
        admin.dispose()
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL at {PG_URL} is required but unreachable: {exc}")
        pytest.skip(f"PostgreSQL at {PG_URL} unreachable: {exc}")
    try:
        yield url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
            hide_password=False
        )
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | None]:
    """``None`` means the default: an SQLite file under the home directory."""
    if request.param == "sqlite":
        yield None
    else:
        yield from _postgres_schema_url()


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None) -> Settings:
    return Settings(home=tmp_path / "home", database_url=database_url, equivalence_rows=500)


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", equivalence_rows=500)


@pytest.fixture
def registry(settings: Settings) -> Iterator[Registry]:
    reg = open_registry(settings, create=True)
    yield reg
    reg.close()


@pytest.fixture
def sqlite_registry(sqlite_settings: Settings) -> Iterator[Registry]:
    reg = open_registry(sqlite_settings, create=True)
    yield reg
    reg.close()


def make_data(rows: int = 600, seed: int = 0, classes: int = 3) -> pd.DataFrame:
    """A small tabular classification set with named numeric features and a text label."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, len(FEATURES)))
    score = x[:, 0] * 1.5 - x[:, 1] + 0.5 * x[:, 2] + rng.normal(scale=0.5, size=rows)
    edges = np.quantile(score, np.linspace(0, 1, classes + 1)[1:-1])
    labels = np.array([f"c{i}" for i in range(classes)], dtype=object)[np.searchsorted(edges, score)]
    frame = pd.DataFrame(x, columns=FEATURES)
    frame["label"] = labels
    return frame


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real S3 server (SeaweedFS, tests/seaweed.py) shared by the session: ~3 s to start. Give each
    test its own key prefix or bucket. Its data is thrown away at the end, so it is not given the
    ~15 s a clean stop takes: SIGTERM, then SIGKILL after 2 s (still waited for, by PID)."""
    from tests.seaweed import seaweedfs

    with seaweedfs(tmp_path_factory.mktemp("seaweedfs"), stop_timeout=2) as server:
        yield server


@pytest.fixture(scope="session")
def data() -> pd.DataFrame:
    return make_data()


@pytest.fixture(scope="session")
def sklearn_model(data: pd.DataFrame):  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(
        data[FEATURES], data["label"]
    )
