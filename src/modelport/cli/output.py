"""How the CLI shows things: rich tables for people, JSON for scripts, errors on stderr.

Everything printed here may hold text a client chose (a request path in the audit log, a request id, a
key's name): the consoles never read rich markup or emoji codes in it, and show control characters as
escapes (``\\x1b``), so no record can break ``modelport audit`` or drive the reader's terminal. Table
cells are one line each (a newline in a cell shows as ``\\n``); colour comes from :func:`styled`, never
from markup. JSON output is ``json.dumps``'s, which escapes control characters itself.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import rich.table
import typer
from rich.console import Console, HighlighterType, JustifyMethod, OverflowMethod, RenderableType
from rich.style import Style
from rich.text import Text

from modelport.registry.records import ModelRecord, VersionRecord
from modelport.tables import escape_controls

__all__ = [
    "JsonFlag",
    "Table",
    "console",
    "doctor_report",
    "error_console",
    "fields",
    "models_table",
    "print_json",
    "styled",
    "version_detail",
    "versions_table",
]


JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of text.")]


class _TextConsole(Console):
    """A console that renders every string as plain text: no markup, no emoji codes, control
    characters escaped. Tables, titles and messages all pass through :meth:`render_str`.

    Its width is COLUMNS's (else the terminal's) when it lays out, not when it was made: rich fixes
    the width at construction when COLUMNS is set then, and the consoles are made at import."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "width" not in kwargs:
            self._width = None

    def render_str(
        self,
        text: str,
        *,
        style: str | Style = "",
        justify: JustifyMethod | None = None,
        overflow: OverflowMethod | None = None,
        emoji: bool | None = None,
        markup: bool | None = None,
        highlight: bool | None = None,
        highlighter: HighlighterType | None = None,
    ) -> Text:
        return super().render_str(
            escape_controls(text, keep_lines=True),
            style=style,
            justify=justify,
            overflow=overflow,
            emoji=False,
            markup=False,
            highlight=highlight,
            highlighter=highlighter,
        )


class Table(rich.table.Table):
    """A rich table whose text cells stay on one line: newlines and tabs in a value show as escapes,
    so a value cannot pose as further rows."""

    def add_row(self, *renderables: RenderableType | None, **options: Any) -> None:
        super().add_row(
            *(escape_controls(cell) if isinstance(cell, str) else cell for cell in renderables), **options
        )


def styled(text: str, style: str) -> Text:
    """Coloured text for a table cell or message (instead of markup, which the consoles do not read)."""
    return Text(escape_controls(text), style=style)


console = _TextConsole(soft_wrap=True, markup=False, emoji=False)
error_console = _TextConsole(stderr=True, soft_wrap=True, markup=False, emoji=False)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def fields(value: Any, *, most: int = 8, width: int = 120) -> Text | str:
    """A structured value for a table cell: a mapping as ``key: value`` lines (nested values as compact
    JSON), never a Python repr that the table would fold mid-token. At most ``most`` lines of at most
    ``width`` characters each; ``--json`` prints everything."""
    if value is None:
        return ""
    if not isinstance(value, dict):
        text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
        return text if len(text) <= width else text[: width - 1] + "…"
    lines = []
    for key, item in value.items():
        shown = item if isinstance(item, str) else json.dumps(item, default=str, ensure_ascii=False)
        line = f"{key}: {shown}"
        lines.append(line if len(line) <= width else line[: width - 1] + "…")
    if len(lines) > most:
        lines[most - 1 :] = [f"… {len(lines) - most + 1} more (--json)"]
    return Text("\n".join(escape_controls(line) for line in lines))


def models_table(models: list[ModelRecord]) -> Table:
    table = Table(title="models")
    for column in ("name", "versions", "aliases", "created", "description"):
        # One-word cells never wrap (a wrapped word is folded mid-token); lists and text wrap at spaces.
        table.add_column(column, no_wrap=column in ("name", "versions"))
    for m in models:
        aliases = ", ".join(f"{a}→{n}" for a, n in m.aliases.items())
        table.add_row(m.name, str(m.latest_version), aliases, f"{m.created_at:%Y-%m-%d %H:%M}", m.description)
    return table


def versions_table(name: str, versions: list[VersionRecord]) -> Table:
    """One line per version, within 100 columns: every column but the aliases and the time holds one
    word and never wraps. Formats, creator and the rest are in `show` and `--json`."""
    table = Table(title=f"versions of {name}")
    for column in ("version", "label", "status", "serving", "ONNX twin", "aliases", "created"):
        table.add_column(column, no_wrap=column not in ("aliases", "created"))
    for v in versions:
        table.add_row(
            str(v.number),
            v.label or "",
            v.status,
            v.serving_format,
            str(v.conversion.get("status", "")),
            ", ".join(v.aliases),
            f"{v.created_at:%Y-%m-%d %H:%M}",
        )
    return table


def version_detail(v: VersionRecord) -> Table:
    table = Table(title=v.ref, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    signature = v.signature
    outputs = signature["outputs"]
    rows: list[tuple[str, str]] = [
        ("uuid", v.uuid),
        ("status", v.status + (f" on {v.archived_at:%Y-%m-%d}" if v.archived_at is not None else "")),
        ("label", v.label or "-"),
        ("aliases", ", ".join(v.aliases) or "-"),
        ("serving format", v.serving_format),
        ("conversion", f"{v.conversion.get('status')}: {v.conversion.get('reason', '')}"),
        (
            "task",
            outputs["task"] + (f" ({', '.join(map(str, outputs['classes']))})" if outputs["classes"] else ""),
        ),
        ("features", str(len(signature["inputs"]))),
        ("golden cases", str(len(v.golden.get("rows", [])))),
        ("description", v.description or "-"),
        ("tags", ", ".join(f"{k}={val}" for k, val in v.tags.items()) or "-"),
        ("creator", v.creator),
        ("created", v.created_at.isoformat()),
        ("code revision", str(v.lineage.get("code_revision") or "-")),
        ("training data", _fingerprint(v.lineage.get("training_data"))),
        ("parent version", str(v.lineage.get("parent_version") or "-")),
        ("metrics", ", ".join(f"{k}={val:.4g}" for k, val in v.lineage.get("metrics", {}).items()) or "-"),
        ("environment", _environment(v.environment)),
    ]
    for a in v.artifacts:
        rows.append((f"artifact {a.role}", f"{a.format}  sha256:{a.digest}  {a.size:,} bytes"))
    for f in signature["inputs"]:
        rows.append((f"  {f['name']}", _feature(f)))
    for key, value in rows:
        table.add_row(key, value)
    return table


def _fingerprint(data: dict[str, Any] | None) -> str:
    """Training data: its path, SHA-256 and — when DVC tracks it — DVC's hash, remote and revision."""
    if not data:
        return "-"
    parts = [str(data["path"])] if data.get("path") else []
    if data.get("sha256"):
        parts.append(f"sha256:{data['sha256'][:16]}…")
    dvc = data.get("dvc")
    if isinstance(dvc, dict):
        text = f"dvc {dvc.get('hash', 'md5')}:{str(dvc.get('md5'))[:16]}… ({dvc.get('tracked_by')})"
        remote = dvc.get("remote") or {}
        if remote:
            text += f", remote {remote.get('name')}" + (f" {remote['url']}" if remote.get("url") else "")
        if dvc.get("repo_rev"):
            text += f", rev {str(dvc['repo_rev'])[:12]}"
        if dvc.get("workspace_matches") is False:
            text += ", workspace copy differs"
        parts.append(text)
    return "  ".join(parts) or "-"


def _environment(env: dict[str, Any]) -> str:
    packages = env.get("packages", {})
    shown = ", ".join(f"{k} {val}" for k, val in packages.items() if k != "modelport")
    return f"python {env.get('python')}; {shown}"


def _feature(f: dict[str, Any]) -> str:
    text = str(f["dtype"])
    if f.get("minimum") is not None:
        text += f"  [{float(f['minimum']):.4g}, {float(f['maximum']):.4g}]"
    if f.get("categories"):
        text += "  {" + ", ".join(f["categories"][:8]) + ("…" if len(f["categories"]) > 8 else "") + "}"
    if f.get("missing_rate"):
        text += f"  missing {f['missing_rate']:.1%}"
    return text


def doctor_report(results: list[Any]) -> list[RenderableType]:
    """``modelport doctor`` for people, readable at 80 columns: a table of one-word cells (artifact,
    deviation, verdict) with the routes that reach each version, then the reasons and the library
    changes since registration as lines under it (they are sentences: in a cell they squeezed every
    other column to nothing)."""
    table = Table(title="doctor: stored versions in this environment")
    for column in ("version", "artifact", "routes", "max deviation", "verdict"):
        table.add_column(column, no_wrap=column != "routes")
    notes: list[RenderableType] = []
    changes: dict[str, list[str]] = {}
    for r in results:
        colour = {"ok": "green", "drift": "yellow", "fails": "red"}[r.verdict]
        deviation = "—" if r.max_deviation is None else f"{r.max_deviation:.1e}"
        artifact = f"{r.format}{' (serving)' if r.serving else ''}"
        table.add_row(r.ref, artifact, ", ".join(r.routes) or "—", deviation, styled(r.verdict, colour))
        if r.reason:
            notes.append(styled(f"{r.ref} {r.format}: {r.verdict}: {r.reason}", colour))
        if r.recorded and r.ref not in changes.get(r.recorded, []):
            changes.setdefault(r.recorded, []).append(r.ref)
    lines: list[RenderableType] = [table, *notes]
    for change, refs in changes.items():
        lines.append(f"changed since {', '.join(refs)} were registered: {change}")
    if not changes and results:
        lines.append("no tracked library changed since these versions were registered")
    return lines
