"""`modelport score`: outputs, pass-through keys, policies, bad input, job records (docs/batch.md).

The CLI runs in this process (``invoke_cli``): the process boundary is the point only of the
kill-and-resume test (test_resume.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modelport.app import open_registry
from modelport.settings import Settings
from tests.batch.conftest import book, leftovers, read_csv, write_csv
from tests.conftest import FEATURES, run_cli
from tests.conftest import invoke_cli as cli
from tests.serving.conftest import registered_home

OUTPUT_COLUMNS = ["label", "p_c0", "p_c1", "p_c2", "flags", "model", "version", "job_id"]


def score(home: Path, *args: str) -> dict:  # type: ignore[type-arg]
    done = cli(home, "score", *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def jobs(home: Path) -> list[dict]:  # type: ignore[type-arg]
    return json.loads(cli(home, "jobs", "--json").stdout)  # type: ignore[no-any-return]


def local(home: Path, frame: pd.DataFrame, ref: str = "credit@production") -> pd.DataFrame:
    registry = open_registry(Settings(home=home))
    try:
        return registry.predict(ref, frame[FEATURES])
    finally:
        registry.close()


def test_csv_and_parquet_outputs_keep_keys_order_and_agree_with_local_scoring(
    home: Path, tmp_path: Path
) -> None:
    loans = book(5_000)
    source = write_csv(loans, tmp_path / "loans.csv")
    summary = score(
        home,
        "credit@production",
        str(source),
        "-o",
        str(tmp_path / "scores.csv"),
        "--keep",
        "id,branch",
        "--chunk-rows",
        "1000",
        "--on-violation",
        "flag",
    )
    assert summary["rows"] == summary["scored"] == 5_000 and summary["chunks"] == 5
    assert summary["model"] == "credit" and summary["version"] == 1
    written = read_csv(tmp_path / "scores.csv")
    assert written.column_names == ["id", "branch", *OUTPUT_COLUMNS]
    # keys verbatim (leading zeros kept) and in input order: joinable without relying on row order
    assert written.column("id").to_pylist() == list(loans["id"])
    assert written.column("branch").to_pylist() == list(loans["branch"])
    assert set(written.column("job_id").to_pylist()) == {summary["job_id"]}
    assert set(written.column("version").to_pylist()) == {1}
    expected = local(home, loans)
    assert written.column("label").to_pylist() == list(expected["label"])
    np.testing.assert_allclose(written.column("p_c1").to_numpy(), expected["p_c1"].to_numpy(), rtol=1e-6)

    loans.to_parquet(tmp_path / "loans.parquet", row_group_size=1_500)
    summary = score(
        home,
        "credit@production",
        str(tmp_path / "loans.parquet"),
        "-o",
        str(tmp_path / "scores.parquet"),
        "--keep",
        "id",
        "--drop",
        "branch",
        "--on-violation",
        "flag",
    )
    table = pq.read_table(tmp_path / "scores.parquet")
    assert table.column_names == ["id", *OUTPUT_COLUMNS]
    assert table.column("id").to_pylist() == list(loans["id"])
    assert table.column("label").to_pylist() == written.column("label").to_pylist()
    # the same input read from CSV or Parquet gives the same numbers, bit for bit
    assert table.column("p_c2").to_numpy().tobytes() == written.column("p_c2").to_numpy().tobytes()
    assert summary["output_digest"] == hashlib.sha256((tmp_path / "scores.parquet").read_bytes()).hexdigest()
    assert leftovers(tmp_path) == []  # no work folder, no temporary file


def test_a_folder_or_a_glob_is_scored_in_name_order(home: Path, tmp_path: Path) -> None:
    loans = book(3_000)
    folder = tmp_path / "in"
    folder.mkdir()
    for index, start in enumerate(range(0, 3_000, 1_000)):
        write_csv(loans.iloc[start : start + 1_000], folder / f"part-{index}.csv")
    score(
        home,
        "credit",
        str(folder),
        "-o",
        str(tmp_path / "all.parquet"),
        "--keep",
        "id,branch",
        "--on-violation",
        "flag",
    )
    assert pq.read_table(tmp_path / "all.parquet").column("id").to_pylist() == list(loans["id"])
    score(
        home,
        "credit",
        str(folder / "part-[12].csv"),
        "-o",
        str(tmp_path / "two.csv"),
        "--keep",
        "id,branch",
        "--on-violation",
        "flag",
    )
    assert read_csv(tmp_path / "two.csv").column("id").to_pylist() == list(loans["id"][1_000:])


def test_reject_names_the_first_row_its_key_and_feature_and_writes_nothing(
    home: Path, tmp_path: Path
) -> None:
    loans = book(4_000)
    loans.loc[2_345, "f3"] = 1e6  # far above what credit was trained on
    loans.loc[3_900, "f1"] = -1e6
    loans[FEATURES] = loans[FEATURES].clip(-2, 2)  # everything else inside the training range
    loans.loc[2_345, "f3"] = 1e6
    loans.loc[3_900, "f1"] = -1e6
    source = write_csv(loans, tmp_path / "loans.csv")
    output = tmp_path / "scores.parquet"
    done = cli(
        home,
        "score",
        "credit@production",
        str(source),
        "-o",
        str(output),
        "--keep",
        "id",
        "--drop",
        "branch",
        "--on-violation",
        "reject",
        "--chunk-rows",
        "1000",
    )
    assert done.returncode == 2, done.stderr
    assert "row 2,346 (id='00002345')" in done.stderr and "'f3' is above range" in done.stderr
    assert not output.exists() and leftovers(tmp_path) == []
    job = jobs(home)[0]
    assert job["status"] == "failed" and "row 2,346" in job["error"]

    # flag: every row scored, the flags say which feature of which row
    score(
        home,
        "credit@production",
        str(source),
        "-o",
        str(output),
        "--keep",
        "id",
        "--drop",
        "branch",
        "--on-violation",
        "flag",
    )
    flags = pq.read_table(output).column("flags").to_pylist()
    assert flags[2_345] == "f3:above_range" and flags[3_900] == "f1:below_range"
    assert sum(1 for f in flags if f) == 2
    # skip: those rows are left out and listed with their row number, key and reason
    summary = score(
        home,
        "credit@production",
        str(source),
        "-o",
        str(tmp_path / "kept.csv"),
        "--keep",
        "id",
        "--drop",
        "branch",
        "--on-violation",
        "skip",
    )
    assert (summary["scored"], summary["skipped"], summary["flagged"]) == (3_998, 2, 2)
    kept = read_csv(tmp_path / "kept.csv")
    assert "00002345" not in kept.column("id").to_pylist() and kept.num_rows == 3_998
    skipped = read_csv(Path(summary["skipped_file"]), text=("id", "reasons"))
    assert skipped.to_pylist() == [
        {"row": 2_346, "id": "00002345", "reasons": "f3:above_range"},
        {"row": 3_901, "id": "00003900", "reasons": "f1:below_range"},
    ]


def test_the_models_policy_is_the_default(home: Path, tmp_path: Path) -> None:
    loans = book(1_000)
    loans[FEATURES] = loans[FEATURES].clip(-2, 2)
    loans.loc[10, "f0"] = 99.0
    source = write_csv(loans, tmp_path / "loans.csv")
    assert cli(home, "policy", "credit", "--on-violation", "reject").returncode == 0
    done = cli(home, "score", "credit", str(source), "-o", str(tmp_path / "o.csv"), "--keep", "id,branch")
    assert done.returncode == 2 and "row 11 (id='00000010', branch='south')" in done.stderr
    assert cli(home, "policy", "credit", "--on-violation", "flag").returncode == 0
    assert (
        score(home, "credit", str(source), "-o", str(tmp_path / "o.csv"), "--keep", "id,branch")["flagged"]
        == 1
    )


def _bad_inputs(tmp_path: Path) -> list[tuple[str, list[str], int, str]]:
    loans = book(2_000)
    cases: list[tuple[str, list[str], int, str]] = []
    write_csv(loans.drop(columns=["f2"]), tmp_path / "missing.csv")
    cases.append(("missing.csv", ["--keep", "id,branch"], 2, "lacks the feature(s) f2"))
    cases.append(
        ("extra", ["--keep", "id"], 2, "column(s) the signature does not: branch; name them in --keep")
    )
    text = loans.astype({"f4": object})
    text.loc[1_500, "f4"] = "n/a?"
    write_csv(text, tmp_path / "text.csv")
    cases.append(("text.csv", ["--keep", "id,branch"], 2, "a numeric feature holds text"))
    typed = loans.astype({"f1": str})
    typed.to_parquet(tmp_path / "typed.parquet")
    cases.append(("typed.parquet", ["--keep", "id,branch"], 2, "'f1' must be numeric"))
    loans.to_parquet(tmp_path / "whole.parquet")
    blob = (tmp_path / "whole.parquet").read_bytes()
    (tmp_path / "truncated.parquet").write_bytes(blob[: len(blob) // 2])
    cases.append(("truncated.parquet", ["--keep", "id,branch"], 2, "is not a readable Parquet file"))
    whole_csv = loans.to_csv(index=False).encode()
    cut = whole_csv.index(b"\n", len(whole_csv) * 2 // 3) + 20  # a copy that stopped inside a line
    (tmp_path / "truncated.csv").write_bytes(whole_csv[:cut])
    cases.append(("truncated.csv", ["--keep", "id,branch"], 2, "cannot be read as CSV"))
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00garbage\x00\n\x01\x02")
    cases.append(("binary.csv", [], 2, "is not readable CSV"))
    (tmp_path / "empty.csv").write_text(",".join(["id", "branch", *FEATURES]) + "\n")
    cases.append(("empty.csv", ["--keep", "id,branch"], 2, "has no rows to score"))
    cases.append(("nothing-here.csv", [], 3, "does not exist"))
    (tmp_path / "notes.txt").write_text("hello")
    cases.append(("notes.txt", [], 2, "unsupported file type"))
    write_csv(loans, tmp_path / "full.csv")
    cases.append(
        ("full.csv", ["--keep", "id,nosuch", "--drop", "branch"], 2, "the input does not have: nosuch")
    )
    cases.append(("full.csv", ["--keep", "id,branch", "--drop", "id"], 2, "both kept and dropped: id"))
    return cases


def test_bad_input_is_refused_clearly_and_leaves_nothing(home: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    cases = _bad_inputs(inputs)
    write_csv(book(2_000), inputs / "extra")  # a CSV without the suffix is refused for its suffix …
    cases = [c if c[0] != "extra" else ("extra.csv", c[1], c[2], c[3]) for c in cases]
    (inputs / "extra").rename(inputs / "extra.csv")
    out = tmp_path / "out"
    out.mkdir()
    told = []
    for name, extra, code, message in cases:
        done = cli(home, "score", "credit", str(inputs / name), "-o", str(out / "scores.parquet"), *extra)
        assert done.returncode == code, (name, done.stderr)
        assert message in done.stderr, (name, done.stderr)
        told.append(done.stderr.strip().removeprefix("error: "))
        assert "Traceback" not in done.stderr and str(Path.home()) not in done.stderr.replace(
            str(tmp_path), ""
        )
        assert list(out.iterdir()) == [], name  # no output, no temporary file, no work folder
    # every refusal after the version was known is a failed job, with its reason
    failed = [j for j in jobs(home) if j["status"] == "failed"]
    assert len(failed) == len(cases)
    assert sorted(j["error"] for j in failed) == sorted(told)  # the reason the user was told


def test_bad_output_and_references(home: Path, tmp_path: Path) -> None:
    source = write_csv(book(1_000), tmp_path / "loans.csv")
    for output, code, message in (
        (tmp_path / "nofolder" / "o.parquet", 3, "does not exist"),
        (tmp_path, 2, "write .parquet or .csv"),
        (tmp_path / "o.json", 2, "write .parquet or .csv"),
        (source, 2, "write it elsewhere"),
    ):
        done = cli(home, "score", "credit", str(source), "-o", str(output), "--keep", "id,branch")
        assert done.returncode == code and message in done.stderr, (output, done.stderr)
    assert cli(home, "score", "nosuch", str(source), "-o", str(tmp_path / "o.csv")).returncode == 3
    assert cli(home, "score", "credit@9", str(source), "-o", str(tmp_path / "o.csv")).returncode == 3
    assert cli(home, "score", "../etc", str(source), "-o", str(tmp_path / "o.csv")).returncode == 2
    done = cli(
        home, "score", "credit", str(source), "-o", str(tmp_path / "o.csv"), "--on-violation", "ignore"
    )
    assert done.returncode == 2 and "--on-violation is one of reject, flag, skip" in done.stderr
    done = cli(home, "score", "credit", str(source))
    assert done.returncode == 2 and "REF INPUT -o OUTPUT" in done.stderr
    assert not (tmp_path / "o.csv").exists() and leftovers(tmp_path) == []


def test_an_archived_version_is_refused_and_the_job_failed(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, data: pd.DataFrame, sklearn_model: object
) -> None:
    home = registered_home("releases", tmp_path / "home", tmp_path_factory, data, sklearn_model)
    assert cli(home, "retention", "credit", "--keep-last", "1", "--keep-days", "0").returncode == 0
    assert json.loads(cli(home, "gc", "--json").stdout)["models"][0]["archive"] == [2]
    source = write_csv(book(1_000), tmp_path / "loans.csv")
    done = cli(home, "score", "credit@2", str(source), "-o", str(tmp_path / "o.csv"), "--keep", "id,branch")
    assert done.returncode == 3 and "was archived" in done.stderr
    assert jobs(home)[0]["status"] == "failed" and "was archived" in jobs(home)[0]["error"]
    assert not (tmp_path / "o.csv").exists()


def test_jobs_are_recorded_with_digests_and_audited(home: Path, tmp_path: Path) -> None:
    source = write_csv(book(2_000), tmp_path / "loans.csv")
    summary = score(
        home,
        "credit@staging",
        str(source),
        "-o",
        str(tmp_path / "o.csv"),
        "--keep",
        "id,branch",
        "--on-violation",
        "flag",
    )
    job = json.loads(cli(home, "jobs", "--job", summary["job_id"], "--json").stdout)[0]
    file_digest = hashlib.sha256(source.read_bytes()).digest()
    assert job["input_digest"] == hashlib.sha256(file_digest).hexdigest()
    assert job["output_digest"] == hashlib.sha256((tmp_path / "o.csv").read_bytes()).hexdigest()
    assert (job["model"], job["version"], job["status"], job["rows_total"], job["rows_scored"]) == (
        "credit",
        2,
        "done",
        2_000,
        2_000,
    )
    assert job["actor"].startswith("local:") and job["options"]["keep"] == ["id", "branch"]
    trail = json.loads(cli(home, "audit", "list", "--json").stdout)
    mine = [
        r
        for r in trail
        if r["action"].startswith("job.") and (r["after"] or {}).get("job") == summary["job_id"]
    ]
    assert [r["action"] for r in mine] == ["job.started", "job.finished"]
    assert mine[1]["after"]["output_digest"] == job["output_digest"]
    assert mine[1]["after"]["input_digest"] == job["input_digest"]
    assert cli(home, "audit", "verify").returncode == 0
    listed = run_cli(home, "jobs", "credit", env={"COLUMNS": "100"})
    assert summary["job_id"] in listed.stdout and "done" in listed.stdout and "credit@2" in listed.stdout
    assert max(len(line) for line in listed.stdout.splitlines()) <= 100
    assert cli(home, "jobs", "--job", "job-nosuch").returncode == 3
    # the version's lineage goes on: `show` lists the jobs that scored with it
    shown = cli(home, "show", "credit@2")
    assert summary["job_id"] in shown.stdout and "2,000 row(s)" in shown.stdout
    lineage = json.loads(cli(home, "show", "credit@2", "--json").stdout)["batch_jobs"]
    assert [j["id"] for j in lineage] == [summary["job_id"]]
    assert json.loads(cli(home, "show", "credit@1", "--json").stdout)["batch_jobs"] == []


def test_an_alias_moved_during_a_job_changes_nothing_and_resume_keeps_the_version(
    home: Path, tmp_path: Path
) -> None:
    """The reference is resolved once: the job records the number, and resume loads that number."""
    source = write_csv(book(1_000), tmp_path / "loans.csv")
    summary = score(
        home,
        "credit@production",
        str(source),
        "-o",
        str(tmp_path / "o.parquet"),
        "--keep",
        "id,branch",
        "--on-violation",
        "flag",
    )
    assert summary["version"] == 1
    assert cli(home, "alias", "set", "credit@2", "production").returncode == 0
    assert jobs(home)[0]["version"] == 1
    done = cli(home, "score", "--resume", summary["job_id"])
    assert done.returncode == 1 and "is done" in done.stderr
    done = cli(home, "score", "credit", str(source), "--resume", summary["job_id"])
    assert done.returncode == 2 and "name nothing else" in done.stderr
    table = pq.read_table(tmp_path / "o.parquet")
    assert table.schema.field("version").type == pa.int64()


def test_a_chunk_larger_than_allowed_is_refused_before_reading(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The input's layout cannot make a chunk huge: a line without end (CSV), a giant row group."""
    import modelport.batch.plan as plan

    monkeypatch.setattr(plan, "MAX_CHUNK_BYTES", 50_000)
    loans = book(3_000)
    source = write_csv(loans, tmp_path / "loans.csv")
    done = cli(home, "score", "credit", str(source), "-o", str(tmp_path / "o.csv"), "--keep", "id,branch")
    assert done.returncode == 2 and "more than a chunk may (50,000)" in done.stderr, done.stderr
    assert "lower --chunk-rows" in done.stderr
    loans.to_parquet(tmp_path / "loans.parquet", row_group_size=3_000)
    done = cli(
        home,
        "score",
        "credit",
        str(tmp_path / "loans.parquet"),
        "-o",
        str(tmp_path / "o.csv"),
        "--keep",
        "id,branch",
    )
    assert done.returncode == 2 and "row group 0 holds" in done.stderr and "smaller row groups" in done.stderr
    assert not (tmp_path / "o.csv").exists() and leftovers(tmp_path) == []


def test_the_job_tells_its_progress_chunk_by_chunk(home: Path, tmp_path: Path) -> None:
    """What the CLI draws as the progress bar (on a terminal only, tests/cli/test_guidance.py): one
    step per scored chunk with its count, then the writing of OUTPUT."""
    from modelport.batch.job import ScoreOptions, start_job

    source = write_csv(book(5_000), tmp_path / "loans.csv")
    heard: list[tuple[str, int | None, int | None]] = []

    def listen(step: str, done: int | None = None, total: int | None = None) -> None:
        heard.append((step, done, total))

    registry = open_registry(Settings(home=home))
    try:
        options = ScoreOptions(keep=["id", "branch"], on_violation="flag", chunk_rows=1_000, threads=1)
        summary = start_job(
            registry, "credit", str(source), tmp_path / "o.parquet", options, actor="t", progress=listen
        )
    finally:
        registry.close()
    assert summary.chunks == 5
    scoring = [(done, total) for step, done, total in heard if step.startswith("scoring with credit@1: ")]
    assert scoring == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]
    assert all(" rows/s, " in step for step, _, _ in heard if step.startswith("scoring with"))
    assert heard[0][0] == "loading credit" and heard[-1][0] == "writing o.parquet"
