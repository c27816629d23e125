"""`modelport score REF 'SELECT …' --database URL`: a query's result, saved once, scored like a file
(docs/batch.md) — on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from tests.batch.conftest import book, leftovers, write_csv
from tests.conftest import FEATURES, _postgres_schema_url
from tests.conftest import invoke_cli as cli

QUERY = "SELECT id, branch, " + ", ".join(FEATURES) + " FROM loans ORDER BY id"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def loans_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database holding a ``loans`` table of 12,000 rows (SQLite file, or a PostgreSQL schema)."""
    if request.param == "sqlite":
        yield _filled(f"sqlite:///{tmp_path / 'book.db'}")
        return
    for url in _postgres_schema_url():  # a schema of its own, dropped afterwards
        # trust authentication takes any password: one is given, to show it is never recorded
        yield _filled(make_url(url).set(password="s3cret-pass").render_as_string(hide_password=False))


def _filled(url: str) -> str:
    engine = create_engine(url)
    try:
        book(6_000, seed=9).to_sql("loans", engine, index=False)
    finally:
        engine.dispose()
    return url


def test_a_query_is_scored_like_the_same_rows_in_a_file(home: Path, tmp_path: Path, loans_url: str) -> None:
    output = tmp_path / "from-sql.parquet"
    done = cli(
        home,
        "score",
        "credit",
        QUERY,
        "--database",
        loans_url,
        "-o",
        str(output),
        "--keep",
        "id,branch",
        "--on-violation",
        "flag",
        "--chunk-rows",
        "2000",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["rows"], summary["scored"], summary["chunks"]) == (6_000, 6_000, 3)
    source = write_csv(book(6_000, seed=9), tmp_path / "same.csv")
    again = cli(
        home,
        "score",
        "credit",
        str(source),
        "-o",
        str(tmp_path / "from-file.parquet"),
        "--keep",
        "id,branch",
        "--on-violation",
        "flag",
    )
    assert again.returncode == 0, again.stderr
    queried, filed = pq.read_table(output), pq.read_table(tmp_path / "from-file.parquet")
    for name in ("id", "branch", "label", "p_c0", "p_c1", "p_c2", "flags"):
        assert queried.column(name).equals(filed.column(name)), name
    job = json.loads(cli(home, "jobs", "--job", summary["job_id"], "--json").stdout)[0]
    assert job["input"] == QUERY and job["options"]["source"] == "sql"
    assert "s3cret-pass" not in json.dumps(job)  # the URL is recorded with its password hidden
    trail = cli(home, "audit", "list", "--json").stdout
    assert "s3cret-pass" not in trail
    assert leftovers(tmp_path) == []


def test_a_failing_query_or_url_is_a_clear_error(home: Path, tmp_path: Path, loans_url: str) -> None:
    output = tmp_path / "o.parquet"
    for query, url, message in (
        ("SELEC nothing", loans_url, "the query failed"),
        ("SELECT * FROM no_such_table", loans_url, "the query failed"),
        ("SELECT id FROM loans", loans_url, "lacks the feature(s) f0"),
        (
            "SELECT id, branch, f0 AS f1, f1 AS f0, f2, f3, f4, f5 FROM loans WHERE id = 'none'",
            loans_url,
            "has no rows",
        ),
        (QUERY, "not a url", "database URL"),
        (QUERY, "nosuchdialect://x/y", "database URL"),
    ):
        done = cli(
            home, "score", "credit", query, "--database", url, "-o", str(output), "--keep", "id,branch"
        )
        assert done.returncode == 2, (query, url, done.stderr)
        assert message in done.stderr, (query, done.stderr)
        assert "s3cret-pass" not in done.stderr
        assert not output.exists() and leftovers(tmp_path) == []
