"""``modelport`` commands. Each one parses, calls the core, and prints; errors are mapped to exit
codes in one place (:func:`main`):

    0 ok · 2 invalid input or usage · 3 not found · 4 integrity failure · 5 registry not ready ·
    6 refused by the promotion gate · 7 drift found (`drift --fail-on-drift`) · 1 any other failure
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer

from modelport.app import open_registry
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
from modelport.cli.monitoring import register_commands as register_monitoring
from modelport.cli.output import (
    Table,
    console,
    error_console,
    models_table,
    print_json,
    styled,
    version_detail,
    versions_table,
)
from modelport.cli.releases import actor as release_actor
from modelport.cli.releases import register_commands as register_releases
from modelport.cli.security import print_token, register_commands
from modelport.errors import (
    InvalidInput,
    ModelportError,
    brief,
    outcome_for,
)
from modelport.registry.names import check_alias_name, check_label, parse_ref
from modelport.registry.service import Registry, local_actor
from modelport.releases.manager import ReleaseManager
from modelport.security.store import KeyStore
from modelport.settings import Settings

__all__ = ["app", "main"]

app = typer.Typer(
    name="modelport",
    help="Register, version, alias and run trained models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
alias_app = typer.Typer(help="Point aliases (production, staging …) at versions.", no_args_is_help=True)
app.add_typer(alias_app, name="alias")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]


class _State:
    settings: Settings | None = None


_state = _State()


@app.callback()
def _root(
    home: Annotated[
        Path | None,
        typer.Option(
            "--home", help="Registry home directory (overrides MODELPORT_HOME).", show_default=False
        ),
    ] = None,
) -> None:
    _state.settings = Settings(home=home) if home is not None else Settings()


def _settings() -> Settings:
    return _state.settings if _state.settings is not None else Settings()


def _open(create: bool = False) -> Registry:
    return open_registry(_settings(), create=create)


register_commands(app, lambda: _open())
register_releases(app, alias_app, lambda: _open())
register_monitoring(app, lambda: _open(), _settings)


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInput(f"{what} {item!r} must look like KEY=VALUE")
        result[key] = value
    return result


@app.command()
def init(json_out: JsonFlag = False) -> None:
    """Create the registry (database and artifact store), or migrate it to this version's schema.
    The first `init` also creates an admin API key and prints it once."""
    settings = _settings()
    registry = _open(create=True)
    try:
        revision = registry.store.db.current_revision()
        first = KeyStore(registry.store).create(
            name="admin (created by init)", role="admin", actor=local_actor(), only_if_none=True
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
            info["admin_key"] = {"key": first[0].to_dict(), "token": first[1]}
        print_json(info)
        return
    console.print(f"registry ready: {info['database']} (schema {revision})")
    console.print(f"artifacts: {info['artifacts']}")
    if first is not None:
        print_token(first[0], first[1], json_out=False)


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
        Path | None, typer.Option("--training-data", help="Training data file, fingerprinted.")
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
    json_out: JsonFlag = False,
) -> None:
    """Register a model file as a new version of NAME."""
    model_name(name)
    parent_ref = None if parent is None else version_of(name, parent)
    if label is not None:
        check_label(label)  # before any work: a bad label must not leave a registered version behind
    metrics: dict[str, float] = {}
    for key, value in _pairs(metric, "metric").items():
        try:
            metrics[key] = float(value)
        except ValueError:
            raise InvalidInput(f"metric {key!r} must be a number, got {value!r}") from None
    registry = _open(create=True)
    try:
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
        )
        if label is not None:
            registry.store.releases.set_label(name, version.number, label, actor=local_actor())
            version = registry.get(f"{name}@{version.number}")
    finally:
        registry.close()
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
    """Show one version: signature, lineage, environment, artifacts, conversion proof."""
    parsed = parse_ref(ref)
    registry = _open()
    try:
        version = registry.get(parsed)
    finally:
        registry.close()
    if json_out:
        print_json(version.to_dict())
    else:
        console.print(version_detail(version))


@alias_app.command("set", context_settings=OLD_FORMS)
def alias_set(
    ctx: typer.Context,
    ref: RefArg,
    alias: Annotated[str, typer.Argument(metavar="ALIAS", help="Alias name, e.g. production.")],
    override_reason: Annotated[
        str | None,
        typer.Option("--override-reason", help="Move a protected alias without a passing report (audited)."),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Point alias ALIAS of REF's model at the version REF names, e.g. `alias set credit-rating@7
    production` (a protected alias needs a passing validation report; an approval-protected one waits
    for a second key)."""
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
        )
    finally:
        registry.close()
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
def alias_rm(ctx: typer.Context, ref: AliasRefArg) -> None:
    """Remove NAME@ALIAS."""
    _refuse_two_words(ctx, "rm", ref)
    name, alias = alias_ref(ref)
    registry = _open()
    try:
        result = ReleaseManager(registry).remove_alias(name, alias, actor=release_actor(registry))
    finally:
        registry.close()
    if result["status"] == "pending":
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
) -> None:
    """Protect NAME@ALIAS: it then moves only to versions with a passing validation report (and, with
    --require-approval, only once another admin or publisher approves)."""
    _refuse_two_words(ctx, "protect", ref)
    name, alias = alias_ref(ref)
    registry = _open()
    try:
        changed = registry.store.protect_alias(name, alias, actor=local_actor())
        if require_approval:
            registry.store.releases.set_approval(name, alias, True, actor=local_actor())
    finally:
        registry.close()
    needs = " and needs a second key's approval" if require_approval else ""
    console.print(f"{name}@{alias} is {'now' if changed or require_approval else 'already'} protected{needs}")


@alias_app.command("unprotect", context_settings=OLD_FORMS)
def alias_unprotect(ctx: typer.Context, ref: AliasRefArg) -> None:
    """Remove the promotion gate from NAME@ALIAS (audited)."""
    _refuse_two_words(ctx, "unprotect", ref)
    name, alias = alias_ref(ref)
    registry = _open()
    try:
        changed = registry.store.protect_alias(name, alias, actor=local_actor(), protect=False)
    finally:
        registry.close()
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
) -> None:
    """Set what serving does with values outside a model's signature (range, category, missing)."""
    model_name(name)
    registry = _open()
    try:
        registry.set_policy(name, on_violation)
    finally:
        registry.close()
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
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="HTTP port.", min=1, max=65535)] = 8080,
    grpc_port: Annotated[
        int | None, typer.Option("--grpc-port", help="gRPC port (Open Inference Protocol).", min=1, max=65535)
    ] = None,
    workers: Annotated[int, typer.Option("--workers", help="Worker processes.", min=1, max=64)] = 1,
    default_model: Annotated[
        str | None, typer.Option("--default-model", help="REF answered by MLflow's /invocations.")
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
    """Serve every registered model over the Open Inference Protocol (REST, gRPC) and MLflow scoring.
    Every route needs an API key except the liveness/readiness probes. Exits with status 1 and the
    reason when the workers cannot start (docs/serving.md)."""
    import asyncio
    import os
    from typing import cast

    from modelport.serving import supervisor
    from modelport.serving.connections import ConnectionGuard, ConnectionLimits

    settings = _settings()
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
            timeout_graceful_shutdown=30,
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
    """Validate a version through a private server (golden cases, generated edge cases, determinism,
    online vs batch, latency, optional load) and store the report with the version. Exit 1 if it fails."""
    from modelport.validation.runner import parse_load
    from modelport.validation.runner import validate as run_validation

    rate_seconds = parse_load(load) if load else None
    parse_ref(ref)
    registry = _open()
    try:
        result = run_validation(registry, ref, sla_p99_ms=sla_p99_ms, load=rate_seconds)
        report_id = registry.store.validation.add_report(
            result.model,
            result.version,
            passed=result.passed,
            environment_hash=result.environment_hash,
            report=result.to_dict(),
            actor=local_actor(),
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
) -> None:
    """Set what the prediction log keeps for NAME (audited; servers apply it within a second)."""
    from modelport.monitoring.predictions import LogPolicy
    from modelport.signature import Signature

    model_name(name)
    policy = LogPolicy(sample, tuple(redact or ()), tuple(pseudonymise or ()), subject)
    registry = _open()
    try:
        newest = registry.versions(name)[-1]
        policy.check(Signature.from_dict(newest.signature).names)
        registry.store.monitoring.set_log_policy(name, policy.to_dict(), actor=local_actor())
    finally:
        registry.close()
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
    """Logged predictions (sampled inputs and outputs) of one version, or of every version."""
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
            table.add_column(column, overflow="fold")
        for r in found:
            table.add_row(
                r["ts"][:19],
                str(r["version"]),
                r["request_id"],
                r["key_id"],
                str(r["label"]),
                json.dumps(r["inputs"])[:80],
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
            local_actor(),
            "privacy.erase",
            f"subject:{reference}",
            after={"model": model, "records_removed": before - after},
        )
    finally:
        registry.close()
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
    """Reload every stored version under the current libraries, replay its golden cases and compare
    with the recorded ground truth. Exit 1 when a version a `production` alias points at fails."""
    from modelport.validation.doctor import diagnose
    from modelport.validation.doctor import fix as fix_versions

    if model is not None:
        model_name(model)
    registry = _open()
    fixed: list[tuple[str, str]] = []
    try:
        results = diagnose(registry, model)
        if fix:
            fixed = fix_versions(registry, results, local_actor())
            if fixed:
                results = diagnose(registry, model)  # what serves now
    finally:
        registry.close()
    failing_production = [
        r.ref for r in results if r.serving and "production" in r.aliases and r.verdict != "ok"
    ]
    if json_out:
        print_json(
            {
                "versions": [r.to_dict() for r in results],
                "failing_production": failing_production,
                "fixed": [{"ref": ref, "outcome": outcome} for ref, outcome in fixed],
            }
        )
    else:
        table = Table(title="doctor: stored versions in this environment")
        for column in ("version", "artifact", "aliases", "recorded → now", "max deviation", "verdict"):
            table.add_column(column, overflow="fold", no_wrap=column in ("version", "verdict"))
        for r in results:
            colour = {"ok": "green", "drift": "yellow", "fails": "red"}[r.verdict]
            deviation = "—" if r.max_deviation is None else f"{r.max_deviation:.1e}"
            artifact = f"{r.format}{' (serving)' if r.serving else ''}"
            verdict = styled(r.verdict + (f": {r.reason}" if r.reason else ""), colour)
            table.add_row(
                r.ref, artifact, ", ".join(r.aliases), r.recorded or "unchanged", deviation, verdict
            )
        console.print(table)
        for ref, outcome in fixed:
            console.print(f"{ref}: {outcome}")
    if failing_production:
        failing = ", ".join(failing_production)
        error_console.print(f"error: production serves version(s) that fail in this environment: {failing}")
        raise typer.Exit(1)


@app.command()
def predict(
    ref: RefArg,
    input_path: Annotated[Path, typer.Option("--input", help="Rows to score: CSV, Parquet or JSON.")],
    output: Annotated[
        Path | None, typer.Option("--output", help="Write results here (.csv/.parquet/.json).")
    ] = None,
    csv_out: Annotated[bool, typer.Option("--csv", help="Print CSV instead of JSON.")] = False,
) -> None:
    """Score rows locally, in this process, with the version's serving runtime."""
    from modelport.tables import read_table, spreadsheet_frame, write_table  # pandas: not for `serve`

    parsed = parse_ref(ref)
    frame = read_table(input_path)
    registry = _open()
    try:
        result = registry.predict(parsed, frame)
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
