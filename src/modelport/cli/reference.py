"""Generated references: ``docs/cli.md`` from the commands' ``--help`` and ``docs/settings.md`` from
:class:`~modelport.settings.Settings`. ``tests/test_docs.py`` fails when either page is stale;
``python -m modelport.cli.reference`` rewrites both."""

from __future__ import annotations

import ast
import inspect
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import typer
from pydantic.fields import FieldInfo
from typer.testing import CliRunner

from modelport.cli.main import app
from modelport.settings import Settings

__all__ = ["render_cli", "render_settings", "write_all"]


def _walk(group: Any, path: list[str]) -> list[list[str]]:
    """``path`` and every command under it (Typer groups answer ``list_commands``)."""
    found = [path]
    context = type(group).context_class(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        if hasattr(command, "list_commands"):
            found += _walk(command, [*path, name])
        elif command is not None:
            found.append([*path, name])
    return found


# Every command and group, walked from the app itself: a new command cannot be left out.
COMMANDS = _walk(typer.main.get_command(app), [])


def render_cli() -> str:
    runner = CliRunner()
    parts = [
        "# CLI reference",
        "",
        "Generated from `modelport … --help` by `python -m modelport.cli.reference`; "
        "a test keeps it in sync.",
        "",
        "Exit codes: 0 ok · 1 other failure · 2 invalid input or usage · 3 not found · "
        "4 integrity failure (a stored artifact changed) · 5 registry missing or needs `modelport init` · "
        "6 refused by the promotion gate · 7 drift found (`drift --fail-on-drift`).",
        "",
        "Arguments name things one way in every command (`cli/arguments.py`): `REF` is one version — "
        "`NAME@VERSION`, `NAME@ALIAS`, `NAME@LABEL` (e.g. `credit-rating@2.1.0`) or a bare `NAME`, the "
        "model's default route: `NAME@production` when the alias `production` is set, else "
        "`NAME@latest` (docs/registry.md). `NAME@ALIAS` is an alias (`alias rm`, `release …`); `NAME` "
        "where a command works on a whole model (`versions`, `policy`, `retention` …). Options naming "
        "a version of the model already given (`--canary`, `--shadow`, `--parent`) take what follows "
        "`@`: a number, label or alias.",
        "",
    ]
    for command in COMMANDS:
        result = runner.invoke(
            app, [*command, "--help"], prog_name="modelport", env={"COLUMNS": "100", "NO_COLOR": "1"}
        )
        assert result.exit_code == 0, result.output
        parts += [f"## `{' '.join(['modelport', *command])}`", ""]
        parts += ["```text", result.output.rstrip(), "```", ""]
    return "\n".join(parts).rstrip() + "\n"


def render_settings() -> str:
    lines = [
        "# Settings reference",
        "",
        "Generated from `modelport.settings.Settings` by `python -m modelport.cli.reference`; a test keeps",
        "it in sync. Each setting is read once from the environment variable shown.",
        "",
        "| variable | type | default | meaning |",
        "|---|---|---|---|",
    ]
    docstrings = _attribute_docstrings(Settings)
    for name, field in Settings.model_fields.items():
        annotation = str(field.annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")
        annotation = annotation.replace("pathlib.Path", "Path").replace("pathlib._local.Path", "Path")
        annotation = annotation.replace("pydantic.types.SecretStr", "secret str")
        default = _default(field)
        description = " ".join(docstrings.get(name, "").split()).replace("``", "`").replace("|", "\\|")
        annotation = annotation.replace("|", "\\|")
        lines.append(f"| `MODELPORT_{name.upper()}` | `{annotation}` | {default} | {description} |")
    return "\n".join(lines) + "\n"


def _attribute_docstrings(cls: type) -> dict[str, str]:
    """The string literal under each annotated attribute of ``cls``'s body, read from its source here
    rather than by pydantic at every import (``use_attribute_docstrings`` parses the module's source
    each time the class is made: ~25 ms of every process start)."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0]
    assert isinstance(body, ast.ClassDef)
    found: dict[str, str] = {}
    for statement, following in zip(body.body, body.body[1:], strict=False):
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            found[statement.target.id] = inspect.cleandoc(following.value.value)
    return found


def _default(field: FieldInfo) -> str:
    """A field's default as the value of its environment variable (``false``, ``[]``, ``8080``) — what
    setting the variable to it would give — ``unset`` for ``None``, ``required`` when there is none.
    ``field.default`` is no answer alone: a ``default_factory`` leaves it ``PydanticUndefined``."""
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, list | dict | tuple | set | frozenset):
        # complex values are read from the environment as JSON (pydantic-settings)
        text = json.dumps(sorted(value) if isinstance(value, set | frozenset) else value)
    else:
        text = str(value)
    return f"`{text}`"


def write_all(docs: Path) -> None:
    (docs / "cli.md").write_text(render_cli(), encoding="utf-8")
    (docs / "settings.md").write_text(render_settings(), encoding="utf-8")


if __name__ == "__main__":
    write_all(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs"))
