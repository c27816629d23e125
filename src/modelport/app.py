"""The single wiring point: settings in, ready components out.

The CLI, the Python API and the tests all build the registry here; the HTTP application
(``create_app``) is assembled here too.
"""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING

from modelport.errors import InvalidInput, StoreNotReady
from modelport.registry.artifacts import open_artifact_store
from modelport.registry.database import Database
from modelport.registry.service import Registry
from modelport.registry.store import RegistryStore
from modelport.settings import Settings

if TYPE_CHECKING:
    from modelport.monitoring.monitor import DriftSettings
    from modelport.security.gate import Gate
    from modelport.security.oidc import TokenVerifier
    from modelport.serving.rest import RestApp

__all__ = ["create_app", "create_app_from_env", "drift_settings", "open_registry"]


def open_registry(
    settings: Settings | None = None, *, create: bool = False, lock_timeout: float | None = None
) -> Registry:
    """Open the registry described by ``settings``.

    ``create=True`` (``modelport init``, and nothing else) creates the home directory and database if
    needed and migrates the schema to the newest revision. Otherwise nothing is created: a missing
    registry raises :class:`~modelport.errors.StoreNotReady` naming where it was looked for and how to
    create or find it, and an outdated schema raises it naming the migration. Opening also finishes any
    registration that a killed process left half-written (stray blobs are removed; see
    ``registry/artifacts.py``).
    """
    settings = settings if settings is not None else Settings()
    if create and settings.database_url is None:
        # The home holds key digests, the audit log and logged inputs: a new one is owner-only, an
        # existing one loses other users' access (docs/security.md, "Files").
        settings.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        mode = settings.home.stat().st_mode & 0o7777
        if mode & 0o007:
            with contextlib.suppress(PermissionError):  # not ours to change: its owner decides
                settings.home.chmod(mode & ~0o007)  # the group's access stays the operator's choice
    database = (
        Database(settings.resolved_database_url)
        if lock_timeout is None
        else Database(settings.resolved_database_url, lock_timeout=lock_timeout)
    )
    try:
        if create:
            database.make_private()
            if database.current_revision() != database.head_revision():
                database.migrate()
        elif database.current_revision() is None:
            # Creating one here would fork the registry (a `register` in the wrong folder once made a
            # new ./.modelport silently, without the admin key that `init` prints).
            raise StoreNotReady(_no_registry(settings, database))
        database.check_schema()
        store = RegistryStore(database)
        artifacts = open_artifact_store(settings)
        artifacts.recover(store.referenced_digests)
    except BaseException:
        database.dispose()
        raise
    return Registry(settings, store, artifacts)


def _no_registry(settings: Settings, database: Database) -> str:
    """Where no registry was found, and the two ways out."""
    if settings.database_url is None:
        return (
            f"no modelport registry in {settings.home.resolve()}: run `modelport init` to create one "
            "there, or give the home of an existing registry with --home or MODELPORT_HOME"
        )
    return (
        f"no modelport registry in {database.describe()}: run `modelport init` to create one there, or "
        "set MODELPORT_DATABASE_URL to the database of an existing registry"
    )


def create_app(settings: Settings | None = None) -> RestApp:
    """The HTTP application: registry → model pool → data plane → worker (gate, monitor, duties)
    → protocol adapters (REST; gRPC beside it when a port is set)."""
    # Imported here, not at the top: the CLI opens registries through this module and must not pay
    # for the serving stack (docs/performance.md, "CLI start-up").
    from modelport.monitoring.monitor import Monitor
    from modelport.serving.dataplane import DataPlane
    from modelport.serving.pool import ModelPool
    from modelport.serving.rest import RestApp
    from modelport.serving.scoring import ScoringLimits
    from modelport.serving.v2 import Limits
    from modelport.serving.worker import Worker

    settings = settings if settings is not None else Settings()
    if not settings.metrics:
        from modelport.monitoring.metrics import disable

        disable()
    tracer = None
    if settings.tracing:  # fails here, at start-up, when the tracing extra is missing
        from modelport.monitoring.tracing import Tracer

        tracer = Tracer(settings.tracing_endpoint, settings.tracing_sample_rate)
    # A change waits this long for a lock, then fails with nothing applied: never 504-then-commit.
    registry = open_registry(settings, lock_timeout=settings.database_lock_timeout_seconds)
    pool = ModelPool(
        registry,
        max_models=settings.max_loaded_models,
        max_bytes=settings.max_loaded_bytes,
        poll_interval=settings.route_poll_seconds,
    )
    from modelport.monitoring.predictions import PredictionLog
    from modelport.serving.shadow_scorer import scorer_config

    plane = DataPlane(
        pool,
        max_batch_rows=settings.max_batch_rows,
        predictions=(
            PredictionLog(settings.home.resolve(), capacity=settings.prediction_log_capacity)
            if settings.prediction_log
            else None
        ),
        tracing=tracer is not None,
        shadow_capacity=settings.shadow_queue,
        shadow_config=scorer_config(settings, log=settings.prediction_log),
        scoring_limits=ScoringLimits(
            timeout=settings.request_timeout_seconds,
            inline_seconds=settings.inline_scoring_seconds,
            hang_limit=settings.scoring_hang_limit,
            failing_seconds=settings.scoring_rest_seconds,
        ),
    )
    limits = Limits(
        max_body_bytes=settings.max_body_bytes,
        max_elements=settings.max_elements,
        max_bytes_elements=settings.max_bytes_elements,
    )
    gate = create_gate(settings, registry)
    tls = (settings.tls_cert, settings.tls_key) if settings.tls_cert and settings.tls_key else None
    monitor = None
    if settings.metrics:
        monitor = Monitor(
            settings.home.resolve(),
            registry,
            drift_settings(settings),
            settings.monitor_interval,
            database_url=settings.resolved_database_url,
        )
    worker = Worker(
        plane,
        gate,
        monitor=monitor,
        tracer=tracer,
        drain_seconds=settings.drain_seconds,
        prediction_flush_seconds=settings.prediction_log_flush_seconds,
        release_flush_seconds=settings.release_flush_seconds,
    )
    if settings.batch_roots:  # jobs over the API (docs/batch.md): this worker starts waiting ones
        from modelport.batch.runner import JobRunner

        worker.jobs = JobRunner(registry, settings)
    if settings.grpc_port is not None:
        from modelport.serving.grpc import GrpcServer

        worker.servers.append(
            GrpcServer(
                worker,
                limits,
                settings.host,
                settings.grpc_port,
                tls=tls,
                handshake_timeout=settings.header_timeout_seconds,
            )
        )
    allowed_hosts = tuple(settings.allowed_hosts)
    if settings.insecure_dev:
        # An open server answers localhost names (plus any named explicitly), never any host: a web
        # page must not reach it through DNS rebinding.
        allowed_hosts = ("localhost", "127.0.0.1", "::1", *(h for h in allowed_hosts if h != "*"))
    return RestApp(
        worker,
        limits,
        default_model=settings.default_model,
        timeout=settings.request_timeout_seconds,
        body_timeout=settings.body_timeout_seconds,
        hsts=tls is not None,
        allowed_hosts=allowed_hosts,
        metrics_public=settings.metrics_public,
    )


def drift_settings(settings: Settings) -> DriftSettings:
    from modelport.monitoring.monitor import DriftSettings

    return DriftSettings(
        threshold=settings.drift_threshold,
        min_rows=settings.drift_min_rows,
        window_seconds=settings.drift_window_seconds,
        accuracy_window_seconds=settings.accuracy_window_seconds,
    )


def create_gate(settings: Settings, registry: Registry) -> Gate:
    """Keys from the registry; rate-limit buckets in Redis, else in a file the workers share."""
    from modelport.security.gate import Gate
    from modelport.security.ratelimit import Buckets, FileBuckets, LocalBuckets
    from modelport.security.store import KeyStore

    if settings.insecure_dev:
        return Gate(None, insecure=True)
    oidc = create_token_verifier(settings)
    local: Buckets
    try:
        local = FileBuckets(settings.home.resolve() / "run" / "buckets")
    except OSError:
        local = LocalBuckets()
    shared: Buckets = local
    fallback: Buckets | None = None
    if settings.redis_url:
        from modelport.security.ratelimit import RedisBuckets

        shared, fallback = RedisBuckets(settings.redis_url, timeout=settings.redis_timeout_seconds), local
    return Gate(
        KeyStore(registry.store),
        shared,
        fallback=fallback,
        failure_rate=settings.auth_failure_rate,
        failure_burst=float(settings.auth_failure_burst),
        oidc=oidc,
    )


def create_token_verifier(settings: Settings) -> TokenVerifier | None:
    """The OpenID access-token verifier, when an issuer is set (security/oidc.py). Its keys are fetched
    on the first token, so a server starts while the provider is away."""
    if settings.oidc_issuer is None:
        return None
    from modelport.security.oidc import ClaimMapping, SigningKeys, TokenVerifier

    if not settings.oidc_audience:
        raise InvalidInput("MODELPORT_OIDC_ISSUER needs MODELPORT_OIDC_AUDIENCE, the audience tokens name")
    mapping = ClaimMapping(
        settings.oidc_roles,
        settings.oidc_scopes,
        role_claim=settings.oidc_role_claim,
        identity_claim=settings.oidc_identity_claim,
    )
    keys = SigningKeys(settings.oidc_issuer, refetch_seconds=settings.oidc_jwks_refetch_seconds)
    return TokenVerifier(
        keys,
        settings.oidc_audience,
        mapping,
        algorithms=settings.oidc_algorithms,
        leeway=settings.oidc_leeway_seconds,
    )


def create_app_from_env() -> RestApp:
    """Factory for server worker processes: settings come from ``MODELPORT_*`` variables."""
    from modelport.monitoring.logs import configure

    settings = Settings()
    configure(access_log=settings.access_log, level=settings.log_level)
    _enter_empty_directory(settings)
    # Background threads (usage and release counts, prediction-log segments, the monitor's wait) run
    # Python code; with the interpreter's default 5 ms switch interval each of their bursts could hold
    # the event loop for up to 5 ms and showed in p99. 0.5 ms bounds that (docs/performance.md).
    sys.setswitchinterval(0.0005)
    return create_app(settings)


def _enter_empty_directory(settings: Settings) -> None:
    """Run the worker in an empty directory (``home/run/cwd``, mode 0700). Model formats resolve some
    paths against the working directory (ONNX external data); a model file is data, and whatever path
    it names must find nothing of the host's. Skipped, with a warning, when the settings themselves
    use a relative path (a relative SQLite URL or artifact directory would move with the directory)."""
    import logging
    import os

    urls = (settings.resolved_database_url, settings.resolved_artifact_url)
    if any(u.startswith("sqlite:///") and not u.startswith("sqlite:////") for u in urls) or any(
        u.startswith("file:") and not u.startswith("file:///") for u in urls
    ):
        logging.getLogger("modelport.serving").warning(
            "serving from the current directory: the database or artifact URL is a relative path"
        )
        return
    empty = settings.home.resolve() / "run" / "cwd"
    empty.mkdir(mode=0o700, parents=True, exist_ok=True)
    for stray in empty.iterdir():  # nothing may be there, not even from an earlier run
        if stray.is_dir() and not stray.is_symlink():
            import shutil

            shutil.rmtree(stray, ignore_errors=True)
        else:
            stray.unlink(missing_ok=True)
    os.chdir(empty)
