"""`modelport import mlflow`: MLflow models as modelport versions (docs/registry.md, "Importing from
MLflow"). The work is in ``registry/mlflow_import.py``; this module parses, calls and prints."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from modelport.cli.output import JsonFlag, Table, console, print_json
from modelport.cli.progress import shown_progress
from modelport.errors import InvalidInput

if TYPE_CHECKING:  # imported where a command runs: `--help` never loads the registry
    from modelport.registry.service import Registry

__all__ = ["register_commands"]

_open: Callable[[], Registry]

imports = typer.Typer(
    name="import",
    help="Import models from other registries (MLflow).",
    no_args_is_help=True,
)


def register_commands(app: typer.Typer, open_registry: Callable[[], Registry]) -> None:
    global _open
    _open = open_registry
    app.add_typer(imports)


@imports.command("mlflow")
def mlflow(
    source: Annotated[
        str | None,
        typer.Argument(
            metavar="[SOURCE]",
            help="MLflow model folder (with MLmodel), runs:/RUN_ID/PATH, models:/NAME/VERSION or "
            "models:/NAME@ALIAS.",
        ),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="modelport model name (with SOURCE).")] = None,
    alias: Annotated[str | None, typer.Option("--alias", help="Point this alias at the new version.")] = None,
    sample: Annotated[
        Path | None,
        typer.Option(
            "--sample",
            help="Sample of inputs (CSV, Parquet, JSON) when the model has no input example.",
        ),
    ] = None,
    all_models: Annotated[
        bool, typer.Option("--all", help="Every version of every registered model, with aliases; idempotent.")
    ] = False,
    tracking_uri: Annotated[
        str | None,
        typer.Option("--tracking-uri", help="MLflow tracking server (default: MLFLOW_TRACKING_URI)."),
    ] = None,
    trust_pickle: Annotated[
        bool,
        typer.Option(
            "--trust-pickle", help="Allow a model MLflow saved as (cloud)pickle (runs its code here)."
        ),
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Import MLflow models: signature, input example, params, metrics, tags and description become the
    version's sample and lineage. Models are read in this process, never by a server."""
    from modelport.cli.arguments import model_name
    from modelport.registry import mlflow_import

    if all_models == (source is not None):
        raise InvalidInput("give either SOURCE (with --name) or --all")
    if source is not None and name is None:
        raise InvalidInput("--name is required with SOURCE")
    if all_models and (name is not None or alias is not None or sample is not None):
        raise InvalidInput(
            "--all takes names and aliases from MLflow: --name, --alias and --sample go with SOURCE"
        )
    registry = _open()
    try:
        with shown_progress("import mlflow") as progress:
            if source is not None and name is not None:
                model_name(name)
                results = [
                    mlflow_import.import_model(
                        registry,
                        source,
                        name=name,
                        alias=alias,
                        sample=sample,
                        trust_pickle=trust_pickle,
                        tracking_uri=tracking_uri,
                        progress=progress,
                    )
                ]
            else:
                results = mlflow_import.import_all(
                    registry, tracking_uri=tracking_uri, trust_pickle=trust_pickle, progress=progress
                )
    finally:
        registry.close()
    if json_out:
        print_json([r.to_dict() for r in results])
    else:
        table = Table(title="MLflow import")
        for column in ("source", "version", "status", "aliases", "reason"):
            table.add_column(column)
        for r in results:
            table.add_row(
                r.source,
                r.version.ref if r.version is not None else "-",
                r.status,
                ", ".join(r.aliases) or "-",
                r.reason or "-",
            )
        console.print(table)
    if any(r.status == "failed" for r in results):
        raise typer.Exit(1)
