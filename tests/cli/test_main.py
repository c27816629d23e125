"""The ``modelport`` CLI end to end: real files, a real SQLite home, exit codes and messages."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import joblib
import pandas as pd
import pytest
import skops.io

from modelport.app import open_registry
from modelport.cli.main import main
from modelport.settings import Settings
from tests.conftest import FEATURES


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("MODELPORT_HOME", str(home))
    monkeypatch.setenv("MODELPORT_EQUIVALENCE_ROWS", "300")
    return home


@pytest.fixture(scope="module")
def registered_home(
    tmp_path_factory: pytest.TempPathFactory, sklearn_model: object, data: pd.DataFrame
) -> Path:
    """A home holding ``credit@1`` registered from a skops file (the test of that path is
    ``test_full_workflow``): copied by tests that need a version, instead of registering — and
    preflighting — the same file once per case."""
    root = tmp_path_factory.mktemp("registered")
    skops.io.dump(sklearn_model, root / "model.skops")
    data.to_csv(root / "sample.csv", index=False)
    registry = open_registry(Settings(home=root / "home", equivalence_rows=300), create=True)
    try:
        registry.register(
            path=root / "model.skops", name="credit", sample=root / "sample.csv", target="label"
        )
    finally:
        registry.close()
    return root / "home"


@pytest.fixture
def files(tmp_path: Path, sklearn_model: object, data: pd.DataFrame) -> dict[str, Path]:
    paths = {
        "skops": tmp_path / "model.skops",
        "pickle": tmp_path / "model.pkl",
        "sample": tmp_path / "sample.csv",
        "parquet": tmp_path / "sample.parquet",
        "rows_csv": tmp_path / "rows.csv",
        "rows_json": tmp_path / "rows.json",
    }
    skops.io.dump(sklearn_model, paths["skops"])
    joblib.dump(sklearn_model, paths["pickle"])
    data.to_csv(paths["sample"], index=False)
    data.to_parquet(paths["parquet"], index=False)
    data[FEATURES].head(4).to_csv(paths["rows_csv"], index=False)
    paths["rows_json"].write_text(data[FEATURES].head(3).to_json(orient="records"))
    return paths


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as done:
        code = int(done.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_full_workflow(home: Path, files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "init")
    assert code == 0 and "registry ready" in out
    code, out, err = run(
        capsys,
        "register",
        "credit",
        str(files["skops"]),
        "--sample",
        str(files["sample"]),
        "--target",
        "label",
        "--alias",
        "production",
        "--tag",
        "team=risk",
        "--metric",
        "auc=0.8",
        "--description",
        "first",
        "--code-revision",
        "deadbeef",
    )
    assert code == 0, err
    assert "registered credit@1" in out and "serving format onnx" in out and "equivalent" in out
    code, out, _ = run(
        capsys,
        "register",
        "credit",
        str(files["skops"]),
        "--sample",
        str(files["parquet"]),
        "--target",
        "label",
        "--json",
    )
    assert code == 0 and json.loads(out)["number"] == 2

    code, out, _ = run(capsys, "models", "--json")
    assert json.loads(out)[0] | {"created_at": None} == {
        "name": "credit",
        "description": "",
        "created_at": None,
        "latest_version": 2,
        "aliases": {"production": 1},
        "on_violation": "flag",
    }
    code, out, _ = run(capsys, "models")
    assert "credit" in out and "production→1" in out
    code, out, _ = run(capsys, "versions", "credit", "--json")
    assert [v["number"] for v in json.loads(out)] == [1, 2]
    code, out, _ = run(capsys, "versions", "credit")
    assert code == 0 and "production" in out

    code, out, _ = run(capsys, "show", "credit@production", "--json")
    shown = json.loads(out)
    assert shown["number"] == 1 and shown["tags"] == {"team": "risk"}
    assert shown["lineage"]["metrics"] == {"auc": 0.8} and shown["lineage"]["code_revision"] == "deadbeef"
    code, out, _ = run(capsys, "show", "credit")
    assert code == 0 and "credit@2" in out and "sha256:" in out

    assert run(capsys, "alias", "set", "credit", "production", "2")[0] == 0
    code, out, _ = run(capsys, "show", "credit@production", "--json")
    assert json.loads(out)["number"] == 2
    assert run(capsys, "alias", "set", "credit", "staging", "1", "--json")[0] == 0
    assert run(capsys, "alias", "rm", "credit", "staging")[0] == 0

    code, out, _ = run(capsys, "predict", "credit@production", "--input", str(files["rows_json"]))
    rows = json.loads(out)
    assert len(rows) == 3 and set(rows[0]) == {"label", "p_c0", "p_c1", "p_c2"}
    code, out, _ = run(capsys, "predict", "credit@1", "--input", str(files["rows_csv"]), "--csv")
    assert out.splitlines()[0] == "label,p_c0,p_c1,p_c2" and len(out.splitlines()) == 5
    target = files["rows_csv"].with_name("out.parquet")
    code, out, _ = run(
        capsys, "predict", "credit@1", "--input", str(files["rows_csv"]), "--output", str(target)
    )
    assert code == 0 and len(pd.read_parquet(target)) == 4


@pytest.mark.parametrize(
    ("args", "exit_code", "message"),
    [
        (["register", "credit", "{model_bin}", "--sample", "{sample}"], 2, "cannot tell the format"),
        (
            ["register", "credit", "{skops}", "--sample", "{sample}", "--format", "pmml"],
            2,
            "unknown format 'pmml'",
        ),
        (
            ["register", "credit", "{pickle}", "--sample", "{sample}", "--target", "label"],
            2,
            "--trust-pickle",
        ),
        (["register", "credit", "{skops}", "--sample", "{sample}"], 2, "does not use: label"),
        (
            ["register", "credit", "{skops}", "--sample", "{rows_missing}"],
            2,
            "lacks feature(s) the model expects: f5",
        ),
        (
            ["register", "credit", "{skops}", "--sample", "{sample}", "--target", "label", "--alias", "123"],
            2,
            "all digits",
        ),
        (
            ["register", "credit", "{skops}", "--sample", "{sample}", "--target", "label", "--alias", "a/b"],
            2,
            "path characters",
        ),
        (
            ["register", "credit", "{skops}", "--sample", "{sample}", "--target", "label", "--alias", ".."],
            2,
            "path characters",
        ),
        (
            ["register", "../etc", "{skops}", "--sample", "{sample}", "--target", "label"],
            2,
            "path characters",
        ),
        (["register", "a/b", "{skops}", "--sample", "{sample}", "--target", "label"], 2, "path characters"),
        (["register", "credit", "{tmp}/absent.skops", "--sample", "{sample}"], 3, "does not exist"),
        (["register", "credit", "{skops}", "--sample", "{tmp}/absent.csv"], 3, "does not exist"),
        (["register", "credit", "{skops}", "--sample", "{sample}", "--tag", "novalue"], 2, "KEY=VALUE"),
        (
            ["register", "credit", "{skops}", "--sample", "{sample}", "--metric", "auc=high"],
            2,
            "must be a number",
        ),
        (["show", "nope@1"], 3, "no model named 'nope'"),
        (["show", "credit@9"], 3, "no version 9"),
        (["show", "credit@staging"], 3, "no alias 'staging'"),
        (["show", "credit@"], 2, "ends with '@'"),
        (["versions", "nope"], 3, "no model named 'nope'"),
        (["alias", "set", "credit", "latest", "1"], 2, "reserved"),
        (["alias", "set", "credit", "007", "1"], 2, "all digits"),
        (["alias", "set", "credit", "prod", "5"], 3, "no version 5"),
        (["alias", "rm", "credit", "prod"], 3, "no alias 'prod'"),
        (["predict", "credit@1", "--input", "{tmp}/absent.csv"], 3, "does not exist"),
        (["predict", "credit@1", "--input", "{rows_missing}"], 2, "missing feature(s) f5"),
        (["predict", "credit@1", "--input", "{bad_json}"], 2, "cannot read"),
        (["predict", "credit@1", "--input", "{model_bin}"], 2, "use a .csv, .parquet or .json file"),
        (
            ["predict", "credit@1", "--input", "{rows_csv}", "--output", "{tmp}/no/such/dir/out.csv"],
            3,
            "directory does not exist",
        ),
        (["predict", "credit@1", "--input", "{rows_csv}", "--output", "{tmp}/out.xlsx"], 2, "use a .csv"),
        (["predict", "credit@1", "--input", "{huge}"], 2, "beyond ±3.4e38"),
        (["predict", "credit@1", "--input", "{dup_json}"], 2, "duplicate column(s): f5"),
        (["alias", "set", "credit", "prod", "99999999999999999999"], 2, "version numbers run from 1"),
        (["show", "credit@99999999999"], 2, "version numbers run from 1"),
        (["policy", "credit", "--on-violation", "ignore"], 2, "must be one of flag, reject"),
        (["policy", "nope", "--on-violation", "flag"], 3, "no model named 'nope'"),
        (["register", "credit", "{skops}", "--sample", "{one_row}", "--target", "label"], 2, "at least 10"),
        (
            [
                "register",
                "credit",
                "{skops}",
                "--sample",
                "{sample}",
                "--target",
                "label",
                "--classes",
                "a,b,c",
            ],
            2,
            "already names its classes",
        ),
        (
            [
                "register",
                "credit",
                "{skops}",
                "--sample",
                "{sample}",
                "--target",
                "label",
                "--parent",
                "99999999999",
            ],
            2,
            "version numbers run from 1",
        ),
    ],
)
def test_bad_input_gets_a_clear_message_and_exit_code(
    home: Path,
    registered_home: Path,
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    exit_code: int,
    message: str,
    data: pd.DataFrame,
) -> None:
    (tmp_path / "model.bin").write_bytes(b"\x00junk")
    data[FEATURES].head(2).assign(f0=1e308).to_csv(tmp_path / "huge.csv", index=False)
    data.head(1).to_csv(tmp_path / "one.csv", index=False)
    columns = [*FEATURES, "f5"]
    (tmp_path / "dup.json").write_text(json.dumps({"columns": columns, "data": [[0.0] * len(columns)]}))
    (tmp_path / "bad.json").write_text("{not json")
    data[FEATURES[:-1]].to_csv(tmp_path / "missing.csv", index=False)
    shutil.copytree(registered_home, home)  # credit@1, registered from the skops file once per module
    names = {
        "tmp": str(tmp_path),
        "model_bin": str(tmp_path / "model.bin"),
        "bad_json": str(tmp_path / "bad.json"),
        "rows_missing": str(tmp_path / "missing.csv"),
        "huge": str(tmp_path / "huge.csv"),
        "one_row": str(tmp_path / "one.csv"),
        "dup_json": str(tmp_path / "dup.json"),
        **{k: str(v) for k, v in files.items()},
    }
    code, out, err = run(capsys, *[a.format(**names) for a in args])
    assert code == exit_code, (out, err)
    assert message in err
    assert "Traceback" not in err and 'File "' not in err
    # nothing half-written: still exactly one version
    code, out, _ = run(capsys, "versions", "credit", "--json")
    assert [v["number"] for v in json.loads(out)] == [1]


def test_commands_before_init_say_what_to_do(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "models")
    assert code == 5 and "run `modelport init`" in err
    assert not home.exists()


def test_usage_errors_exit_2(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "alias", "set", "credit", "production", "x")
    assert code == 2 and "Invalid value for 'VERSION'" in err
    code, _, err = run(capsys, "frobnicate")
    assert code == 2


def test_database_problems_are_reported_without_secrets(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELPORT_DATABASE_URL", "postgresql://u:hunter2@127.0.0.1:1/x?password=s3cret")
    code, _, err = run(capsys, "init")
    assert code == 5 and "cannot use the registry database" in err
    assert "hunter2" not in err and "s3cret" not in err and "SELECT" not in err
    monkeypatch.setenv("MODELPORT_DATABASE_URL", "mysql://root@localhost/x")
    code, _, err = run(capsys, "models")
    assert code == 2 and "unsupported database 'mysql'" in err


def test_installed_entry_point(home: Path, files: dict[str, Path]) -> None:
    exe = Path(sys.executable).with_name("modelport")
    done = subprocess.run(
        [
            str(exe),
            "register",
            "credit",
            str(files["pickle"]),
            "--sample",
            str(files["sample"]),
            "--target",
            "label",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2 and "--trust-pickle" in done.stderr
    done = subprocess.run(
        [
            str(exe),
            "register",
            "credit",
            str(files["pickle"]),
            "--sample",
            str(files["sample"]),
            "--target",
            "label",
            "--trust-pickle",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "registered credit@1" in done.stdout
    # the real process, with real warnings machinery: no tracebacks or library paths on stderr
    huge = files["rows_csv"].with_name("huge.csv")
    pd.read_csv(files["rows_csv"]).assign(f1=-1e300).to_csv(huge, index=False)
    done = subprocess.run(
        [str(exe), "predict", "credit@1", "--input", str(huge)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "site-packages" not in done.stderr
