"""How the CLI shows things: rich tables for people, JSON for scripts, errors on stderr."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from modelport.registry.records import ModelRecord, VersionRecord

__all__ = ["console", "error_console", "models_table", "print_json", "version_detail", "versions_table"]

console = Console(soft_wrap=True)
error_console = Console(stderr=True, soft_wrap=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def models_table(models: list[ModelRecord]) -> Table:
    table = Table(title="models")
    for column in ("name", "versions", "aliases", "created", "description"):
        table.add_column(column)
    for m in models:
        aliases = ", ".join(f"{a}→{n}" for a, n in m.aliases.items())
        table.add_row(m.name, str(m.latest_version), aliases, f"{m.created_at:%Y-%m-%d %H:%M}", m.description)
    return table


def versions_table(name: str, versions: list[VersionRecord]) -> Table:
    table = Table(title=f"versions of {name}")
    for column in ("version", "serving", "formats", "conversion", "aliases", "created", "creator"):
        # Aliases are what people look for: never cut them; the other columns wrap instead.
        table.add_column(column, no_wrap=column == "aliases", overflow="fold")
    for v in versions:
        table.add_row(
            str(v.number),
            v.serving_format,
            ", ".join(v.formats),
            str(v.conversion.get("status", "")),
            ", ".join(v.aliases),
            f"{v.created_at:%Y-%m-%d %H:%M}",
            v.creator,
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
        ("status", v.status),
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
    return f"sha256:{data['sha256'][:16]}…" if data else "-"


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
