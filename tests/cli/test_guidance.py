"""The first hour with the CLI (issue 14): help by task, `--version`, global options anywhere, one
grammar the docs follow, `--json` on every command that prints, progress on a terminal only, tables
that fit, a quick start-up, and a registry that only `init` creates."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import typer

from modelport.cli.main import app
from modelport.cli.root import TASKS
from tests.conftest import FEATURES, invoke_cli, run_cli
from tests.serving.conftest import registered_home

ROOT = Path(__file__).resolve().parents[2]


def _commands(group: Any = None, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command of the app, walked from the app itself (a new command cannot be left out)."""
    group = typer.main.get_command(app) if group is None else group
    context = group.context_class(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        if hasattr(command, "list_commands"):
            if command.invoke_without_command:  # `audit` alone lists: a command in its own right
                yield (*path, name), command
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


@pytest.fixture
def served(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, data: pd.DataFrame, sklearn_model: object
) -> Path:
    """``credit`` v1 (production) and v2 (staging): a copy of the session's registry."""
    return registered_home("served", tmp_path / "home", tmp_path_factory, data, sklearn_model)


# -- 1. help by task, --version, global options anywhere ------------------------------------------------


def test_help_lists_the_commands_by_task_with_init_first(tmp_path: Path) -> None:
    done = invoke_cli(tmp_path / "home", "--help")
    assert done.returncode == 0, done.stderr
    headings = [line[:-1] for line in done.stdout.splitlines() if line.endswith(":") and line[0] != " "]
    assert headings == ["Options", *TASKS]  # d4cef34: one "Commands" list in registration order
    listed = re.findall(r"^  ([a-z-]+) ", done.stdout.split("Registry:", 1)[1], re.MULTILINE)
    assert listed[0] == "init"
    # every top-level command is under exactly one task, in the table's order
    root: Any = typer.main.get_command(app)
    top = root.list_commands(root.context_class(root))
    assert sorted(listed) == sorted(top) and listed == [n for names in TASKS.values() for n in names]


def test_version(tmp_path: Path) -> None:
    from modelport import __version__

    done = invoke_cli(tmp_path / "home", "--version")
    assert done.returncode == 0 and done.stdout == f"modelport {__version__}\n"
    assert not (tmp_path / "home").exists()


def test_global_options_before_or_after_the_command(served: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "no-registry-here"  # MODELPORT_HOME: only --home can find the registry
    expected = json.loads(invoke_cli(served, "models", "--json").stdout)
    for args in (
        ["--home", str(served), "models", "--json"],
        ["models", "--home", str(served), "--json"],
        ["models", "--json", f"--home={served}"],
        ["--json", "models", "--home", str(served)],
        ["--json", "--home", str(served), "models"],
    ):
        done = invoke_cli(elsewhere, *args)
        assert done.returncode == 0, (args, done.stderr)
        assert json.loads(done.stdout) == expected, args
    nested = invoke_cli(elsewhere, "alias", "history", "credit", "--home", str(served), "--json")
    assert nested.returncode == 0 and {e["alias"] for e in json.loads(nested.stdout)} == {
        "production",
        "staging",
    }
    assert not elsewhere.exists()


# -- 2. one grammar, and the docs use it ------------------------------------------------------------------


def _form_problem(words: list[str]) -> str | None:
    """Why `modelport WORDS` is not a form the CLI accepts (placeholders such as NAME or N allowed), or
    None. Brackets mark optional parts; `--x/--no-x` is either flag."""
    words = [w.strip("[]").split("/--")[0] for w in words]
    words = [w for w in words if w and w not in ("…", "...")]
    command: Any = typer.main.get_command(app)
    path: list[str] = []
    while hasattr(command, "get_command") and words and not words[0].startswith("-"):
        sub = command.get_command(command.context_class(command), words[0])
        if sub is None:
            return f"no command `{' '.join(['modelport', *path, words[0]])}`"
        command, path, words = sub, [*path, words[0]], words[1:]
    if hasattr(command, "get_command") and not words:
        return None  # a group named as such (`modelport release`)
    try:
        context = command.make_context(" ".join(["modelport", *path]), list(words))
    except typer.TyperException as error:
        message = error.format_message()
        wrong = ("No such option", "unexpected extra argument", "No such command")
        return message if any(w in message for w in wrong) else None  # a placeholder value: fine
    except typer.Exit:  # `--help`, `--version`: they answer while parsing
        return None
    return f"surplus arguments {context.args}" if context.args else None


def _words(line: str) -> list[str]:
    import shlex

    try:
        return shlex.split(line)
    except ValueError:  # an unbalanced quote in prose
        return line.split()


def test_the_grammar_check_knows_a_wrong_form() -> None:
    assert (
        _form_problem(["retention", "set", "credit", "--keep-last", "3"]) is not None
    )  # docs/releases.md once
    assert _form_problem(["alias", "set", "credit", "production", "2"]) is not None  # the old form
    assert _form_problem(["release", "credit", "production", "--canary", "2"]) is not None
    assert _form_problem(["frobnicate"]) is not None
    assert (
        _form_problem(["retention", "NAME", "[--keep-last", "N]", "[--legal-hold/--no-legal-hold]"]) is None
    )
    assert _form_problem(["release", "start", "NAME@ALIAS", "--canary", "V", "--weight", "P"]) is None


def test_every_command_the_docs_name_exists_in_that_form() -> None:
    """Every `modelport …` in README.md and docs/ (the generated CLI reference aside) is a command the
    CLI has, written in the form it takes: a renamed command or an old form cannot stay in the docs."""
    named = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        if page.name == "cli.md":
            continue
        text = page.read_text(encoding="utf-8")
        for inline in re.findall(r"`(?:\.venv/bin/)?modelport ([^`]+)`", text):
            named.append((page.name, inline))
        for block in re.findall(r"```(?:sh|bash|shell|console)\n(.*?)```", text, re.DOTALL):
            for line in block.replace("\\\n", " ").splitlines():
                found = re.match(r"\s*(?:\$ )?(?:\S*/)?modelport ([a-z][^#|>&;]*)", line)
                if found:
                    named.append((page.name, found.group(1)))
    assert len(named) > 50  # the check reads the docs
    wrong = [(page, form, why) for page, form in named if (why := _form_problem(_words(form)))]
    assert wrong == []


def test_audit_list_is_what_the_help_says(served: Path) -> None:
    listed = invoke_cli(served, "audit", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == json.loads(invoke_cli(served, "audit", "--json").stdout)
    assert {r["action"] for r in json.loads(listed.stdout)} >= {"version.register", "alias.set"}
    filtered = json.loads(invoke_cli(served, "audit", "list", "--action", "alias.set", "--json").stdout)
    assert filtered and {r["action"] for r in filtered} == {"alias.set"}


# -- 4. --json on every command that prints -----------------------------------------------------------------


def test_every_command_that_prints_data_takes_json() -> None:
    without = [
        " ".join(path)
        for path, command in _commands()
        if path != ("serve",) and "--json" not in {o for p in command.params for o in getattr(p, "opts", [])}
    ]
    assert without == []  # `serve` prints no data: it serves


@pytest.mark.parametrize(
    "args",
    [
        ["alias", "rm", "credit@staging", "--json"],
        ["alias", "protect", "credit@production", "--json"],
        ["alias", "unprotect", "credit@production", "--json"],
        ["policy", "credit", "--on-violation", "reject", "--json"],
        ["log-policy", "credit", "--sample", "0.5", "--json"],
        ["privacy", "erase", "--subject", "someone", "--json"],
        ["predict", "credit", "--input", "{rows}", "--json"],
        ["audit", "verify", "--json"],
    ],
)
def test_json_output_is_json_alone(served: Path, tmp_path: Path, data: pd.DataFrame, args: list[str]) -> None:
    rows = tmp_path / "rows.csv"
    data[FEATURES].head(2).to_csv(rows, index=False)
    done = invoke_cli(served, *[a.format(rows=rows) for a in args])
    assert done.returncode == 0, done.stderr
    json.loads(done.stdout)
    assert done.stderr == ""


# -- 3. progress: on a terminal only -------------------------------------------------------------------------


def _on_a_terminal(home: Path, *args: str, columns: int = 100) -> tuple[int, str]:
    """`modelport ARGS` with stdin, stdout and stderr on a pseudo-terminal of ``columns`` columns: exit
    code and everything written, escape sequences removed. (A child started by Popen rather than
    pty.fork, so that several may run at once from threads.)"""
    import fcntl
    import pty
    import struct
    import termios

    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    env |= {"MODELPORT_HOME": str(home), "TERM": "xterm-256color"}
    master, terminal = pty.openpty()
    try:
        fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
        process = subprocess.Popen(
            [sys.executable, "-m", "modelport.cli.main", *args],
            stdin=terminal,
            stdout=terminal,
            stderr=terminal,
            env=env,
            start_new_session=True,
        )
    finally:
        os.close(terminal)  # the child has its own: reading ends (EIO) when it closes the terminal
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
    code = process.wait(timeout=120)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r", "\n", b"".join(chunks).decode())
    return code, text


def test_progress_is_drawn_on_a_terminal_and_never_in_a_pipe(
    served: Path, tmp_path: Path, data: pd.DataFrame
) -> None:
    """Real processes: a terminal or a pipe is what a process is given. The four run at once (`doctor`
    loads scikit-learn to replay the native artifacts: seconds each), each on its own copy of the
    registry."""
    rows = tmp_path / "rows.csv"
    data[FEATURES].head(3).to_csv(rows, index=False)
    homes = [served, *(shutil.copytree(served, tmp_path / f"home-{n}") for n in range(1, 4))]
    with ThreadPoolExecutor(4) as pool:
        doctor = pool.submit(_on_a_terminal, homes[0], "doctor")
        predict = pool.submit(_on_a_terminal, homes[1], "predict", "credit", "--input", str(rows))
        # not a terminal: stdout is the JSON alone and stderr is empty
        piped = [
            pool.submit(run_cli, home, *args)
            for home, args in zip(
                homes[2:], (["doctor", "--json"], ["predict", "credit", "--input", str(rows)]), strict=True
            )
        ]
    code, shown = doctor.result()
    assert code == 0, shown
    assert "doctor: replaying the golden cases of credit@" in shown
    code, shown = predict.result()
    assert code == 0 and "predict credit: " in shown
    for future in piped:
        done = future.result()
        assert done.returncode == 0, done.stderr
        json.loads(done.stdout)
        assert done.stderr == ""


def test_the_core_reports_its_steps(tmp_path: Path, sklearn_model: object, data: pd.DataFrame) -> None:
    """The steps over a second — conversion, equivalence proof, doctor's replays, a local prediction,
    gc — reach a progress callback (modelport/progress.py); the CLI draws whatever it hears."""
    from modelport.app import open_registry
    from modelport.releases.manager import ReleaseManager
    from modelport.releases.retention import RetentionPolicy
    from modelport.settings import Settings
    from modelport.validation.doctor import diagnose

    heard: list[tuple[str, int | None, int | None]] = []

    def listen(step: str, done: int | None = None, total: int | None = None) -> None:
        heard.append((step, done, total))

    registry = open_registry(Settings(home=tmp_path / "home", equivalence_rows=100), create=True)
    try:
        registry.register(sklearn_model, name="credit", sample=data, target="label", progress=listen)
        steps = [step for step, _, _ in heard]
        assert steps[0] == "reading the model" and steps[-1] == "storing the version"
        assert "converting to ONNX (skl2onnx)" in steps
        assert any(s.startswith("proving the ONNX twin equivalent on ") for s in steps)
        heard.clear()
        registry.register(sklearn_model, name="credit", sample=data, target="label")
        diagnose(registry, progress=listen)
        assert [(d, t) for _, d, t in heard] == [(0, 4), (1, 4), (2, 4), (3, 4)]
        assert heard[0][0] == "replaying the golden cases of credit@1 (onnx)"
        heard.clear()
        registry.predict("credit@1", data[FEATURES].head(5), progress=listen)
        assert [s for s, _, _ in heard] == ["loading credit@1", "scoring 5 row(s) with credit@1"]
        heard.clear()
        registry.store.releases.set_retention("credit", RetentionPolicy(keep_last=1, keep_days=0), actor="t")
        ReleaseManager(registry).gc(actor="t", dry_run=True, progress=listen)
        assert heard == [("planning credit", 0, 1)]
    finally:
        registry.close()


# -- 4. tables that fit -----------------------------------------------------------------------------------


def test_tables_fit_100_columns_with_whole_words(served: Path) -> None:
    """In this process: the consoles read COLUMNS when they lay out, as a child's do at start-up."""
    assert invoke_cli(served, "label", "credit@2", "2.1.0").returncode == 0
    created = invoke_cli(served, "keys", "create", "--name", "app backend", "--role", "consumer", "--json")
    key_id = json.loads(created.stdout)["key"]["id"]
    outputs = {
        args[0]: invoke_cli(served, *args, env={"COLUMNS": "100"})
        for args in (["versions", "credit"], ["audit", "list"], ["keys", "list"], ["models"])
    }
    for command, done in outputs.items():
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert max(len(line) for line in lines) <= 100, command
        assert "{'" not in done.stdout, command  # no Python dict reprs
    # in this process as in a child, the width is COLUMNS's: the audit table takes all 100 columns
    assert max(len(line) for line in outputs["audit"].stdout.splitlines()) == 100
    cells = {command: _cells(done.stdout) for command, done in outputs.items()}
    # one-word values are whole, never folded over two lines
    assert {"equivalent", "production", "staging", "2.1.0", "ready"} <= cells["versions"]
    assert {key_id, "consumer", "active", "version.register", "alias.set", "local:" + _user()} <= (
        cells["keys"] | cells["audit"]
    )
    # structured values as `key: value` lines
    assert "label: 2.1.0" in cells["audit"] and "role: consumer" in cells["audit"]


def _cells(table: str) -> set[str]:
    return {cell.strip() for line in table.splitlines() for cell in line.split("│") if cell.strip()}


def _user() -> str:
    from modelport.registry.service import local_actor

    return local_actor().removeprefix("local:")


def test_doctor_is_readable_at_80_columns(served: Path) -> None:
    """A drifting version's reason and the library changes are sentences under the table, not cells that
    squeeze the other columns to nothing (d4cef34 folded `verdict` and `recorded → now` to a few
    characters each in an 80-column CI log)."""
    from sqlalchemy import update

    from modelport.app import open_registry
    from modelport.registry.schema import model_versions
    from modelport.settings import Settings

    registry = open_registry(Settings(home=served))
    try:
        version = registry.get("credit@2")
        golden = dict(version.golden)
        golden["outputs"] = {
            **golden["outputs"],
            "probabilities": [list(reversed(row)) for row in golden["outputs"]["probabilities"]],
        }
        environment = {
            **version.environment,
            "packages": {**version.environment["packages"], "scikit-learn": "1.7.2"},
        }
        with registry.store.db.engine.begin() as conn:
            conn.execute(
                update(model_versions)
                .where(model_versions.c.uuid == version.uuid)
                .values(golden=golden, environment=environment)
            )
    finally:
        registry.close()
    done = invoke_cli(served, "doctor", env={"COLUMNS": "80"})
    assert done.returncode == 1, done.stderr
    table, _, below = done.stdout.partition("└")
    assert max(len(line) for line in table.splitlines()) <= 80
    cells = _cells(table)
    assert {"credit@1", "credit@2", "onnx (serving)", "skops", "ok", "drift", "production"} <= cells
    assert "credit@2 onnx: drift: NOT equivalent on" in below
    assert "changed since credit@2 were registered: scikit-learn 1.7.2 → " in below


# -- 5. start-up: what `--help` and `models` import ---------------------------------------------------------

_IMPORTED = """
import json, sys
from modelport.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def _imported(home: Path, *commands: list[str]) -> list[set[str]]:
    """For each command, the modules `modelport COMMAND` imports, each in a fresh interpreter (the
    children run at once)."""
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _IMPORTED, *args],
            env={**os.environ, "MODELPORT_HOME": str(home)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in commands
    ]
    imported = []
    for child in children:
        _, stderr = child.communicate(timeout=120)
        assert child.returncode == 0, stderr
        imported.append(set(json.loads(stderr.splitlines()[-1])))
    return imported


def test_help_imports_neither_the_database_nor_numpy_nor_the_serving_stack(served: Path) -> None:
    """Which modules a command imports decides its start-up (docs/performance.md, "CLI start-up"):
    checked by name, deterministically, instead of by a timing."""
    heavy = ("sqlalchemy", "numpy", "pandas", "modelport.monitoring", "modelport.serving")
    subcommands = (["models", "--help"], ["release", "start", "--help"], ["--version"])
    helped, *others, listing = _imported(served, ["--help"], *subcommands, ["models"])
    assert not [m for m in helped if m.startswith((*heavy, "pydantic"))]
    for args, imported in zip(subcommands, others, strict=True):
        # (a sub-command's options go through Typer's pydantic-based parsing: pydantic is allowed there)
        assert not [m for m in imported if m.startswith(heavy)], args
    assert "sqlalchemy" in listing  # it does read the registry
    not_needed = (
        "pandas",
        "numpy",
        "pyarrow",
        "sqlalchemy.dialects.postgresql",  # an SQLite home: PostgreSQL's dialect is ~35 ms of imports
        "modelport.monitoring.monitor",
        "modelport.monitoring.metrics",
        "modelport.serving",
    )
    assert not [m for m in listing if m.startswith(not_needed)]  # d4cef34: all of them, for any command


# -- 7. only `init` creates a registry -----------------------------------------------------------------------

# Every command but `init`, with arguments that get it as far as opening the registry.
BEFORE_INIT = {
    ("register",): ["register", "credit", "{model}", "--sample", "{sample}"],
    ("models",): ["models"],
    ("versions",): ["versions", "credit"],
    ("show",): ["show", "credit"],
    ("label",): ["label", "credit@1", "1.0.0"],
    ("predict",): ["predict", "credit", "--input", "{rows}"],
    ("score",): ["score", "credit", "{rows}", "-o", "{rows}.parquet"],
    ("jobs",): ["jobs"],
    ("serve",): ["serve", "--insecure-dev"],
    ("policy",): ["policy", "credit", "--on-violation", "flag"],
    ("alias", "set"): ["alias", "set", "credit@1", "production"],
    ("alias", "rm"): ["alias", "rm", "credit@production"],
    ("alias", "protect"): ["alias", "protect", "credit@production"],
    ("alias", "unprotect"): ["alias", "unprotect", "credit@production"],
    ("alias", "history"): ["alias", "history", "credit"],
    ("release", "start"): ["release", "start", "credit@production", "--canary", "2", "--weight", "5"],
    ("release", "status"): ["release", "status", "credit@production"],
    ("release", "promote"): ["release", "promote", "credit@production"],
    ("release", "rollback"): ["release", "rollback", "credit@production"],
    ("release", "stop"): ["release", "stop", "credit@production"],
    ("approvals", "list"): ["approvals", "list"],
    ("approvals", "approve"): ["approvals", "approve", "1"],
    ("approvals", "reject"): ["approvals", "reject", "1"],
    ("retention",): ["retention", "credit"],
    ("gc",): ["gc", "--dry-run"],
    ("keys", "create"): ["keys", "create", "--name", "x", "--role", "admin"],
    ("keys", "list"): ["keys", "list"],
    ("keys", "revoke"): ["keys", "revoke", "abc"],
    ("keys", "update"): ["keys", "update", "abc", "--rate", "5/s"],
    ("keys", "rotate"): ["keys", "rotate", "abc"],
    ("usage",): ["usage"],
    ("log-policy",): ["log-policy", "credit", "--sample", "0.5"],
    ("predictions",): ["predictions", "credit"],
    ("drift",): ["drift", "credit"],
    ("profile",): ["profile", "credit", "--sample", "{sample}"],
    ("feedback",): ["feedback", "credit", "--file", "{labels}"],
    ("validate",): ["validate", "credit"],
    ("reports",): ["reports", "credit"],
    ("doctor",): ["doctor"],
    ("audit",): ["audit"],
    ("audit", "list"): ["audit", "list"],
    ("audit", "verify"): ["audit", "verify"],
    ("privacy", "erase"): ["privacy", "erase", "--subject", "x"],
    ("export",): ["export", "credit", "-o", "{rows}.onnx"],
    ("evidence",): ["evidence", "credit", "--at", "now"],
    ("import", "mlflow"): ["import", "mlflow", "{model}", "--name", "credit"],
    ("webhooks", "add"): ["webhooks", "add", "https://hooks.example.com/x"],
    ("webhooks", "list"): ["webhooks", "list"],
    ("webhooks", "remove"): ["webhooks", "remove", "whk_0000000000000000"],
    ("webhooks", "enable"): ["webhooks", "enable", "whk_0000000000000000"],
    ("webhooks", "disable"): ["webhooks", "disable", "whk_0000000000000000"],
    ("webhooks", "deliveries"): ["webhooks", "deliveries", "whk_0000000000000000"],
    ("webhooks", "retry"): ["webhooks", "retry", "whk_0000000000000000", "dlv_0000000000000000"],
}


def test_the_table_of_commands_before_init_has_every_command() -> None:
    assert set(BEFORE_INIT) == {path for path, _ in _commands()} - {("init",)}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, data: pd.DataFrame) -> dict[str, str]:
    """Input files, written once per module: no command gets as far as reading them."""
    folder = tmp_path_factory.mktemp("inputs")
    files = {
        "model": folder / "model.skops",
        "sample": folder / "sample.csv",
        "rows": folder / "rows.csv",
    }
    files["model"].write_bytes(b"not read: the registry is looked for first")
    data.to_csv(files["sample"], index=False)
    data[FEATURES].head(2).to_csv(files["rows"], index=False)
    files["labels"] = folder / "labels.csv"
    files["labels"].write_text("request_id,row,label\nr1,0,c1\n")
    return {name: str(path) for name, path in files.items()}


@pytest.mark.parametrize("command", sorted(BEFORE_INIT))
def test_only_init_creates_a_registry(
    tmp_path: Path, inputs: dict[str, str], command: tuple[str, ...]
) -> None:
    """Every other command names the registry it did not find and the two ways out, exits 5 and
    creates nothing — not even a file in an existing, empty home."""
    home = tmp_path / "empty-home"
    home.mkdir()
    done = invoke_cli(home, *[a.format(**inputs) for a in BEFORE_INIT[command]])
    assert done.returncode == 5, (done.stdout, done.stderr)
    assert done.stderr == (
        f"error: no modelport registry in {home.resolve()}: run `modelport init` to create one there, "
        "or give the home of an existing registry with --home or MODELPORT_HOME\n"
    )
    assert list(home.iterdir()) == []


def test_register_in_a_folder_without_a_registry_creates_nothing(
    tmp_path: Path,
    inputs: dict[str, str],
    sklearn_model: object,
    data: pd.DataFrame,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """d4cef34: `register` here quietly created ./.modelport — a forked registry without the admin key
    that `init` prints. The default home, relative to the working directory, and the Python API."""
    import modelport
    from modelport.errors import StoreNotReady

    monkeypatch.chdir(tmp_path)
    done = invoke_cli(Path(".modelport"), "register", "credit", inputs["model"], "--sample", inputs["sample"])
    assert done.returncode == 5 and str(tmp_path / ".modelport") in done.stderr, done.stderr
    assert "run `modelport init`" in done.stderr and "--home or MODELPORT_HOME" in done.stderr
    with pytest.raises(StoreNotReady, match="run `modelport init`"):
        modelport.register(
            sklearn_model, name="credit", sample=data, settings=modelport.Settings(home=tmp_path / "nb")
        )
    assert not (tmp_path / ".modelport").exists() and not (tmp_path / "nb").exists()
    # and once `init` has run, the same command registers
    assert invoke_cli(Path(".modelport"), "init", "--json").returncode == 0
    assert invoke_cli(tmp_path / ".modelport", "models", "--json").stdout == "[]\n"


def test_a_database_url_without_a_registry_is_named(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    done = invoke_cli(tmp_path / "home", "models", env={"MODELPORT_DATABASE_URL": url})
    assert done.returncode == 5
    assert f"no modelport registry in {url}: run `modelport init`" in done.stderr
    assert "MODELPORT_DATABASE_URL" in done.stderr
    assert not (tmp_path / "elsewhere.db").exists() and not (tmp_path / "home").exists()
