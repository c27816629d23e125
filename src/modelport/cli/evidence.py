"""``modelport evidence NAME --at T``: what served a model at a moment, as a verifiable bundle
(docs/evidence.md). It parses, calls :func:`~modelport.evidence.build.build_evidence`, writes the zip
and prints the summary and the manifest's digest (the one value to record elsewhere)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelport.cli.arguments import ModelNameArg, model_name
from modelport.cli.output import JsonFlag, Table, console, print_json
from modelport.errors import Conflict, InvalidInput

if TYPE_CHECKING:
    from modelport.registry.service import Registry

__all__ = ["register_commands"]

_open: Callable[[], Registry]


def register_commands(app: typer.Typer, open_registry: Callable[[], Registry]) -> None:
    global _open
    _open = open_registry
    app.command("evidence")(evidence)


def evidence(
    name: ModelNameArg,
    at: Annotated[
        str,
        typer.Option(
            "--at",
            help="The moment: ISO 8601 (2026-12-06T21:46:00Z; UTC unless it names an offset) or 'now'.",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="The bundle to write; default NAME-evidence-TIME.zip here."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the output file if it exists.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Evidence of what served model NAME at a time: each alias's version, the release running, who
    approved the changes, validation reports, lineage and model cards, drift and accuracy around the
    time, and the audit records with their hash chain — a zip that tools/verify_evidence.py checks."""
    from modelport.evidence.build import build_evidence, local_monitoring, parse_at

    name = model_name(name)
    moment = parse_at(at)
    path = output if output is not None else Path(f"{name}-evidence-{moment:%Y%m%dT%H%M%SZ}.zip")
    if not path.parent.is_dir():
        raise InvalidInput(f"no folder {str(path.parent)[:200]!r} to write {path.name[:100]!r} into")
    if path.exists() and not force:
        raise Conflict(f"{str(path)[:200]} exists: choose another --output or pass --force")
    registry = _open()
    try:
        bundle = build_evidence(registry, name, moment, monitoring=local_monitoring(registry))
    finally:
        registry.close()
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(bundle.to_zip())
    temporary.replace(path)  # never half a bundle under the name
    if json_out:
        print_json({**bundle.summary, "bundle": str(path), "manifest_sha256": bundle.manifest_sha256})
        return
    _print(bundle.summary)
    console.print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    console.print(f"manifest sha256: {bundle.manifest_sha256}  (record it: verify_evidence.py checks it)")


def _print(summary: dict[str, Any]) -> None:
    table = Table(title=f"{summary['model']} at {summary['at']}")
    for column in ("alias", "version", "since", "release", "approved"):
        table.add_column(column)
    for alias, state in sorted(summary["aliases"].items()):
        release, approved = state["release"], state["approved"]
        arms = []
        if release is not None and release.get("canary") is not None:
            arms.append(f"canary v{release['canary']} at {release.get('weight')}%")
        if release is not None and release.get("shadow") is not None:
            arms.append(f"shadow v{release['shadow']}")
        table.add_row(
            alias,
            "removed" if state["version"] is None else f"v{state['version']}",
            (state["since"] or "")[:19],
            ", ".join(arms) or "-",
            "-"
            if approved is None
            else f"change {approved['change']}: {approved['requested_by']}, "
            f"approved by {approved['approved_by']}",
        )
    console.print(table)
    for number, verdict in sorted(summary["validation"].items(), key=lambda item: int(item[0])):
        detail = (
            ""
            if verdict["by"] is None
            else f" (report {verdict['report']} by {verdict['by']}, {verdict['at'][:19]})"
        )
        console.print(f"validation of v{number} at that time: {verdict['verdict']}{detail}")
    chain = summary["audit"]
    console.print(f"audit chain: {chain['records']} records to the time, head {chain['head']}")
