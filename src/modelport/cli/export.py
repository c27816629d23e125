"""`modelport export`: the proven ONNX twin with its signature and model card (docs/formats.md)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from modelport.cli.output import JsonFlag, console, print_json

if TYPE_CHECKING:  # imported where a command runs: `--help` never loads the registry
    from modelport.registry.service import Registry

__all__ = ["register_commands"]

_open: Callable[[], Registry]


def register_commands(app: typer.Typer, open_registry: Callable[[], Registry]) -> None:
    global _open
    _open = open_registry
    app.command("export")(export)


def export(
    ref: Annotated[str, typer.Argument(help="NAME, NAME@ALIAS, NAME@VERSION or NAME@LABEL.")],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="The .onnx file to write; NAME.signature.json and NAME.card.md are written beside it.",
        ),
    ],
    force: Annotated[bool, typer.Option("--force", help="Replace files that already exist.")] = False,
    json_output: JsonFlag = False,
) -> None:
    """Write a version's proven ONNX twin, its signature and a Markdown model card (atomically)."""
    from modelport.registry.export import export_twin

    registry = _open()
    try:
        exported = export_twin(registry, ref, output, force=force)
    finally:
        registry.close()
    if json_output:
        print_json(exported.to_dict())
        return
    console.print(f"exported {exported.ref} ({exported.size:,} bytes, sha256:{exported.sha256})")
    for path in (exported.onnx, exported.signature, exported.card):
        console.print(f"  {path}")
