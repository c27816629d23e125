"""`modelport score` and `modelport jobs`: batch scoring from the shell (docs/batch.md)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelport.cli.output import JsonFlag, Table, console, print_json
from modelport.cli.progress import shown_progress
from modelport.errors import InvalidInput

if TYPE_CHECKING:
    from modelport.registry.service import Registry

__all__ = ["register_commands"]

_open: Callable[[], Registry]
_POLICIES = ("reject", "flag", "skip")


def register_commands(app: typer.Typer, open_registry: Callable[[], Registry]) -> None:
    global _open
    _open = open_registry
    app.command("score")(score)
    app.command("jobs")(jobs)


def _names(text: str | None) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def score(
    ref: Annotated[
        str | None, typer.Argument(help="NAME, NAME@ALIAS, NAME@VERSION or NAME@LABEL (not with --resume).")
    ] = None,
    input_spec: Annotated[
        str | None,
        typer.Argument(
            metavar="INPUT",
            help="A .csv or .parquet file, a folder of them, or a glob ('data/*.csv'); "
            "with --database, a SQL query.",
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here: .parquet or .csv, atomically.")
    ] = None,
    keep: Annotated[
        str | None, typer.Option("--keep", help="Input columns copied to the output, comma-separated (keys).")
    ] = None,
    drop: Annotated[
        str | None, typer.Option("--drop", help="Input columns that are neither features nor kept.")
    ] = None,
    on_violation: Annotated[
        str | None,
        typer.Option(
            "--on-violation",
            help="reject (stop at the first row out of bounds), flag, or skip; default: the model's policy.",
        ),
    ] = None,
    chunk_rows: Annotated[
        int,
        typer.Option("--chunk-rows", help="Rows per chunk (the unit of resume).", min=1_000, max=10_000_000),
    ] = 65_536,
    threads: Annotated[
        int,
        typer.Option(
            "--threads",
            help="Chunks scored at once (local threads, or local Dask/Spark workers); 0: one per core.",
            min=0,
            max=256,
        ),
    ] = 0,
    engine: Annotated[
        str, typer.Option("--engine", help="local (threads of this process), dask or spark.")
    ] = "local",
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler", help="Dask scheduler (tcp://HOST:PORT) or Spark master URL; default: this machine."
        ),
    ] = None,
    database: Annotated[
        str | None,
        typer.Option(
            "--database",
            help="INPUT is a SQL query against this database URL (run once; its result is saved).",
            envvar="MODELPORT_SCORE_DATABASE_URL",
        ),
    ] = None,
    resume: Annotated[
        str | None, typer.Option("--resume", help="Go on with a job that stopped, by its id.")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Score a file, folder or glob with a version, in bounded memory; resumable (docs/batch.md).
    Here, or on Dask or Spark with --engine."""
    from modelport.batch.job import ScoreOptions, resume_job, start_job
    from modelport.registry.service import local_actor

    registry = _open()
    try:
        if resume is not None:
            if ref is not None or input_spec is not None or output is not None:
                raise InvalidInput(
                    "--resume JOB takes the job's own version, input and output: name nothing else"
                )
            with shown_progress(f"score {resume}") as progress:
                summary = resume_job(
                    registry,
                    resume,
                    actor=local_actor(),
                    progress=progress,
                    database=database,
                    threads=threads,
                )
        else:
            if ref is None or input_spec is None or output is None:
                raise InvalidInput("score needs REF INPUT -o OUTPUT (or --resume JOB)")
            if on_violation is not None and on_violation not in _POLICIES:
                raise InvalidInput(f"--on-violation is one of {', '.join(_POLICIES)}, not {on_violation!r}")
            options = ScoreOptions(
                keep=_names(keep),
                drop=_names(drop),
                on_violation=on_violation,  # type: ignore[arg-type]
                chunk_rows=chunk_rows,
                threads=threads,
                engine=engine,
                scheduler=scheduler,
            )
            with shown_progress(f"score {ref}") as progress:
                summary = start_job(
                    registry,
                    ref,
                    input_spec,
                    output,
                    options,
                    actor=local_actor(),
                    progress=progress,
                    database=database,
                )
    finally:
        registry.close()
    if json_out:
        print_json(summary.to_dict())
        return
    console.print(
        f"{summary.job_id}: scored {summary.scored:,} of {summary.rows:,} row(s) with "
        f"{summary.model}@{summary.version} in {summary.seconds:.1f} s → {summary.output}"
    )
    if summary.flagged:
        console.print(f"{summary.flagged:,} row(s) had values outside what the version was trained on")
    if summary.skipped_file:
        console.print(f"{summary.skipped:,} row(s) skipped, listed in {summary.skipped_file}")
    if summary.chunks_this_run < summary.chunks:
        console.print(
            f"resumed: {summary.chunks - summary.chunks_this_run} of {summary.chunks} chunk(s) were done"
        )


def jobs(
    model: Annotated[str | None, typer.Argument(help="Only this model's jobs.")] = None,
    job: Annotated[str | None, typer.Option("--job", help="One job, in full.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="The newest N jobs.", min=1, max=10_000)] = 50,
    json_out: JsonFlag = False,
) -> None:
    """List batch scoring jobs: version, input, rows, status, digests (docs/batch.md)."""
    registry = _open()
    try:
        found = [registry.store.jobs.get(job)] if job else registry.store.jobs.recent(model, limit)
    finally:
        registry.close()
    if json_out:
        print_json([j.to_dict() for j in found])
        return
    if job:
        for key, value in found[0].to_dict().items():
            console.print(f"{key}: {value}", markup=False, highlight=False)
        return
    table = Table(title="batch jobs (`modelport jobs --job ID` shows one in full)")
    table.add_column("job", no_wrap=True)
    for column in ("version", "status", "rows", "flagged", "skipped", "seconds", "started (UTC)"):
        table.add_column(
            column,
            overflow="fold",
            justify="right" if column in ("rows", "flagged", "skipped", "seconds") else "left",
        )
    for record in found:
        row: list[Any] = [
            record.id,
            record.ref,
            record.status,
            f"{record.rows_scored:,}",
            f"{record.rows_flagged:,}",
            f"{record.rows_skipped:,}",
            f"{record.seconds:.1f}",
            f"{record.created_at:%Y-%m-%d %H:%M}",
        ]
        table.add_row(*row)
    console.print(table)
