"""`modelport evidence NAME --at T`: the summary, the bundle on disk, the digest, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import invoke_cli as cli
from tests.evidence.conftest import History


def test_writes_the_bundle_and_prints_the_summary(history: History, tmp_path: Path) -> None:
    out = tmp_path / "credit.zip"
    done = cli(history.home, "evidence", "credit", "--at", history.t2.isoformat(), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert out.is_file() and "manifest sha256:" in done.stdout
    assert "v2" in done.stdout and "canary v3" in done.stdout and "key:bob" in done.stdout
    assert "validation of v2 at that time: passed" in done.stdout

    again = cli(history.home, "evidence", "credit", "--at", history.t2.isoformat(), "-o", str(out))
    assert again.returncode != 0 and "exists" in again.stderr and "--force" in again.stderr
    forced = cli(
        history.home,
        "evidence",
        "credit",
        "--at",
        history.t1.isoformat(),
        "-o",
        str(out),
        "--force",
        "--json",
    )
    assert forced.returncode == 0, forced.stderr
    summary = json.loads(forced.stdout)
    assert summary["aliases"]["production"]["version"] == 1 and summary["bundle"] == str(out)
    assert len(summary["manifest_sha256"]) == 64


def test_errors(history: History, tmp_path: Path) -> None:
    out = str(tmp_path / "x.zip")
    unknown = cli(history.home, "evidence", "nope", "--at", "now", "-o", out)
    assert unknown.returncode != 0 and "nope" in unknown.stderr
    before = cli(history.home, "evidence", "credit", "--at", history.t0.isoformat(), "-o", out)
    assert before.returncode != 0 and "did not exist" in before.stderr
    malformed = cli(history.home, "evidence", "credit", "--at", "noon", "-o", out)
    assert malformed.returncode != 0 and "ISO 8601" in malformed.stderr
    nowhere = cli(history.home, "evidence", "credit", "--at", "now", "-o", str(tmp_path / "no" / "x.zip"))
    assert nowhere.returncode != 0 and "no folder" in nowhere.stderr
    assert not Path(out).exists()
