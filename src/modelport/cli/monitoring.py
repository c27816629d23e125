"""``modelport drift``, ``modelport feedback`` and ``modelport profile``: drift and live accuracy from
the command line (docs/monitoring.md). Each parses, calls the core, prints."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelport.cli.arguments import ModelNameArg, RefArg, model_name, whole_model_or_version
from modelport.cli.output import JsonFlag, Table, console, print_json
from modelport.errors import InvalidInput

if TYPE_CHECKING:  # imported where a command runs (cli/main.py, "the core … never at start")
    from modelport.registry.service import Registry
    from modelport.settings import Settings

__all__ = ["register_commands"]

_open: "Callable[[], Registry]"
_settings: "Callable[[], Settings]"


def register_commands(
    app: typer.Typer, open_registry: "Callable[[], Registry]", settings: "Callable[[], Settings]"
) -> None:
    global _open, _settings
    _open, _settings = open_registry, settings
    app.command("drift")(drift)
    app.command("feedback")(feedback)
    app.command("profile")(profile)


def _actor() -> str:
    from modelport.registry.service import local_actor

    return local_actor()


def _seconds(text: str, what: str) -> float:
    from modelport.security.keys import parse_duration

    try:
        return parse_duration(text).total_seconds()
    except InvalidInput:
        raise InvalidInput(f"{what} is a span like 30m, 1h or 7d, not {text[:40]!r}") from None


def drift(
    ref: RefArg,
    window: Annotated[
        str | None,
        typer.Option("--window", help="Width of each window (30m, 1h, 1d); default from settings."),
    ] = None,
    windows: Annotated[
        int, typer.Option("--windows", help="How many windows, oldest first.", min=1, max=1000)
    ] = 1,
    threshold: Annotated[
        float | None,
        typer.Option("--threshold", help="PSI at which a feature drifts; default from settings."),
    ] = None,
    min_rows: Annotated[
        int | None, typer.Option("--min-rows", help="Rows a window needs; default from settings.", min=1)
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="End of the last window (ISO date/time, UTC); default now.")
    ] = None,
    png: Annotated[Path | None, typer.Option("--png", help="Also write the chart as a PNG file.")] = None,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML page (chart and tables).")
    ] = None,
    json_out: JsonFlag = False,
    fail_on_drift: Annotated[
        bool, typer.Option("--fail-on-drift", help="Exit with 7 when a feature drifts in the latest window.")
    ] = False,
    all_versions: Annotated[
        bool, typer.Option("--all-versions", help="Every version of the model NAME, not one version.")
    ] = False,
) -> None:
    """Drift of live traffic (PSI, KS) and live accuracy. Logged traffic against the version's
    reference profile — or each version's, with --all-versions — and accuracy from feedback."""
    from dataclasses import replace

    from modelport.app import drift_settings
    from modelport.monitoring.monitor import accuracy_report, drift_report

    parsed = whole_model_or_version(ref, all_versions)
    settings = _settings()
    tuned = drift_settings(settings)
    if window is not None:
        tuned = replace(tuned, window_seconds=_seconds(window, "--window"))
    if threshold is not None:
        if not 0 < threshold <= 10:
            raise InvalidInput("--threshold is a PSI above 0 (0.1 moderate, 0.2 a real shift)")
        tuned = replace(tuned, threshold=threshold)
    if min_rows is not None:
        tuned = replace(tuned, min_rows=min_rows)
    for path in (png, html):
        if path is not None and not path.parent.is_dir():
            raise InvalidInput(f"no folder {str(path.parent)[:200]!r} to write {path.name[:100]!r} into")
    end = None if until is None else _timestamp(until)
    home = settings.home.resolve()
    registry = _open()
    try:
        version = None if all_versions else registry.get(parsed).number
        report = drift_report(
            home, registry, parsed.name, version=version, windows=windows, settings=tuned, now=end
        )
        report["accuracy"] = accuracy_report(home, registry, parsed.name, settings=tuned, now=end)
    finally:
        registry.close()
    if png is not None or html is not None:
        from modelport.monitoring.charts import drift_html, drift_png

        if png is not None:
            _write(png, drift_png(report))
        if html is not None:
            _write(html, drift_html(report).encode())
    if json_out:
        print_json(report)
    else:
        _print(report)
    drifting = any(v["windows"] and v["windows"][-1]["drifting"] for v in report["versions"])
    if fail_on_drift and drifting:
        raise typer.Exit(7)


def _timestamp(text: str) -> float:
    from datetime import UTC, datetime

    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"--until is an ISO date/time like 2026-11-22T10:00, not {text[:40]!r}") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _write(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    temporary.replace(path)  # a reader never sees half a chart


def _print(report: dict[str, Any]) -> None:
    if not report["logging"]:
        console.print(
            f"{report['model']} logs no predictions: set a policy first "
            f"(modelport log-policy {report['model']} --sample 0.1)"
        )
    if not report["versions"]:
        console.print("no logged traffic in the window")
    for entry in report["versions"]:
        if not entry["profile"]:
            console.print(
                f"version {entry['version']} has no reference profile: "
                f"modelport profile {report['model']}@{entry['version']} --sample FILE"
            )
            continue
        if not entry["windows"]:  # one version asked for (a REF), and nothing logged at all
            console.print(f"{report['model']}@{entry['version']}: no logged traffic in the window")
            continue
        last = entry["windows"][-1]
        table = Table(
            title=f"{report['model']}@{entry['version']}: {last['start'][:16]} → {last['end'][:16]} UTC, "
            f"{last['rows']} rows, drifting at PSI ≥ {report['threshold']:g}"
        )
        for column in ("feature", "PSI", "KS", "rows", "drifting", "note"):
            table.add_column(column, justify="left" if column in ("feature", "note") else "right")
        for row in [*last["features"], last["prediction"]]:
            table.add_row(
                row["feature"],
                "—" if row["psi"] is None else f"{row['psi']:.4f}",
                "—" if row["ks"] is None else f"{row['ks']:.4f}",
                str(row["rows"]),
                "yes" if row["drifting"] else "",
                row["note"],
            )
        console.print(table)
        scored = last.get("accuracy")
        if scored and scored.get("accuracy") is not None:
            console.print(
                f"accuracy of the {scored['rows']} labelled predictions in this window: "
                f"{scored['accuracy']:.4f}"
            )
    accuracy = report["accuracy"]
    if accuracy["versions"]:
        table = Table(title=f"live accuracy ({accuracy['labels_received']} labels received)")
        for column in ("version", "labelled rows", "accuracy", "reference", "log-loss", "MAE"):
            table.add_column(column, justify="right")
        for row in accuracy["versions"]:
            table.add_row(
                str(row["version"]),
                str(row["rows"]),
                *(
                    "—" if row.get(k) is None else f"{row[k]:.4f}"
                    for k in ("accuracy", "reference_accuracy", "log_loss", "mae")
                ),
            )
        console.print(table)
    elif accuracy["labels_received"]:
        console.print(f"{accuracy['labels_received']} labels received, none for predictions in the window")


def _read_labels(path: Path) -> list[tuple[str, int, str]]:
    """Labels from a CSV (columns request_id, row, label) or JSON (a list of such objects) file."""
    from modelport.serving.management import MAX_LABELS, _labels

    if not path.is_file():
        raise InvalidInput(f"no file {str(path)[:200]!r}")
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix.lower() == ".json":
        try:
            items = json.loads(text)
        except ValueError:
            raise InvalidInput(f"{path.name[:100]} is not valid JSON") from None
    else:
        import csv

        reader = csv.DictReader(text.splitlines())
        if reader.fieldnames is None or not {"request_id", "label"} <= set(reader.fieldnames):
            raise InvalidInput(f"{path.name[:100]} needs the columns request_id, row (optional) and label")
        items = []
        for line in reader:
            row = (line.get("row") or "0").strip()
            if not row.isdigit():
                raise InvalidInput(f"line {reader.line_num}: row must be a whole number, not {row[:20]!r}")
            items.append({"request_id": line["request_id"], "row": int(row), "label": line["label"]})
    if not isinstance(items, list):
        raise InvalidInput(f"{path.name[:100]} must hold a list of labels")
    labels: list[tuple[str, int, str]] = []
    for start in range(0, len(items), MAX_LABELS):  # the same checks as the HTTP API, in chunks
        labels += _labels({"labels": items[start : start + MAX_LABELS]})
    if not labels:
        raise InvalidInput(f"{path.name[:100]} holds no labels")
    return labels


def feedback(
    name: ModelNameArg,
    file: Annotated[Path, typer.Option("--file", help="CSV (request_id,row,label) or JSON list of labels.")],
    json_out: JsonFlag = False,
) -> None:
    """Store ground-truth labels for logged predictions. By the request id each response carried."""
    model_name(name)
    labels = _read_labels(file)
    registry = _open()
    try:
        stored = registry.store.monitoring.add_feedback(name, labels, actor=_actor())
    finally:
        registry.close()
    if json_out:
        print_json({"model": name, "labels_stored": stored})
    else:
        console.print(f"{name}: stored {stored} label(s)")


def profile(
    ref: RefArg,
    sample: Annotated[Path, typer.Option("--sample", help="CSV or Parquet rows like the training data.")],
    target: Annotated[
        str | None, typer.Option("--target", help="Label column in the sample (gives reference accuracy).")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Rebuild a version's reference profile for drift. From a sample: for versions registered
    before profiles existed, or a better reference."""
    from modelport.registry.names import parse_ref
    from modelport.registry.registration import reference_profile
    from modelport.tables import read_table

    parsed = parse_ref(ref)
    frame = read_table(sample)
    registry = _open()
    try:
        loaded = registry.load(parsed)
        record, signature = loaded.version, loaded.signature
        truth = None
        if target is not None:
            if target not in frame.columns:
                raise InvalidInput(f"target column {target[:100]!r} is not in the sample")
            truth = frame[target]
        missing = [n for n in signature.names if n not in frame.columns]
        if missing:
            raise InvalidInput(f"the sample lacks feature(s) {', '.join(missing[:20])}")
        try:
            built = reference_profile(frame[signature.names], signature, loaded.runtime, truth)
        finally:
            loaded.runtime.close()
        registry.store.monitoring.set_profile(record.model, record.number, built, actor=_actor())
    finally:
        registry.close()
    accuracy = built.get("accuracy")
    if json_out:
        print_json({"ref": record.ref, "rows": built["rows"], "accuracy": accuracy})
        return
    console.print(
        f"{record.ref}: reference profile of {built['rows']} rows"
        + (f", accuracy {accuracy:.4f}" if accuracy is not None else "")
    )
