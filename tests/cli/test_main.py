"""The ``modelport`` CLI end to end: real files, a real SQLite home, exit codes and messages."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import joblib
import pandas as pd
import pytest
import skops.io

from modelport.app import open_registry
from modelport.cli.main import main
from modelport.registry.names import ModelRef
from modelport.settings import Settings
from tests.conftest import FEATURES, invoke_cli, run_cli


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
    """A home holding ``credit@1``, copied by tests that need a version instead of registering once
    per case. It is registered in-process from the model object (0.1 s); registering from a file —
    preflight in a child process included — is ``test_full_workflow``'s subject."""
    root = tmp_path_factory.mktemp("registered")
    registry = open_registry(Settings(home=root / "home", equivalence_rows=300), create=True)
    try:
        registry.register(sklearn_model, name="credit", sample=data, target="label")
    finally:
        registry.close()
    return root / "home"


@pytest.fixture(scope="module")
def files(
    tmp_path_factory: pytest.TempPathFactory, sklearn_model: object, data: pd.DataFrame
) -> dict[str, Path]:
    """The model and data files, written once per module: the tests read them (what a test writes
    goes beside them under a name of its own)."""
    folder = tmp_path_factory.mktemp("files")
    paths = {
        "skops": folder / "model.skops",
        "pickle": folder / "model.pkl",
        "sample": folder / "sample.csv",
        "parquet": folder / "sample.parquet",
        "rows_csv": folder / "rows.csv",
        "rows_json": folder / "rows.json",
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
    # the second version from the trusted pickle, read in this process: the preflight child of a skops
    # file (seconds) is the first registration's
    code, out, _ = run(
        capsys,
        "register",
        "credit",
        str(files["pickle"]),
        "--trust-pickle",
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
    code, out, _ = run(capsys, "show", "credit")  # the default route: production, set to 1
    assert code == 0 and "credit@1" in out and "sha256:" in out

    assert run(capsys, "alias", "set", "credit@2", "production")[0] == 0
    code, out, _ = run(capsys, "show", "credit@production", "--json")
    assert json.loads(out)["number"] == 2
    assert run(capsys, "alias", "set", "credit@1", "staging", "--json")[0] == 0
    assert run(capsys, "alias", "rm", "credit@staging")[0] == 0

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


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory, data: pd.DataFrame) -> dict[str, str]:
    """The malformed inputs, written once per module (only read)."""
    folder = tmp_path_factory.mktemp("bad-files")
    (folder / "model.bin").write_bytes(b"\x00junk")
    data[FEATURES].head(2).assign(f0=1e308).to_csv(folder / "huge.csv", index=False)
    data.head(1).to_csv(folder / "one.csv", index=False)
    columns = [*FEATURES, "f5"]
    (folder / "dup.json").write_text(json.dumps({"columns": columns, "data": [[0.0] * len(columns)]}))
    (folder / "bad.json").write_text("{not json")
    data[FEATURES[:-1]].to_csv(folder / "missing.csv", index=False)
    return {
        "model_bin": str(folder / "model.bin"),
        "bad_json": str(folder / "bad.json"),
        "rows_missing": str(folder / "missing.csv"),
        "huge": str(folder / "huge.csv"),
        "one_row": str(folder / "one.csv"),
        "dup_json": str(folder / "dup.json"),
    }


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
        # Sample problems are found after the model is read, whichever reader: these cases read the
        # trusted pickle in-process (0.1 s) rather than the skops file through three preflight
        # children (2.5 s each), which test_full_workflow and the other cases here cover.
        (
            ["register", "credit", "{pickle}", "--trust-pickle", "--sample", "{sample}"],
            2,
            "does not use: label",
        ),
        (
            ["register", "credit", "{pickle}", "--trust-pickle", "--sample", "{rows_missing}"],
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
        (
            ["register", "credit", "{pickle}", "--trust-pickle", "--sample", "{tmp}/absent.csv"],
            3,
            "does not exist",
        ),
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
        (["alias", "set", "credit@1", "latest"], 2, "reserved"),
        (["alias", "set", "credit@1", "007"], 2, "all digits"),
        (["alias", "set", "credit@5", "prod"], 3, "no version 5"),
        (["alias", "rm", "credit@prod"], 3, "no alias 'prod'"),
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
        (["alias", "set", "credit@99999999999999999999", "prod"], 2, "version numbers run from 1"),
        (["show", "credit@99999999999"], 2, "version numbers run from 1"),
        (["policy", "credit", "--on-violation", "ignore"], 2, "must be one of flag, reject"),
        (["policy", "nope", "--on-violation", "flag"], 3, "no model named 'nope'"),
        (
            [
                "register",
                "credit",
                "{pickle}",
                "--trust-pickle",
                "--sample",
                "{one_row}",
                "--target",
                "label",
            ],
            2,
            "at least 10",
        ),
        (
            [
                "register",
                "credit",
                "{pickle}",
                "--trust-pickle",
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
        (["register", "credit", "{skops}", "--sample", "{sample}", "--parent", "9.9.9"], 3, "labelled 9.9.9"),
        (["register", "credit", "{skops}", "--sample", "{sample}", "--parent", "prod"], 3, "no alias 'prod'"),
    ],
)
def test_bad_input_gets_a_clear_message_and_exit_code(
    home: Path,
    registered_home: Path,
    files: dict[str, Path],
    bad_files: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    exit_code: int,
    message: str,
) -> None:
    shutil.copytree(registered_home, home)  # credit@1, registered once per module
    names = {"tmp": str(tmp_path), **bad_files, **{k: str(v) for k, v in files.items()}}
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
    code, _, err = run(capsys, "approvals", "approve", "x")
    assert code == 2 and "Invalid value for 'ID'" in err
    code, _, err = run(capsys, "alias", "set", "credit@1")
    assert code == 2 and "Missing argument 'ALIAS'" in err
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


def test_installed_entry_point(
    home: Path, files: dict[str, Path], registered_home: Path, tmp_path: Path
) -> None:
    """The console script, in real processes: three chains at once (each child starts in ~1 s)."""
    exe = str(Path(sys.executable).with_name("modelport"))

    def console(*args: str, at: Path = home) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "MODELPORT_HOME": str(at)}
        return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120, check=False, env=env)

    def init_then_register() -> tuple[int, subprocess.CompletedProcess[str]]:
        initialised = console("init").returncode
        registered = console(
            "register",
            "credit",
            str(files["pickle"]),
            "--sample",
            str(files["sample"]),
            "--target",
            "label",
            "--trust-pickle",
        )
        return initialised, registered

    # a registry that holds credit@1 already, for the refusal and the prediction
    other = shutil.copytree(registered_home, tmp_path / "registered")
    huge = tmp_path / "huge.csv"
    pd.read_csv(files["rows_csv"]).assign(f1=-1e300).to_csv(huge, index=False)
    with ThreadPoolExecutor(3) as pool:
        chain = pool.submit(init_then_register)
        refused = pool.submit(
            console,
            *("register", "credit", str(files["pickle"]), "--sample", str(files["sample"])),
            *("--target", "label"),
            at=other,
        )
        # the real process, with real warnings machinery: no tracebacks or library paths on stderr
        predicted = pool.submit(console, "predict", "credit@1", "--input", str(huge), at=other)
    initialised, done = chain.result()
    assert initialised == 0
    assert done.returncode == 0, done.stderr
    assert "registered credit@1" in done.stdout
    done = refused.result()
    assert done.returncode == 2 and "--trust-pickle" in done.stderr
    done = predicted.result()
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "site-packages" not in done.stderr


# -- one reference grammar (cli/arguments.py) ----------------------------------------------------


@pytest.fixture(scope="module")
def routed_home(
    registered_home: Path, tmp_path_factory: pytest.TempPathFactory, sklearn_model: object, data: pd.DataFrame
) -> Path:
    """``credit@1..3`` with the label 2.1.0 on version 2 and no alias: copied per test."""
    home = tmp_path_factory.mktemp("routed") / "home"
    shutil.copytree(registered_home, home)
    registry = open_registry(Settings(home=home, equivalence_rows=300))
    try:
        for _ in range(2):
            registry.register(sklearn_model, name="credit", sample=data, target="label")
    finally:
        registry.close()
    assert invoke_cli(home, "label", "credit@2", "2.1.0").returncode == 0
    return home


@pytest.fixture
def routed(routed_home: Path, tmp_path: Path) -> Path:
    home = tmp_path / "routed"
    shutil.copytree(routed_home, home)
    return home


def _number(home: Path, ref: str) -> int:
    shown = invoke_cli(home, "show", ref, "--json")
    assert shown.returncode == 0, shown.stderr
    return int(json.loads(shown.stdout)["number"])


def _state(home: Path) -> dict[str, list[str]]:
    """Everything a command could change: every row of every table of the registry (models with their
    aliases, policy and latest version, the audit trail, releases, labels …), read directly."""
    with contextlib.closing(sqlite3.connect(home / "registry.db")) as db:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {table: sorted(map(repr, db.execute(f'SELECT * FROM "{table}"'))) for table in tables}


def test_a_bare_name_is_the_default_route_in_the_cli_and_the_python_api(routed: Path) -> None:
    def api(ref: str) -> int:
        registry = open_registry(Settings(home=routed))
        try:
            return registry.get(ref).number
        finally:
            registry.close()

    # no production alias: the default route is the latest version
    assert _number(routed, "credit") == api("credit") == 3
    assert _number(routed, "credit@latest") == api("credit@latest") == 3
    # production set: a bare NAME is that version; @latest still means the highest
    assert invoke_cli(routed, "alias", "set", "credit@1", "production").returncode == 0
    assert _number(routed, "credit") == api("credit") == 1
    assert _number(routed, "credit@latest") == api("credit@latest") == 3
    registry = open_registry(Settings(home=routed))
    try:
        loaded = registry.load("credit")
        assert loaded.version.number == 1
        loaded.close()
        assert registry.get(ModelRef("credit")).number == 1
    finally:
        registry.close()
    # the commands that act on a version act on the same one
    assert "validation reports of credit@1" in invoke_cli(routed, "reports", "credit").stdout
    assert invoke_cli(routed, "alias", "set", "credit", "staging").returncode == 0
    assert _number(routed, "credit@staging") == 1
    # production removed: back to the latest
    assert invoke_cli(routed, "alias", "rm", "credit@production").returncode == 0
    assert _number(routed, "credit") == api("credit") == 3


FORMS = {"number": "credit@2", "label": "credit@2.1.0", "alias": "credit@staging", "default": "credit"}


@pytest.mark.parametrize("form", FORMS)
def test_every_version_command_takes_every_ref_form(
    routed: Path, form: str, tmp_path: Path, data: pd.DataFrame
) -> None:
    """Each REF form names version 2 here (staging and production both point at it)."""
    for alias in ("staging", "production"):
        assert invoke_cli(routed, "alias", "set", "credit@2.1.0", alias).returncode == 0
    invoke_cli(routed, "alias", "set", "credit@1", "previous")
    ref = FORMS[form]
    data.to_csv(tmp_path / "sample.csv", index=False)
    data[FEATURES].head(3).to_csv(tmp_path / "rows.csv", index=False)

    assert _number(routed, ref) == 2
    assert "validation reports of credit@2" in invoke_cli(routed, "reports", ref).stdout
    profiled = invoke_cli(
        routed, "profile", ref, "--sample", str(tmp_path / "sample.csv"), "--target", "label"
    )
    assert profiled.stdout.startswith("credit@2: reference profile of 600 rows"), profiled.stderr
    predicted = invoke_cli(routed, "predict", ref, "--input", str(tmp_path / "rows.csv"), "--csv")
    assert predicted.returncode == 0 and len(predicted.stdout.splitlines()) == 4
    for command in ("predictions", "drift"):
        assert invoke_cli(routed, command, ref, "--json").returncode == 0
    assert "credit@2: no logged traffic in the window" in invoke_cli(routed, "drift", ref).stdout
    assert invoke_cli(routed, "alias", "set", ref, "champion").stdout == "credit@champion → 2\n"
    # version 2 has its label (a version keeps its label): the refusal names the version resolved
    assert "credit@2 is already labelled 2.1.0" in invoke_cli(routed, "label", ref, "9.9.9").stderr
    # options naming a version of the same model take what follows '@' (or the whole ref)
    selector = "credit@2" if form == "default" else ref.partition("@")[2]
    started = invoke_cli(routed, "release", "start", "credit@previous", "--canary", selector, "--weight", "5")
    assert started.stdout == "credit@previous: canary 2 takes 5 %\n", started.stderr
    status = json.loads(invoke_cli(routed, "release", "status", "credit@previous", "--json").stdout)
    assert status["release"]["canary"] == 2


BAD_REFS = ["credit@", "credit@0", "credit@2.1", "Credit", "credit@Prod", "a/b@1"]


@pytest.mark.parametrize(
    "command",
    [
        ["show", "{ref}"],
        ["reports", "{ref}"],
        ["predict", "{ref}", "--input", "{rows}"],
        ["profile", "{ref}", "--sample", "{rows}"],
        ["predictions", "{ref}"],
        ["drift", "{ref}"],
        ["validate", "{ref}"],
        ["alias", "set", "{ref}", "staging"],
        ["label", "{ref}", "3.0.0"],
        ["alias", "rm", "{ref}"],
        ["alias", "protect", "{ref}"],
        ["release", "status", "{ref}"],
        ["release", "start", "credit@production", "--canary", "{ref}", "--weight", "5"],
    ],
)
def test_a_bad_ref_gets_parse_refs_message_and_changes_nothing(
    routed: Path, command: list[str], tmp_path: Path, data: pd.DataFrame
) -> None:
    from modelport.errors import InvalidName
    from modelport.registry.names import parse_ref

    rows = tmp_path / "rows.csv"
    data[FEATURES].head(3).to_csv(rows, index=False)
    before = _state(routed)
    for bad in BAD_REFS:
        with pytest.raises(InvalidName) as expected:
            parse_ref(bad if "@" in bad or "--canary" not in command else f"credit@{bad}")
        done = invoke_cli(routed, *[a.format(ref=bad, rows=rows) for a in command])
        assert done.returncode == 2, (bad, done.stdout, done.stderr)
        assert done.stderr == f"error: {expected.value}\n", bad
    assert _state(routed) == before


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (["alias", "set", "credit", "production", "2"], "modelport alias set credit@2 production"),
        (["alias", "set", "credit", "production", "2", "--json"], "modelport alias set credit@2 production"),
        (["alias", "rm", "credit", "staging"], "modelport alias rm credit@staging"),
        (["alias", "protect", "credit", "production"], "modelport alias protect credit@production"),
        (["alias", "unprotect", "credit", "production"], "modelport alias unprotect credit@production"),
        (["alias", "history", "credit", "production"], "modelport alias history credit@production"),
        (["label", "credit", "2", "2.2.0"], "modelport label credit@2 2.2.0"),
        (
            ["release", "credit", "production", "--canary", "2", "--weight", "5"],
            "modelport release start credit@production …",
        ),
        (
            ["release", "start", "credit", "production", "--canary", "2", "--weight", "5"],
            "modelport release start credit@production …",
        ),
        (["release", "credit@production", "--canary", "2"], "modelport release start credit@production …"),
    ],
)
def test_an_old_form_is_answered_with_the_new_one(routed: Path, old: list[str], new: str) -> None:
    assert invoke_cli(routed, "alias", "set", "credit@1", "staging").returncode == 0
    before = _state(routed)
    done = invoke_cli(routed, *old)
    assert done.returncode == 2 and f"write `{new}`" in done.stderr, done.stderr
    assert _state(routed) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["alias", "rm", "credit"], "'credit' names no alias: give NAME@ALIAS, e.g. credit@production"),
        (["alias", "protect", "credit@2"], "'credit@2' names version 2, not an alias"),
        (["release", "status", "credit@2.1.0"], "names version 2.1.0, not an alias"),
        (["release", "stop", "credit@latest"], "alias 'latest' is reserved"),
        (["alias", "history", "credit@3"], "names version 3, not an alias"),
        (["versions", "credit@2"], "'credit@2' is a reference to one version; this command works on a whole"),
        (["policy", "credit@production", "--on-violation", "flag"], "give its NAME alone ('credit')"),
        (["retention", "credit@1", "--keep-last", "1"], "works on a whole model"),
        (["log-policy", "credit@1", "--sample", "1"], "works on a whole model"),
        (["doctor", "credit@1"], "works on a whole model"),
        (["gc", "--model", "credit@1"], "works on a whole model"),
        (["usage", "--model", "credit@production"], "works on a whole model"),
        (["privacy", "erase", "--subject", "x", "--model", "credit@1"], "works on a whole model"),
        (["register", "credit@2", "{rows}", "--sample", "{rows}"], "works on a whole model"),
        (
            ["register", "credit", "{rows}", "--sample", "{rows}", "--parent", "other@1"],
            "a version of 'other'",
        ),
        (["drift", "credit@2", "--all-versions"], "--all-versions covers every version"),
        (["predictions", "credit@staging", "--all-versions"], "give its NAME alone, not 'credit@staging'"),
        (
            ["release", "start", "credit@production", "--canary", "other@2", "--weight", "5"],
            "not of 'credit'",
        ),
    ],
)
def test_each_argument_has_one_shape(routed: Path, tmp_path: Path, args: list[str], message: str) -> None:
    before = _state(routed)
    done = invoke_cli(routed, *[a.format(rows=tmp_path / "rows.csv") for a in args])
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert _state(routed) == before


def test_whole_model_commands_still_cover_every_version(routed: Path) -> None:
    assert invoke_cli(routed, "alias", "set", "credit@1", "production").returncode == 0
    assert invoke_cli(routed, "alias", "set", "credit@3", "staging").returncode == 0
    history = json.loads(invoke_cli(routed, "alias", "history", "credit", "--json").stdout)
    assert {e["alias"] for e in history} == {"production", "staging"}
    one = json.loads(invoke_cli(routed, "alias", "history", "credit@staging", "--json").stdout)
    assert [e["alias"] for e in one] == ["staging"]
    assert invoke_cli(routed, "predictions", "credit", "--all-versions", "--json").stdout == "[]\n"
    drift = json.loads(invoke_cli(routed, "drift", "credit", "--all-versions", "--json").stdout)
    assert drift["model"] == "credit"


# -- the real process: entry point, exit codes, a terminal -----------------------------------------


def test_module_entry_point_in_a_child_process(routed: Path) -> None:
    with ThreadPoolExecutor(2) as pool:  # two children at once: neither changes the registry
        old_form = pool.submit(run_cli, routed, "alias", "set", "credit", "production", "2")
        absent = pool.submit(run_cli, routed, "show", "credit@9")
    done = old_form.result()
    assert done.returncode == 2
    assert done.stderr == (
        "error: too many arguments ('2'): the form is `modelport alias set REF ALIAS`; "
        "write `modelport alias set credit@2 production`\n"
    )
    done = absent.result()
    assert done.returncode == 3 and done.stderr == "error: model 'credit' has no version 9\n"


def test_output_on_a_100_column_terminal(routed: Path) -> None:
    """Tables fit the terminal's width (read from the TTY, not from COLUMNS) and keep aliases whole."""
    import fcntl
    import os
    import pty
    import re
    import struct
    import termios

    assert invoke_cli(routed, "alias", "set", "credit@2", "production").returncode == 0
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    env |= {"MODELPORT_HOME": str(routed), "TERM": "xterm-256color"}
    pid, fd = pty.fork()
    if pid == 0:  # the child: a 100-column terminal, then the real CLI
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
        os.execve(sys.executable, [sys.executable, "-m", "modelport.cli.main", "versions", "credit"], env)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode())
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines and max(len(line) for line in lines) <= 100
    assert "\x1b[" in b"".join(chunks).decode()  # a terminal gets colour
    assert any("production" in line for line in lines)
