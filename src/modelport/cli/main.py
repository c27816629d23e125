"""``modelport`` commands. Each one parses, calls the core, and prints; errors are mapped to exit
codes in one place (:func:`main`):

    0 ok · 2 invalid input or usage · 3 not found · 4 integrity failure · 5 registry not ready ·
    6 refused by the promotion gate · 7 drift found (`drift --fail-on-drift`) · 1 any other failure

The command modules (this one, ``releases``, ``security``, ``monitoring``) have no ``from __future__
import annotations``: Typer reads the annotations of every command at each start, and as strings they
cost ~900 evaluations (~25 ms of `modelport --help`). Names imported only for type checking are quoted.
"""

import json
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelport._version import __version__
from modelport.cli.arguments import (
    OLD_FORMS,
    AliasRefArg,
    ModelNameArg,
    RefArg,
    alias_ref,
    model_name,
    refuse_old_form,
    version_of,
    whole_model_or_version,
)
from modelport.cli.batch import register_commands as register_batch
from modelport.cli.evidence import register_commands as register_evidence
from modelport.cli.export import register_commands as register_export
from modelport.cli.imports import register_commands as register_imports
from modelport.cli.monitoring import register_commands as register_monitoring
from modelport.cli.output import (
    JsonFlag,
    Table,
    console,
    doctor_report,
    error_console,
    fields,
    models_table,
    print_json,
    styled,
    version_detail,
    versions_table,
)
from modelport.cli.progress import shown_progress
from modelport.cli.releases import actor as release_actor
from modelport.cli.releases import register_commands as register_releases
from modelport.cli.root import RootGroup
from modelport.cli.security import print_token, register_commands
from modelport.cli.webhooks import register_commands as register_webhooks
from modelport.errors import (
    InvalidInput,
    ModelportError,
    brief,
    outcome_for,
)
from modelport.registry.names import check_alias_name, check_label, parse_ref
from modelport.releases.manager import ReleaseManager

if TYPE_CHECKING:
    # The CLI imports the core where a command runs, never at start: `modelport --help` must not pay
    # for SQLAlchemy, numpy or the serving stack (docs/performance.md, "CLI start-up").
    from modelport.registry.service import Registry
    from modelport.settings import Settings

__all__ = ["app", "main"]

app = typer.Typer(
    name="modelport",
    cls=RootGroup,
    help="Register, version, alias, serve and govern trained models. Start with `modelport init`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
alias_app = typer.Typer(help="Point aliases (production, staging …) at versions.", no_args_is_help=True)
app.add_typer(alias_app, name="alias")


class _State:
    home: Path | None = None
    settings: "Settings | None" = None


_state = _State()


def _print_version(value: bool) -> None:
    if value:
        console.print(f"modelport {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            help="Registry home directory (overrides MODELPORT_HOME); before or after the command.",
            show_default=False,
        ),
    ] = None,
    _version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print modelport's version and exit.", is_eager=True, callback=_print_version
        ),
    ] = False,
) -> None:
    _state.home, _state.settings = home, None


def _settings() -> "Settings":
    from modelport.settings import Settings

    if _state.settings is None:
        _state.settings = Settings(home=_state.home) if _state.home is not None else Settings()
    return _state.settings


def _open(create: bool = False) -> "Registry":
    """The registry of the settings in force; ``create`` is for ``init`` only: every other command
    names a missing registry and how to create or find it (app.open_registry)."""
    from modelport.app import open_registry

    return open_registry(_settings(), create=create)


def _actor() -> str:
    from modelport.registry.service import local_actor

    return local_actor()


register_commands(app, lambda: _open())
register_releases(app, alias_app, lambda: _open())
register_monitoring(app, lambda: _open(), _settings)
register_batch(app, lambda: _open())
register_export(app, lambda: _open())
register_evidence(app, lambda: _open())
register_webhooks(app, lambda: _open())
register_imports(app, lambda: _open())


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInput(f"{what} {item!r} must look like KEY=VALUE")
        result[key] = value
    return result


GRACEFUL_SHUTDOWN_SECONDS = 30
"""After the drain, how long requests in flight may finish before the server stops (uvicorn's
graceful shutdown); deploy/k8s sizes terminationGracePeriodSeconds with it."""

_ADMIN_KEY_FILE_MAX = 4096  # a token is ~60 characters; a Secret file may add a newline


@app.command()
def init(
    admin_key_file: Annotated[
        Path | None,
        typer.Option(
            "--admin-key-file",
            help="Make the first admin key this token (a file holding mpk_…, e.g. a mounted Secret) "
            "instead of drawing and printing one. Ignored once a key exists.",
        ),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Create the registry, or migrate it to this version. The database and artifact store go under
    --home (MODELPORT_HOME, default ./.modelport) unless MODELPORT_DATABASE_URL/ARTIFACT_URL say
    otherwise. The first `init` also creates an admin API key and prints it once (or adopts the one in
    --admin-key-file, printing only its id); no other command creates a registry."""
    from modelport.security.keys import check_given_token
    from modelport.security.store import KeyStore

    settings = _settings()
    given: str | None = None
    if admin_key_file is not None:  # checked before anything is created: a bad file changes nothing
        try:
            if not admin_key_file.is_file():  # a FIFO, a device or a folder by mistake: never read
                raise FileNotFoundError(admin_key_file)
            with admin_key_file.open("rb") as handle:
                raw = handle.read(_ADMIN_KEY_FILE_MAX + 1)  # bounded: a wrong mount cannot fill memory
            given = raw.decode("utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(
                f"cannot read --admin-key-file {admin_key_file}: {type(exc).__name__}"
            ) from None
        if len(raw) > _ADMIN_KEY_FILE_MAX:
            raise InvalidInput(
                f"--admin-key-file {admin_key_file} is over {_ADMIN_KEY_FILE_MAX} bytes: not a token"
            )
        check_given_token(given)
    registry = _open(create=True)
    try:
        revision = registry.store.db.current_revision()
        first = KeyStore(registry.store).create(
            name="admin (created by init)", role="admin", actor=_actor(), only_if_none=True, token=given
        )
    finally:
        registry.close()
    info: dict[str, Any] = {
        "database": registry.store.db.describe(),
        "artifacts": settings.resolved_artifact_url,
        "schema_revision": revision,
    }
    if json_out:
        if first is not None:
            info["admin_key"] = {"key": first[0].to_dict()}
            if given is None:  # an adopted token is the operator's already: never echoed
                info["admin_key"]["token"] = first[1]
        print_json(info)
        return
    console.print(f"registry ready: {info['database']} (schema {revision})")
    console.print(f"artifacts: {info['artifacts']}")
    if first is not None and given is None:
        print_token(first[0], first[1], json_out=False)
    elif first is not None:
        console.print(f"admin key {first[0].id} created from --admin-key-file (its token is not printed)")
    elif given is not None:
        console.print("keys exist already: --admin-key-file was not used")


@app.command()
def register(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Model name, e.g. credit-rating.")],
    path: Annotated[
        Path,
        typer.Argument(
            metavar="PATH", help="Model file (onnx, skops, XGBoost json/ubj, LightGBM txt, pickle)."
        ),
    ],
    sample: Annotated[Path, typer.Option("--sample", help="Sample of inputs (CSV, Parquet or JSON).")],
    alias: Annotated[str | None, typer.Option("--alias", help="Point this alias at the new version.")] = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="Model file format when the extension does not tell."),
    ] = None,
    trust_pickle: Annotated[
        bool, typer.Option("--trust-pickle", help="Allow a pickle/joblib file (runs its code here, once).")
    ] = False,
    target: Annotated[
        str | None, typer.Option("--target", help="Label column in the sample, dropped before use.")
    ] = None,
    classes: Annotated[
        str | None, typer.Option("--classes", help="Comma-separated class names, in the model's order.")
    ] = None,
    description: Annotated[str, typer.Option("--description", help="What this version is.")] = "",
    tag: Annotated[list[str] | None, typer.Option("--tag", help="KEY=VALUE, repeatable.")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", help="Training parameter KEY=VALUE.")] = None,
    metric: Annotated[list[str] | None, typer.Option("--metric", help="Metric KEY=NUMBER.")] = None,
    training_data: Annotated[
        Path | None,
        typer.Option(
            "--training-data",
            help="Training data file or folder: its SHA-256, or inside a DVC repository DVC's hash, "
            "default remote and git revision (docs/registry.md).",
        ),
    ] = None,
    code_revision: Annotated[
        str | None, typer.Option("--code-revision", help="Code revision (default: git HEAD here).")
    ] = None,
    parent: Annotated[
        str | None,
        typer.Option("--parent", help="Version of NAME this one derives from: a number, label or alias."),
    ] = None,
    require_onnx: Annotated[
        bool, typer.Option("--require-onnx", help="Fail unless an equivalent ONNX twin is produced.")
    ] = False,
    label: Annotated[
        str | None, typer.Option("--label", help="Semantic version label, e.g. 2.1.0 (NAME@2.1.0).")
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            envvar="MODELPORT_SERVER",
            help="Register on this server over HTTP with the publisher key in MODELPORT_KEY "
            "(no database or store credentials here; docs/client.md).",
        ),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Register a model file as a new version of NAME."""
    model_name(name)
    if server is not None:
        local_only = {
            "--trust-pickle": trust_pickle,
            "--classes": classes,
            "--training-data": training_data,
            "--code-revision": code_revision,
            "--parent": parent,
        }
        given = [option for option, value in local_only.items() if value]
        if given:
            raise InvalidInput(f"{', '.join(given)}: not over --server (register locally for these)")
        _register_on_server(
            server,
            name,
            path,
            sample,
            fmt=fmt,
            alias=alias,
            description=description,
            label=label,
            target=target,
            require_onnx=require_onnx,
            tags=_pairs(tag, "tag"),
            params=_pairs(param, "param"),
            metrics=_pairs(metric, "metric"),
            json_out=json_out,
        )
        return
    parent_ref = None if parent is None else version_of(name, parent)
    if label is not None:
        check_label(label)  # before any work: a bad label must not leave a registered version behind
    metrics: dict[str, float] = {}
    for key, value in _pairs(metric, "metric").items():
        try:
            metrics[key] = float(value)
        except ValueError:
            raise InvalidInput(f"metric {key!r} must be a number, got {value!r}") from None
    registry = _open()  # only `init` creates a registry: a missing one is named, with the fix
    try:
        with shown_progress(f"register {name}") as progress:
            parent_number = None if parent_ref is None else registry.get(parent_ref).number
            version = registry.register(
                name=name,
                path=path,
                sample=sample,
                format=fmt,
                trust_pickle=trust_pickle,
                alias=alias,
                description=description,
                tags=_pairs(tag, "tag"),
                params=_pairs(param, "param") or None,
                metrics=metrics,
                training_data=training_data,
                code_revision=code_revision,
                parent=parent_number,
                target=target,
                classes=[c.strip() for c in classes.split(",")] if classes else None,
                require_onnx=require_onnx,
                progress=progress,
            )
            if label is not None:
                registry.store.releases.set_label(name, version.number, label, actor=_actor())
                version = registry.get(f"{name}@{version.number}")
    finally:
        registry.close()
    sample_warning = (version.lineage.get("sample") or {}).get("warning")
    if sample_warning:  # on stderr, so --json output stays clean (the JSON has it under lineage.sample)
        error_console.print(f"warning: {sample_warning}", markup=False, highlight=False)
    if json_out:
        print_json(version.to_dict(full=False) | {"conversion": version.conversion})
        return
    console.print(f"registered {version.ref} (uuid {version.uuid}), serving format {version.serving_format}")
    status = version.conversion.get("status")
    if status in ("failed", "not_equivalent"):
        error_console.print(
            f"warning: no ONNX twin ({status}): {version.conversion.get('reason')}; "
            f"{version.ref} is served by its native {version.serving_format} runtime"
        )
    elif status == "equivalent":
        console.print(f"ONNX twin {version.conversion.get('reason')}")
    if alias:
        console.print(f"alias {name}@{alias} → {version.number}")


def _register_on_server(
    server: str,
    name: str,
    path: Path,
    sample: Path,
    *,
    fmt: str | None,
    alias: str | None,
    description: str,
    label: str | None,
    target: str | None,
    require_onnx: bool,
    tags: dict[str, str],
    params: dict[str, str],
    metrics: dict[str, str],
    json_out: bool,
) -> None:
    """``register --server``: the file and its sample uploaded with ``modelport.Client.register``."""
    import os

    from modelport.client import Client
    from modelport.tables import read_table

    key = os.environ.get("MODELPORT_KEY")
    if not key:
        raise InvalidInput("--server needs a publisher key in MODELPORT_KEY")
    if not path.is_file():
        raise InvalidInput(f"model file {str(path)!r} does not exist or is not a regular file")
    numbers: dict[str, float] = {}
    for metric_name, value in metrics.items():
        try:
            numbers[metric_name] = float(value)
        except ValueError:
            raise InvalidInput(f"metric {metric_name!r} must be a number, got {value!r}") from None
    with shown_progress(f"register {name} on {server}") as progress, Client(server, key=key) as client:
        progress("uploading")
        version = client.register(
            path,
            name=name,
            sample=read_table(sample),
            format=fmt,
            alias=alias,
            description=description,
            label=label,
            target=target,
            require_onnx=require_onnx,
            tags=tags or None,
            params=params or None,
            metrics=numbers or None,
        )
    if json_out:
        print_json(version)
        return
    console.print(
        f"registered {name}@{version['number']} on {server}, serving format {version['serving_format']}"
    )
    if alias:
        console.print(f"alias {name}@{alias} → {version['number']}")


@app.command()
def models(json_out: JsonFlag = False) -> None:
    """List registered models."""
    registry = _open()
    try:
        found = registry.models()
    finally:
        registry.close()
    if json_out:
        print_json([m.to_dict() for m in found])
    else:
        console.print(models_table(found))


@app.command()
def versions(name: ModelNameArg, json_out: JsonFlag = False) -> None:
    """List the versions of a model."""
    model_name(name)
    registry = _open()
    try:
        found = registry.versions(name)
    finally:
        registry.close()
    if json_out:
        print_json([v.to_dict(full=False) for v in found])
    else:
        console.print(versions_table(name, found))


@app.command()
def show(ref: RefArg, json_out: JsonFlag = False) -> None:
    """Show one version: signature, lineage, artifacts, proof. Its environment and conversion too."""
    parsed = parse_ref(ref)
    registry = _open()
    try:
        version = registry.get(parsed)
        # its lineage goes on after registration: the batch jobs that scored with it (docs/batch.md)
        jobs = registry.store.jobs.recent(version.model, 10, version=version.number)
    finally:
        registry.close()
    if json_out:
        print_json({**version.to_dict(), "batch_jobs": [j.to_dict() for j in jobs]})
        return
    console.print(version_detail(version))
    if jobs:
        console.print(f"batch jobs (newest {len(jobs)}; `modelport jobs --job ID` for one):")
        for job in jobs:
            console.print(
                f"  {job.id}  {job.status}  {job.rows_scored:,} row(s)  {job.created_at:%Y-%m-%d %H:%M}  "
                f"input sha256:{job.input_digest[:12] or '-'}  by {job.actor}",
                markup=False,
                highlight=False,
            )


@alias_app.command("set", context_settings=OLD_FORMS)
def alias_set(
    ctx: typer.Context,
    ref: RefArg,
    alias: Annotated[str, typer.Argument(metavar="ALIAS", help="Alias name, e.g. production.")],
    override_reason: Annotated[
        str | None,
        typer.Option("--override-reason", help="Move a protected alias without a passing report (audited)."),
    ] = None,
    allow_incompatible: Annotated[
        bool,
        typer.Option(
            "--allow-incompatible", help="Move it to a version that cannot take its traffic (audited)."
        ),
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Point alias ALIAS of REF's model at the version REF names, e.g. `alias set credit-rating@7
    production` (a protected alias needs a passing validation report; an approval-protected one waits
    for a second key; the version's signature must take the alias's traffic, docs/releases.md)."""
    old = [ref, alias, *ctx.args]
    instead = f"{old[0]}@{old[2]} {old[1]}" if len(old) == 3 and "@" not in old[0] else "NAME@7 production"
    refuse_old_form(ctx.args, "alias set REF ALIAS", f"modelport alias set {instead}")
    parsed = parse_ref(ref)
    name = parsed.name
    check_alias_name(alias)
    registry = _open()
    try:
        result = ReleaseManager(registry).set_alias(
            name,
            alias,
            registry.get(parsed).number,
            actor=release_actor(registry),
            override_reason=override_reason,
            allow_incompatible=allow_incompatible,
        )
    finally:
        registry.close()
    for warning in result.get("warnings", []):
        error_console.print(f"warning: {warning}", markup=False, highlight=False)
    if json_out:
        print_json({"model": name, "alias": alias, **result})
    elif result["status"] == "pending":
        change = result["change"]
        console.print(
            f"change {change['id']} waits for approval by another admin or publisher: "
            f"`modelport approvals approve {change['id']}`"
        )
    else:
        console.print(f"{name}@{alias} → {result['version']}")


@alias_app.command("rm", context_settings=OLD_FORMS)
def alias_rm(ctx: typer.Context, ref: AliasRefArg, json_out: JsonFlag = False) -> None:
    """Remove NAME@ALIAS."""
    _refuse_two_words(ctx, "rm", ref)
    name, alias = alias_ref(ref)
    registry = _open()
    try:
        result = ReleaseManager(registry).remove_alias(name, alias, actor=release_actor(registry))
    finally:
        registry.close()
    if json_out:
        print_json({"model": name, "alias": alias, **result})
    elif result["status"] == "pending":
        console.print(f"change {result['change']['id']} waits for approval by another admin or publisher")
    else:
        console.print(f"removed {name}@{alias}")


@alias_app.command("protect", context_settings=OLD_FORMS)
def alias_protect(
    ctx: typer.Context,
    ref: AliasRefArg,
    require_approval: Annotated[
        bool,
        typer.Option("--require-approval", help="Every change of the alias also waits for a second key."),
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Protect NAME@ALIAS: it then moves only to versions with a passing validation report (and, with
    --require-approval, only once another admin or publisher approves)."""
    _refuse_two_words(ctx, "protect", ref)
    name, alias = alias_ref(ref)
    registry = _open()
    try:
        changed = registry.store.protect_alias(name, alias, actor=_actor())
        if require_approval:
            registry.store.releases.set_approval(name, alias, True, actor=_actor())
    finally:
        registry.close()
    if json_out:
        print_json(
            {
                "model": name,
                "alias": alias,
                "protected": True,
                "changed": changed,
                "approval": require_approval,
            }
        )
        return
    needs = " and needs a second key's approval" if require_approval else ""
    console.print(f"{name}@{alias} is {'now' if changed or require_approval else 'already'} protected{needs}")


@alias_app.command("unprotect", context_settings=OLD_FORMS)
def alias_unprotect(ctx: typer.Context, ref: AliasRefArg, json_out: JsonFlag = False) -> None:
    """Remove the promotion gate from NAME@ALIAS (audited)."""
    _refuse_two_words(ctx, "unprotect", ref)
    name, alias = alias_ref(ref)
    registry = _open()
    try:
        changed = registry.store.protect_alias(name, alias, actor=_actor(), protect=False)
    finally:
        registry.close()
    if json_out:
        print_json({"model": name, "alias": alias, "protected": False, "changed": changed})
        return
    console.print(f"{name}@{alias} is {'no longer' if changed else 'not'} protected")


def _refuse_two_words(ctx: typer.Context, command: str, ref: str) -> None:
    """``alias COMMAND NAME ALIAS`` (the old form) is ``alias COMMAND NAME@ALIAS``."""
    instead = f"{ref}@{ctx.args[0]}" if len(ctx.args) == 1 and "@" not in ref else "NAME@ALIAS"
    refuse_old_form(ctx.args, f"alias {command} NAME@ALIAS", f"modelport alias {command} {instead}")


@app.command()
def policy(
    name: ModelNameArg,
    on_violation: Annotated[
        str, typer.Option("--on-violation", help="flag: answer and report; reject: 400 naming the feature.")
    ],
    json_out: JsonFlag = False,
) -> None:
    """Flag or reject values outside a model's signature. The signature's ranges, categories and
    missing-value policy were learned at registration."""
    model_name(name)
    registry = _open()
    try:
        registry.set_policy(name, on_violation)
    finally:
        registry.close()
    if json_out:
        print_json({"model": name, "on_violation": on_violation})
        return
    verb = {"flag": "answered and flagged", "reject": "rejected with 400"}.get(on_violation, on_violation)
    console.print(f"{name}: values outside the signature are now {verb}")


_LOOPBACK = ("127.0.0.1", "::1", "localhost")
_CERT_WARN_DAYS = 14


def certificate_warning(path: Path, now: float | None = None) -> str | None:
    """What an operator should hear about a TLS certificate's validity at start: expired, not yet
    valid, or expiring within 14 days; ``None`` when it is fine. The server still starts (it may have
    to, while a new certificate is on its way); clients will refuse an expired one."""
    import ssl
    import time

    # The standard library's own decoder: the server needs no X.509 package for this one check
    # (``cryptography`` is not a core dependency). It reads the first certificate of the PEM file.
    try:
        decoded = ssl._ssl._test_decode_cert(str(path))  # type: ignore[attr-defined]  # noqa: SLF001
        not_before = ssl.cert_time_to_seconds(decoded["notBefore"])
        not_after = ssl.cert_time_to_seconds(decoded["notAfter"])
    except (OSError, ValueError, KeyError, ssl.SSLError) as exc:
        return f"could not read the validity of TLS certificate {path} ({type(exc).__name__})"
    now = time.time() if now is None else now
    until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(not_after))
    if now >= not_after:
        return f"TLS certificate {path} EXPIRED on {until}: clients will refuse it. Renew it."
    if now < not_before:
        since = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(not_before))
        return f"TLS certificate {path} is NOT YET VALID (from {since}): clients will refuse it."
    days = (not_after - now) / 86_400
    if days < _CERT_WARN_DAYS:
        return f"TLS certificate {path} expires in {days:.1f} days ({until}). Renew it."
    return None


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option("--host", help="Address to bind (MODELPORT_HOST; default 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", help="HTTP port (MODELPORT_PORT; default 8080).", min=1, max=65535)
    ] = None,
    grpc_port: Annotated[
        int | None,
        typer.Option(
            "--grpc-port", help="gRPC port, Open Inference Protocol (MODELPORT_GRPC_PORT).", min=1, max=65535
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", help="Worker processes (MODELPORT_WORKERS; default 1).", min=1, max=64),
    ] = None,
    default_model: Annotated[
        str | None,
        typer.Option(
            "--default-model", help="REF answered by MLflow's /invocations (MODELPORT_DEFAULT_MODEL)."
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="PEM certificate: serve HTTPS and gRPC over TLS.")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="PEM private key for --tls-cert.")] = None,
    insecure_dev: Annotated[
        bool,
        typer.Option("--insecure-dev", help="Serve WITHOUT API keys, on 127.0.0.1 only (development)."),
    ] = False,
) -> None:
    """Serve every registered model over HTTP (and gRPC). The Open Inference Protocol (REST, gRPC)
    and MLflow scoring; every route needs an API key except the liveness/readiness probes. Exits with
    status 1 and the reason when the workers cannot start (docs/serving.md)."""
    import asyncio
    import os
    from typing import cast

    from modelport.security.store import KeyStore
    from modelport.serving import supervisor
    from modelport.serving.connections import ConnectionGuard, ConnectionLimits

    settings = _settings()
    # An option given on the command line wins; otherwise the setting (MODELPORT_HOST, …, as a
    # container or a Kubernetes ConfigMap sets them), whose default is the option's documented one.
    host = host if host is not None else settings.host
    port = port if port is not None else settings.port
    grpc_port = grpc_port if grpc_port is not None else settings.grpc_port
    workers = workers if workers is not None else settings.workers
    default_model = default_model if default_model is not None else settings.default_model
    # TLS from the command line or from the settings (MODELPORT_TLS_CERT/KEY): one source for the
    # HTTP server, the gRPC server and the HSTS header alike.
    tls_cert = tls_cert if tls_cert is not None else settings.tls_cert
    tls_key = tls_key if tls_key is not None else settings.tls_key
    if insecure_dev or settings.insecure_dev:
        if host not in _LOOPBACK:
            raise InvalidInput(f"--insecure-dev serves without keys and binds to 127.0.0.1 only, not {host}")
        host, insecure_dev = "127.0.0.1", True
    if (tls_cert is None) != (tls_key is None):
        raise InvalidInput("--tls-cert and --tls-key go together")
    for path in (tls_cert, tls_key):
        if path is not None and not path.is_file():
            raise InvalidInput(f"TLS file {path} does not exist")
    if tls_cert is not None and tls_key is not None:
        import ssl

        try:  # here, once, rather than in every worker as it starts
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(tls_cert, tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise InvalidInput(f"TLS certificate or key unusable: {supervisor.describe(exc)}") from None
    if default_model is not None:
        parse_ref(default_model)
    registry = _open()  # a clear error now rather than in every worker
    try:
        keys = KeyStore(registry.store).count()
    finally:
        registry.close()
    if workers > 1:
        # Every worker writes its metrics to files in one fresh directory; /metrics sums them. The
        # workers are new processes that import prometheus-client after this. One worker runs in this
        # process, which imported it long ago: its metrics stay in memory (monitoring/metrics.py).
        import shutil

        metrics_dir = settings.home.resolve() / "run" / f"metrics-{port}"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True, exist_ok=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    # Worker processes build their app from the environment (the one wiring point reads it once).
    os.environ["MODELPORT_HOME"] = str(settings.home.resolve())
    os.environ["MODELPORT_HOST"] = host
    os.environ["MODELPORT_INSECURE_DEV"] = "true" if insecure_dev else "false"
    if grpc_port is not None:
        os.environ["MODELPORT_GRPC_PORT"] = str(grpc_port)
    if default_model is not None:
        os.environ["MODELPORT_DEFAULT_MODEL"] = default_model
    if tls_cert is not None and tls_key is not None:
        os.environ["MODELPORT_TLS_CERT"] = str(tls_cert.resolve())
        os.environ["MODELPORT_TLS_KEY"] = str(tls_key.resolve())
    scheme = "https" if tls_cert else "http"
    grpc_note = f", gRPC{'+TLS' if tls_cert else ''} on {host}:{grpc_port}" if grpc_port is not None else ""
    error_console.print(f"modelport serving on {scheme}://{host}:{port}{grpc_note} ({workers} worker(s))")
    if insecure_dev:
        error_console.print(
            "WARNING: --insecure-dev: NO API KEYS ARE CHECKED. Anyone who can reach 127.0.0.1:"
            f"{port} can call every route. Never use this outside development.",
            style="bold red",
        )
    elif keys == 0:
        error_console.print("no API keys exist yet: create one with `modelport keys create`")
    if tls_cert is not None:
        warning = certificate_warning(tls_cert)
        if warning is not None:
            error_console.print(f"WARNING: {warning}", style="bold red")
    # Limits on what a client holds before it is authenticated (serving/connections.py). The guard
    # travels to --workers processes inside uvicorn's pickled config; each worker counts its own.
    guard = ConnectionGuard(
        ConnectionLimits(
            max_header_bytes=settings.max_header_bytes,
            max_headers=settings.max_headers,
            header_timeout_seconds=settings.header_timeout_seconds,
            body_timeout_seconds=settings.body_timeout_seconds,
            max_connections_per_address=settings.max_connections_per_address,
        )
    )
    try:
        # uvicorn, with a supervisor that stops when workers cannot start (serving/supervisor.py)
        supervisor.run(
            "modelport.app:create_app_from_env",
            workers=workers,
            # uvicorn calls its ``http`` protocol class with keyword arguments only; the guard is such a
            # callable, not a class, which its annotation does not foresee
            http=cast("type[asyncio.Protocol]", guard),
            host=host,
            port=port,
            # "on", not uvicorn's "auto": with "auto" a start-up that raises (a gRPC port in use) was
            # logged at info level and the worker served without its gRPC server and background duties
            lifespan="on",
            log_level="warning",
            access_log=False,
            proxy_headers=False,  # no client addresses are used: skip the middleware on every request
            server_header=False,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
            ssl_certfile=str(tls_cert) if tls_cert else None,
            ssl_keyfile=str(tls_key) if tls_key else None,
        )
    except supervisor.WorkerStartFailed as failure:
        error_console.print(f"error: the server could not start: {failure}", markup=False, highlight=False)
        raise typer.Exit(1) from None


@app.command()
def validate(
    ref: RefArg,
    sla_p99_ms: Annotated[
        float, typer.Option("--sla-p99-ms", help="Latency SLA at p99 for the load test.", min=1)
    ] = 250.0,
    load: Annotated[
        str | None, typer.Option("--load", help="Locust load test RPS:SECONDS, e.g. 200:30.")
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Markdown report file (default validation-NAME-vN.md).")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Validate a version and store the report with it. Through a private server: golden cases,
    generated edge cases, determinism, online vs batch, latency, optional load. Exit 1 if it fails."""
    from modelport.validation.runner import parse_load
    from modelport.validation.runner import validate as run_validation

    rate_seconds = parse_load(load) if load else None
    parse_ref(ref)
    registry = _open()
    try:
        with shown_progress(f"validate {ref}") as progress:
            result = run_validation(
                registry, ref, sla_p99_ms=sla_p99_ms, load=rate_seconds, progress=progress
            )
        report_id = registry.store.validation.add_report(
            result.model,
            result.version,
            passed=result.passed,
            environment_hash=result.environment_hash,
            report=result.to_dict(),
            actor=_actor(),
        )
    finally:
        registry.close()
    path = report if report is not None else Path(f"validation-{result.model}-v{result.version}.md")
    path.write_text(result.markdown(), encoding="utf-8")
    if json_out:
        print_json(result.to_dict() | {"report_id": report_id, "report_file": str(path)})
    else:
        table = Table(title=f"validation of {result.ref}: {'PASSED' if result.passed else 'FAILED'}")
        for column in ("check", "verdict", "cases", "detail"):
            table.add_column(column, overflow="fold")
        for check in result.checks:
            verdict = styled("pass", "green") if check.passed else styled("FAIL", "red")
            detail = check.detail if check.passed else "; ".join(check.failures[:3])
            table.add_row(check.name, verdict, str(check.cases), detail)
        console.print(table)
        latency = result.latency
        console.print(
            f"in-process latency: p50 {latency['p50_us']:.0f} µs, p99 {latency['p99_us']:.0f} µs; "
            f"report {report_id} stored with {result.ref}, written to {path}"
        )
    if not result.passed:
        raise typer.Exit(1)


@app.command("log-policy")
def log_policy(
    name: ModelNameArg,
    sample: Annotated[
        float, typer.Option("--sample", help="Fraction of requests to log, 0 to 1 (0 logs nothing).")
    ],
    redact: Annotated[list[str] | None, typer.Option("--redact", help="Feature never written.")] = None,
    pseudonymise: Annotated[
        list[str] | None, typer.Option("--pseudonymise", help="Feature written as a keyed hash.")
    ] = None,
    subject: Annotated[
        str | None, typer.Option("--subject", help="Feature that names the data subject (for erasure).")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Set what the prediction log keeps for a model. Audited; servers apply it within a second."""
    from modelport.monitoring.predictions import LogPolicy
    from modelport.signature import Signature

    model_name(name)
    policy = LogPolicy(sample, tuple(redact or ()), tuple(pseudonymise or ()), subject)
    registry = _open()
    try:
        newest = registry.versions(name)[-1]
        policy.check(Signature.from_dict(newest.signature).names)
        registry.store.monitoring.set_log_policy(name, policy.to_dict(), actor=_actor())
    finally:
        registry.close()
    if json_out:
        print_json({"model": name, **policy.to_dict()})
        return
    console.print(
        f"{name}: logging {sample:.0%} of requests"
        + (f", redacting {', '.join(policy.redact)}" if policy.redact else "")
    )


@app.command()
def predictions(
    ref: RefArg,
    since: Annotated[
        str | None, typer.Option("--since", help="From this time (ISO date/time) or span ago (30m, 7d).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="The newest N records.", min=1)] = 100,
    json_out: JsonFlag = False,
    csv_out: Annotated[bool, typer.Option("--csv", help="Print CSV.")] = False,
    all_versions: Annotated[
        bool, typer.Option("--all-versions", help="Every version of the model NAME, not one version.")
    ] = False,
) -> None:
    """List logged predictions of a version (or every version). The sampled inputs and outputs."""
    from datetime import UTC, datetime

    from modelport.monitoring.predictions import query
    from modelport.security.keys import parse_duration

    parsed = whole_model_or_version(ref, all_versions)
    start = None
    if since:
        try:
            start = datetime.fromisoformat(since)
            start = start if start.tzinfo else start.replace(tzinfo=UTC)
        except ValueError:
            start = datetime.now(UTC) - parse_duration(since)
    registry = _open()
    try:
        version = None if all_versions else registry.get(parsed).number
        found = query(_settings().home.resolve(), parsed.name, version=version, since=start, limit=limit)
    finally:
        registry.close()
    if json_out:
        print_json(found)
    elif csv_out:
        from modelport.tables import write_csv

        write_csv(
            sys.stdout,
            ["ts", "model", "version", "request_id", "key_id", "row", "label", "outputs", "inputs"],
            (
                [
                    r["ts"],
                    r["model"],
                    r["version"],
                    r["request_id"],
                    r["key_id"],
                    r["row"],
                    r["label"],
                    json.dumps(r["outputs"]),
                    json.dumps(r["inputs"]),
                ]
                for r in found
            ),
        )
    else:
        table = Table(title=f"logged predictions of {ref}")
        for column in ("time (UTC)", "version", "request", "key", "label", "inputs"):
            # The request id folds (all of it shows); the inputs are `feature: value` lines.
            table.add_column(
                column,
                overflow="ellipsis" if column == "inputs" else "fold",
                no_wrap=column in ("version", "key", "label"),
                width=10 if column == "time (UTC)" else None,
            )
        for r in found:
            table.add_row(
                r["ts"][:19].replace("T", " "),
                str(r["version"]),
                r["request_id"],
                r["key_id"],
                str(r["label"]),
                fields(r["inputs"], most=4, width=40),
            )
        console.print(table)


privacy_app = typer.Typer(help="Data-subject requests on the prediction log.", no_args_is_help=True)
app.add_typer(privacy_app, name="privacy")


@privacy_app.command("erase")
def privacy_erase(
    subject: Annotated[
        str, typer.Option("--subject", help="The data subject's id (the subject field's value).")
    ],
    model: Annotated[str | None, typer.Option("--model", help="Only this model's log.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Remove every logged record of one data subject (audited; the subject id itself is not recorded)."""
    from modelport.monitoring.predictions import _secret as pseudonym_secret
    from modelport.monitoring.predictions import erase, subject_key

    if model is not None:
        model_name(model)
    home = _settings().home.resolve()
    registry = _open()
    try:
        if model is not None:
            registry.model(model)
        before, after = erase(home, subject, model)
        reference = subject_key(pseudonym_secret(home), subject)[:12]
        registry.store.append_audit(
            _actor(),
            "privacy.erase",
            f"subject:{reference}",
            after={"model": model, "records_removed": before - after},
        )
    finally:
        registry.close()
    if json_out:
        print_json({"model": model, "records_removed": before - after})
    else:
        console.print(f"erased {before - after} record(s) of the subject")


@app.command()
def reports(ref: RefArg, json_out: JsonFlag = False) -> None:
    """The validation reports stored with a version, newest first."""
    parsed = parse_ref(ref)
    registry = _open()
    try:
        version = registry.get(parsed)
        found = registry.store.validation.reports(version.model, version.number)
    finally:
        registry.close()
    if json_out:
        print_json(found)
        return
    table = Table(title=f"validation reports of {version.ref}")
    for column in ("id", "time (UTC)", "by", "environment", "verdict", "failing checks"):
        table.add_column(column, overflow="fold", no_wrap=column in ("id", "verdict"))
    for entry in found:
        failing = [c["name"] for c in entry["report"].get("checks", []) if not c["passed"]]
        table.add_row(
            str(entry["id"]),
            entry["created_at"][:19],
            entry["created_by"],
            entry["environment_hash"][:12],
            "passed" if entry["passed"] else "FAILED",
            ", ".join(failing),
        )
    console.print(table)


@app.command()
def doctor(
    model: Annotated[str | None, typer.Argument(metavar="[NAME]", help="Only this model.")] = None,
    fix: Annotated[
        bool, typer.Option("--fix", help="Re-make failing ONNX twins from native artifacts that still work.")
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Check every stored version in this environment. Each is reloaded under the current libraries,
    its golden cases replayed and compared with the recorded ground truth. Exit 1 when a version that
    traffic reaches by name fails: any alias's, `latest`, a release's canary (docs/upgrades.md)."""
    from modelport.validation.doctor import diagnose, failing
    from modelport.validation.doctor import fix as fix_versions

    if model is not None:
        model_name(model)
    registry = _open()
    fixed: list[tuple[str, str]] = []
    try:
        with shown_progress("doctor") as progress:
            results = diagnose(registry, model, progress=progress)
            if fix:
                progress("re-converting failing ONNX twins")
                fixed = fix_versions(registry, results, _actor())
                if fixed:
                    results = diagnose(registry, model, progress=progress)  # what serves now
    finally:
        registry.close()
    gating = failing(results)
    if json_out:
        print_json(
            {
                "versions": [r.to_dict() for r in results],
                "failing": [r.ref for r in gating],
                "fixed": [{"ref": ref, "outcome": outcome} for ref, outcome in fixed],
            }
        )
    else:
        for shown in doctor_report(results):
            console.print(shown)
        for ref, outcome in fixed:
            console.print(f"{ref}: {outcome}")
    if gating:
        named = ", ".join(f"{r.ref} ({', '.join(r.routes)})" for r in gating)
        error_console.print(f"error: traffic reaches version(s) that fail in this environment: {named}")
        raise typer.Exit(1)


@app.command()
def predict(
    ref: RefArg,
    input_path: Annotated[Path, typer.Option("--input", help="Rows to score: CSV, Parquet or JSON.")],
    output: Annotated[
        Path | None, typer.Option("--output", help="Write results here (.csv/.parquet/.json).")
    ] = None,
    csv_out: Annotated[bool, typer.Option("--csv", help="Print CSV instead of JSON.")] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print JSON (the default; --csv prints CSV).")
    ] = False,
) -> None:
    """Score rows locally with a version's serving runtime. In this process, no server needed."""
    from modelport.tables import read_table, spreadsheet_frame, write_table  # pandas: not for `serve`

    if json_out and csv_out:
        raise InvalidInput("--json and --csv are two different outputs: choose one")
    parsed = parse_ref(ref)
    with shown_progress(f"predict {ref}") as progress:
        progress(f"reading {input_path.name}")
        frame = read_table(input_path)
        registry = _open()
        try:
            result = registry.predict(parsed, frame, progress=progress)
        finally:
            registry.close()
    if output is not None:
        write_table(result, output)
        console.print(f"wrote {len(result)} prediction(s) to {output}")
    elif csv_out:
        sys.stdout.write(spreadsheet_frame(result).to_csv(index=False))
    else:
        sys.stdout.write(json.dumps(json.loads(result.to_json(orient="records")), indent=2) + "\n")


def exit_code(error: ModelportError) -> int:
    """The exit code of ``error``, from the one errors table (``errors.OUTCOMES``)."""
    return outcome_for(error).exit


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    # Library warnings as one line, without the source file and line they came from.
    error_console.print(f"warning: {brief(Warning(str(message)))}", markup=False, highlight=False)


def main(argv: list[str] | None = None) -> Any:
    """Entry point: run the app and turn modelport errors into a message and an exit code."""
    warnings.showwarning = _show_warning
    try:
        return app(args=argv, standalone_mode=False, prog_name="modelport")
    except ModelportError as error:
        error_console.print(f"error: {error}", markup=False, highlight=False)
        sys.exit(exit_code(error))
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        error_console.print("aborted")
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors: click's own message and exit code 2
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        sys.exit(int(getattr(exc, "exit_code", 2)))
    except Exception as exc:  # a message, never a traceback with internals
        error_console.print(f"error: unexpected {type(exc).__name__}; nothing was changed")
        sys.exit(1)


if __name__ == "__main__":
    sys.exit(main())
