"""Typed settings, read once from the environment (prefix ``MODELPORT_``).

Every field's docstring is the documentation: ``docs/settings.md`` is generated from this class and a
test fails when the page is stale. Code below the wiring point receives a ``Settings`` object; nothing
else reads ``os.environ``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """modelport's configuration. Each field can be set as ``MODELPORT_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="MODELPORT_", extra="ignore", frozen=True)

    home: Path = Field(default=Path(".modelport"))
    """Directory holding the embedded SQLite registry and the local artifact store."""

    database_url: str | None = None
    """SQLAlchemy URL of the registry database, e.g. ``postgresql+psycopg://user@host/db``.
    Unset: an SQLite file ``registry.db`` under ``home`` (WAL mode)."""

    artifact_url: str | None = None
    """Where artifacts live, as a URL. Unset: the directory ``artifacts`` under ``home``.
    Supported schemes: ``file://`` (a local directory) and ``s3://bucket/prefix`` (S3-compatible
    object storage, with the ``s3`` extra; see the ``s3_*`` and ``artifact_cache_*`` settings)."""

    s3_endpoint_url: str | None = Field(default=None, pattern=r"^https?://")
    """Endpoint of an S3-compatible service (MinIO, SeaweedFS, Ceph, …), e.g. ``http://minio:9000``.
    Unset: AWS S3 itself."""

    s3_region: str | None = None
    """Region of the bucket. Unset: boto3's own configuration (``AWS_REGION``, the profile)."""

    s3_access_key_id: str | None = None
    """Access key id for S3. Unset (with ``s3_secret_access_key``): boto3's credential chain —
    ``AWS_*`` variables, a profile, a Kubernetes service account (IRSA) or an instance role."""

    s3_secret_access_key: SecretStr | None = None
    """Secret key for ``s3_access_key_id``. Never printed, logged or put in an error message."""

    s3_multipart_bytes: int = Field(default=64 << 20, ge=5 << 20, le=5 << 30)
    """Artifacts at least this large are uploaded in parts of this size, several at once (S3 allows
    parts of 5 MiB to 5 GiB)."""

    s3_lease_seconds: float = Field(default=300.0, ge=1, le=86_400)
    """A registration writing to S3 renews its lease (its journal object) every quarter of this; a
    journal not renewed for this long belongs to a dead registration, whose unreferenced blobs are
    then deleted. Must exceed the longest pause a live registration may suffer."""

    artifact_cache_dir: Path | None = None
    """Local cache of artifacts read from S3 (each replica has its own). Unset: ``home/cache/artifacts``."""

    artifact_cache_bytes: int = Field(default=2 << 30, ge=0)
    """Bytes of artifacts kept in the local cache; the least recently used go first. 0: no cache."""

    golden_rows: int = Field(default=50, ge=1, le=10_000)
    """Rows of the registration sample stored with each version, with the outputs computed at
    registration (the ground truth later checks replay)."""

    equivalence_rows: int = Field(default=3_000, ge=0, le=1_000_000)
    """Rows sampled from the signature, on top of the golden cases, on which a converted (ONNX) twin
    must match the native model before it is served."""

    probability_tolerance: float = Field(default=1e-5, gt=0)
    """Largest absolute difference allowed between native and ONNX class probabilities."""

    regression_tolerance: float = Field(default=1e-5, gt=0)
    """Largest difference allowed between native and ONNX regression outputs, relative to
    ``max(1, |native value|)``: ONNX computes in float32."""

    host: str = "127.0.0.1"
    """Address `modelport serve` binds to."""

    port: int = Field(default=8080, ge=1, le=65535)
    """HTTP port of `modelport serve`."""

    grpc_port: int | None = Field(default=None, ge=1, le=65535)
    """gRPC port of `modelport serve` (Open Inference Protocol); unset: no gRPC server."""

    workers: int = Field(default=1, ge=1, le=64)
    """Server worker processes (each serves every model)."""

    default_model: str | None = None
    """Reference answered by MLflow's `/invocations` (e.g. `credit-rating@production`)."""

    max_body_bytes: int = Field(default=64 << 20, ge=1024)
    """Largest request body accepted; larger bodies get 413 before they are read."""

    max_elements: int = Field(default=16_000_000, ge=1)
    """Largest number of tensor elements one request may declare (checked before allocating)."""

    max_bytes_elements: int = Field(default=1_000_000, ge=1)
    """Largest number of BYTES (text) elements in one request, over all its inputs: text is decoded
    element by element, so it has its own, smaller bound (about 0.3 s of decoding at the default)."""

    max_loaded_models: int = Field(default=1000, ge=1)
    """Loaded versions kept per worker (least recently used are evicted first). Every registered
    version is served whatever this is — one not loaded is loaded on its first request; the memory
    bound (``max_loaded_bytes``) is the one that usually decides."""

    max_loaded_bytes: int = Field(default=2 << 30, ge=1)
    """Memory the loaded versions of one worker may use, in bytes, as measured when each was loaded
    (the heap it added, at least its artifact's size — an ONNX session keeps several times its file);
    least recently used versions are evicted beyond it. On top come the worker's own memory (~85 MiB;
    onnxruntime adds 19 MiB at the first ONNX load), ~20 kB per version ever served (its metric
    series) and heap fragmentation from loading and evicting (~35 MiB after 1,000 models churned
    through a 64 MiB bound): see docs/performance.md, "Density"."""

    max_batch_rows: int = Field(default=256, ge=1)
    """Largest micro-batch handed to a runtime in one call."""

    inline_scoring_seconds: float = Field(default=0.1, gt=0, le=5)
    """Longest an ONNX call may run on a worker's event loop before a watchdog stops it and it is run
    again on a scoring thread (so probes and other models wait at most this long). Every runtime
    call ends at `request_timeout_seconds`: ONNX calls are stopped, other runtimes score in a child
    process that is killed and replaced (docs/serving.md, "Scoring isolation")."""

    scoring_hang_limit: int = Field(default=3, ge=1, le=1000)
    """Runtime calls of one version stopped at the request timeout within 10 minutes that mark the
    version failing: its requests then answer 503 at once for `scoring_rest_seconds`."""

    scoring_rest_seconds: float = Field(default=300.0, ge=0, le=86_400)
    """How long a version marked failing after repeated hangs answers 503 before it is tried again."""

    request_timeout_seconds: float = Field(default=30.0, gt=0)
    """A request not answered within this time gets 504 (the worker keeps serving others). Changes
    under `/api/v1` are not cut off by it: they are bounded by `database_lock_timeout_seconds`
    instead, so a change is either committed before its answer or not at all."""

    database_lock_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    """In `modelport serve`: how long a registry change waits for a lock that another writer holds
    before it fails (503, nothing applied). The CLI waits up to 60 s."""

    header_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    """A request whose headers are not complete this long after the connection opened (or after its
    first byte, on a kept-alive connection) gets 408 and the connection is closed (slowloris)."""

    body_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    """Longest wait for the next piece of a request body; a body that stops gets 408 and the connection
    is closed. The whole body must also arrive within ``request_timeout_seconds``."""

    max_header_bytes: int = Field(default=64 << 10, ge=4096, le=16 << 20)
    """Largest request line plus headers accepted; more gets 431 as soon as the limit is passed (the
    rest is never read)."""

    max_headers: int = Field(default=100, ge=16, le=10_000)
    """Most header fields a request may carry; more gets 431."""

    max_connections_per_address: int = Field(default=256, ge=1, le=1_000_000)
    """Open connections one client address (IPv4 address, or IPv6 /64) may hold in each worker; more
    get 503 and are closed. Behind a proxy every client shares the proxy's address: raise it there."""

    drain_seconds: float = Field(default=5.0, ge=0, le=300)
    """After SIGTERM: readiness reports 503 and requests are still served for this long (so a load
    balancer stops sending traffic), then the socket closes and in-flight requests finish."""

    route_poll_seconds: float = Field(default=0.25, gt=0, le=1.0)
    """How often each worker checks the registry for alias moves, new versions and key changes."""

    insecure_dev: bool = False
    """Serve without API keys (development only): forces the 127.0.0.1 bind and says so at start.
    Set by `modelport serve --insecure-dev`; never set it in production."""

    access_log: bool = True
    """Log one JSON line per request (request id, key id, model, version, status, latency) on
    standard error. Health probes are never logged."""

    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    """Level of modelport's own JSON logs."""

    prediction_log: bool = True
    """Keep the prediction log for models whose log policy samples requests (`modelport log-policy`)."""

    prediction_log_capacity: int = Field(default=50_000, ge=1, le=10_000_000)
    """Sampled requests a worker keeps in memory between writes (every 10 s, or at 5,000); beyond it
    records are dropped and counted, requests never wait."""

    monitor_interval: float = Field(default=60.0, ge=0, le=86_400)
    """Seconds between evaluations of drift and live accuracy for ``/metrics`` (one worker evaluates;
    0 turns the evaluation off). ``modelport drift`` computes on demand regardless."""

    drift_threshold: float = Field(default=0.2, gt=0, le=10)
    """PSI at or over which a feature (or the predictions) counts as drifting."""

    drift_window_seconds: float = Field(default=3600.0, ge=1, le=90 * 86_400)
    """Width of the window of logged traffic compared with the reference profile."""

    drift_min_rows: int = Field(default=100, ge=1)
    """Logged rows a window needs before its drift is computed (fewer give noisy PSI)."""

    accuracy_window_seconds: float = Field(default=7 * 86_400.0, ge=1, le=365 * 86_400)
    """Age of the logged predictions (by the time they were made) that live accuracy covers."""

    prediction_log_flush_seconds: float = Field(default=10.0, gt=0, le=3600)
    """Seconds between writes of a worker's sampled requests to Parquet (sooner at 5,000 requests)."""

    release_flush_seconds: float = Field(default=5.0, gt=0, le=300)
    """Seconds between writes of a worker's per-arm release counts to the database (what `release status`
    and automatic rollback read). Each write is a database commit; once a second it showed in p99."""

    shadow_queue: int = Field(default=1024, ge=1, le=1_000_000)
    """Copies of requests a worker keeps for its shadow scorer (waiting or being scored); beyond it a copy
    is dropped and counted, never delaying an answer."""

    shadow_priority: Literal["idle", "nice"] = "idle"
    """CPU priority of the shadow scorers: ``idle`` (Linux ``SCHED_IDLE``: a core only when no serving
    process wants one — the primary is never slowed, but a saturated server drops most copies) or
    ``nice`` (nice 19: a small share of a busy core, so the shadow sees traffic even at saturation)."""

    metrics: bool = True
    """Count Prometheus metrics (``/metrics``). Off only to measure what they cost."""

    metrics_public: bool = False
    """Serve ``/metrics`` without a key (for a Prometheus scraper on a trusted network); otherwise any
    valid key may read it."""

    tracing: bool = False
    """Export OpenTelemetry traces of inference requests (spans parse, validate, queue, infer,
    serialise) over OTLP/HTTP; needs the ``tracing`` extra. Off: OpenTelemetry is never imported."""

    tracing_endpoint: str = Field(default="http://127.0.0.1:4318/v1/traces", pattern=r"^https?://")
    """The collector's OTLP/HTTP traces URL (with ``tracing``)."""

    tracing_sample_rate: float = Field(default=1.0, ge=0, le=1)
    """Share of new traces kept (with ``tracing``); a caller's ``traceparent`` decision is followed."""

    redis_url: str | None = None
    """Redis URL (``redis://host:6379/0``) for rate limits and quotas shared by replicas. Unset: buckets
    and quota counters are shared by the workers of one server through a file under ``home/run``."""

    redis_timeout_seconds: float = Field(default=0.1, gt=0, le=10)
    """Longest a request waits for Redis. A Redis that is down or slower than this is skipped for 5 s
    at a time: rate limits and quotas then hold per server (the bucket file) until it answers again."""

    auth_failure_rate: float = Field(default=5.0, gt=0)
    """Failed authentications allowed per client address and second (after a burst of
    ``auth_failure_burst``); beyond it the address gets 429 — key guessing ends there."""

    auth_failure_burst: int = Field(default=20, ge=1)
    """Failed authentications an address may make at once before ``auth_failure_rate`` applies."""

    allowed_hosts: list[str] = Field(default_factory=list)
    """Host header values the server answers (JSON list, e.g. ``["models.example.com"]``); empty:
    any host with a key, only localhost names in ``--insecure-dev`` (DNS-rebinding guard)."""

    batch_roots: list[Path] = Field(default_factory=list)
    """Folders that batch jobs submitted over the API (``POST /api/v1/jobs``) may read and write (JSON
    list, e.g. ``["/srv/scoring"]``); inputs and outputs must resolve inside one. Empty: the API runs no
    jobs (`modelport score` in a shell is not limited by it)."""

    batch_heartbeat_seconds: float = Field(default=2.0, gt=0, le=60)
    """How often a running batch job tells the registry it is alive. A server restarts a job it queued
    whose runner has been silent for five of these (the runner died: a crash, a kill, a reboot)."""

    tls_cert: Path | None = None
    """PEM certificate (chain) for HTTPS and gRPC over TLS; with ``tls_key``. TLS 1.2 or newer."""

    tls_key: Path | None = None
    """PEM private key for ``tls_cert``."""

    console_session_hours: float = Field(default=8.0, gt=0, le=24 * 30)
    """How long a sign-in to the web console (``/ui/``) lasts. A session also ends at once when its key
    is revoked, expires or is rotated past its grace period (docs/console.md)."""

    oidc_issuer: str | None = Field(default=None, pattern=r"^https?://")
    """Issuer URL of an OpenID provider whose JWT access tokens are accepted as bearer tokens beside API
    keys (its keys are found through ``<issuer>/.well-known/openid-configuration``); needs the ``oidc``
    extra and ``oidc_audience``. https, or http to a loopback address only. Unset: API keys only."""

    oidc_audience: str | None = None
    """The audience (``aud``) an access token must name to be accepted here: the resource indicator or
    API identifier this server is registered under at the provider."""

    oidc_algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    """Signature algorithms accepted on access tokens (JSON list). Asymmetric ones only (RS*, PS*, ES*,
    EdDSA): ``none`` and HS* are refused at start."""

    oidc_role_claim: str = "groups"
    """The token claim listing the caller's groups: a list, or one space-separated string; a dotted
    path reaches into an object (``realm_access.roles``)."""

    oidc_roles: dict[str, str] = Field(default_factory=dict)
    """Group → modelport role (JSON object), e.g. ``{"risk": "consumer", "ml-publishers": "publisher",
    "platform-admins": "admin"}``. A caller gets the highest role of its groups; a token whose groups
    map to no role is refused (403)."""

    oidc_scopes: dict[str, list[str]] = Field(default_factory=dict)
    """Group → model patterns (JSON object), e.g. ``{"risk": ["credit*"]}``: a caller sees the models of
    all its groups' patterns (admins see every model). Empty: every caller sees every model."""

    oidc_identity_claim: str = "sub"
    """The claim naming the caller in the audit log, as ``oidc:<value>`` (``sub`` when a token lacks it).
    Choose one the provider does not let people set themselves."""

    oidc_leeway_seconds: float = Field(default=30.0, ge=0, le=300)
    """Clock difference with the provider tolerated on ``exp``, ``nbf`` and ``iat``."""

    oidc_jwks_refetch_seconds: float = Field(default=30.0, ge=0, le=3600)
    """Least time between fetches of the provider's keys caused by a token with an unknown key id: a
    rotated key is picked up on the first token that uses it, and callers cycling made-up key ids
    cannot make the server hammer the provider. Known keys are re-read every 15 minutes."""

    oidc_client_id: str | None = None
    """The console's client id at the OpenID provider (``oidc_issuer``): with ``oidc_redirect_url`` set,
    ``/ui/login`` offers single sign-on (authorization code + PKCE, docs/console.md). ID tokens must name
    it as their audience."""

    oidc_client_secret: SecretStr | None = None
    """The console client's secret (sent to the token endpoint, ``client_secret_post``). Unset for a
    public client, which PKCE alone protects."""

    oidc_redirect_url: str | None = Field(default=None, pattern=r"^https?://[^/]+/ui/oidc/callback$")
    """The console's callback as registered at the provider, e.g.
    ``https://models.example.com/ui/oidc/callback``. Set explicitly: it is never built from a request's
    Host header, which a client chooses."""

    oidc_display_name: str = Field(default="single sign-on", max_length=60)
    """The provider's name on the sign-in button ("Sign in with …")."""

    webhook_allow: list[str] = Field(default_factory=list)
    """Host patterns webhook URLs may name (JSON list of shell-style patterns, e.g.
    ``["hooks.example.com", "*.ci.example.com"]``). Empty: any host, subject to the address rules
    (docs/webhooks.md)."""

    webhook_allow_http: bool = False
    """Accept ``http://`` webhook URLs (development and tests only): deliveries then travel unencrypted.
    Off: https only."""

    webhook_allow_private: bool = False
    """Let webhooks reach loopback, link-local (cloud metadata), private, unspecified and multicast
    addresses. Off: a URL resolving to any of them is refused, at subscription and at each delivery."""

    webhook_allow_cidrs: list[str] = Field(default_factory=list)
    """Address ranges webhooks may reach even though they are private (JSON list, e.g.
    ``["10.20.0.0/16"]``): a narrower opening than ``webhook_allow_private``."""

    webhook_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    """Longest one delivery attempt may take to connect, send and read the answer's status."""

    webhook_backoff_seconds: list[float] = Field(default_factory=lambda: [10.0, 30.0, 120.0, 600.0, 1800.0])
    """Waits before the 2nd, 3rd, … attempt of a delivery (JSON list; the last repeats), each with up to
    20 % random jitter added."""

    webhook_max_attempts: int = Field(default=8, ge=1, le=100)
    """Failed attempts after which a delivery is dead-lettered (it waits for a retry by an admin)."""

    webhook_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    """How often a server's worker looks for new events and due deliveries."""

    webhook_lease_seconds: float = Field(default=60.0, ge=1, le=3600)
    """How long a claimed delivery belongs to the worker that claimed it; a worker that died meanwhile
    leaves it to another after this. Must exceed ``webhook_timeout_seconds``."""

    @property
    def resolved_database_url(self) -> str:
        """The database URL in force: ``database_url`` or the SQLite file under ``home``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'registry.db').resolve()}"

    @property
    def resolved_artifact_url(self) -> str:
        """The artifact-store URL in force: ``artifact_url`` or ``file://`` under ``home``."""
        if self.artifact_url:
            return self.artifact_url
        return (self.home / "artifacts").resolve().as_uri()
