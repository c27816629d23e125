"""Content-addressed artifacts: verified on every load, crash-safe writes — on the local store and on
the S3 store (a real SeaweedFS server, tests/seaweed.py), through the same tests; then what only the S3
store has: its cache, multipart uploads, leases, and the errors of a bucket that is missing, refuses
us or cannot be reached."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import create_engine

from modelport.app import open_registry
from modelport.errors import IntegrityFailure, InvalidInput, MissingExtra, StoreNotReady
from modelport.registry.artifacts import ArtifactStore, LocalArtifactStore, open_artifact_store, sha256_bytes
from modelport.registry.s3 import S3ArtifactStore, parse_s3_url
from modelport.registry.service import Registry
from modelport.settings import Settings
from tests.conftest import FEATURES, invoke_cli, until
from tests.seaweed import S3Server

ROOT = Path(__file__).resolve().parents[2]
LEASE = 3.0  # seconds: a heartbeat every 0.75 s; LastModified and the server's Date tick in seconds


@dataclass
class Backend:
    """One artifact store under test, and the test's own view of where its blobs and journals are."""

    kind: str
    settings: Settings
    s3: S3Server | None = None

    @property
    def prefix(self) -> str:
        return parse_s3_url(self.settings.resolved_artifact_url)[1] if self.s3 else ""

    def store(self) -> ArtifactStore:
        return open_artifact_store(self.settings)

    def env(self) -> dict[str, str]:
        """The settings as ``MODELPORT_*`` variables, for a child process or the CLI."""
        names = ("artifact_url", "s3_lease_seconds", "artifact_cache_dir", "equivalence_rows")
        values = {f"MODELPORT_{n.upper()}": str(getattr(self.settings, n)) for n in names}
        return {**values, **self.s3.environment()} if self.s3 else {}

    def _keys(self, under: str) -> list[str]:
        assert self.s3 is not None
        page = self.s3.client().list_objects_v2(Bucket=self.s3.bucket, Prefix=self.prefix + under)
        return [item["Key"] for item in page.get("Contents", [])]

    def blobs(self) -> set[str]:
        if self.s3:
            return {key.rsplit("/", 1)[1] for key in self._keys("blobs/")}
        root = self.settings.home / "artifacts" / "blobs"
        return {p.name for p in root.rglob("*") if p.is_file()} if root.exists() else set()

    def journals(self) -> set[str]:
        if self.s3:
            return {key.rsplit("/", 1)[1].removesuffix(".journal") for key in self._keys("staging/")}
        staging = self.settings.home / "artifacts" / "staging"
        return {p.stem for p in staging.glob("*.journal")} if staging.exists() else set()

    def write_journal(self, name: str, lines: list[str]) -> None:
        """A journal no live session holds (its process died)."""
        body = "".join(f"{line}\n" for line in lines)
        if self.s3:
            key = f"{self.prefix}staging/{name}.journal"
            self.s3.client().put_object(Bucket=self.s3.bucket, Key=key, Body=body.encode())
        else:
            (self.settings.home / "artifacts" / "staging" / f"{name}.journal").write_text(body)

    def corrupt(self, digest: str) -> None:
        """Flip one bit in the middle of the stored blob."""
        if self.s3:
            client, key = self.s3.client(), f"{self.prefix}blobs/sha256/{digest[:2]}/{digest}"
            blob = bytearray(client.get_object(Bucket=self.s3.bucket, Key=key)["Body"].read())
            blob[len(blob) // 2] ^= 0x01
            client.put_object(Bucket=self.s3.bucket, Key=key, Body=bytes(blob))
            return
        path = LocalArtifactStore(self.settings.home / "artifacts").path_for(digest)
        blob = bytearray(path.read_bytes())
        blob[len(blob) // 2] ^= 0x01
        os.chmod(path, 0o644)
        path.write_bytes(bytes(blob))

    def remove(self, digest: str) -> None:
        if self.s3:
            key = f"{self.prefix}blobs/sha256/{digest[:2]}/{digest}"
            self.s3.client().delete_object(Bucket=self.s3.bucket, Key=key)
        else:
            LocalArtifactStore(self.settings.home / "artifacts").path_for(digest).unlink()


def s3_settings(s3: S3Server, tmp_path: Path, **overrides: Any) -> Settings:
    """Settings of an S3 store with a prefix of its own on the session's server."""
    fields: dict[str, Any] = {
        "home": tmp_path / "home",
        "equivalence_rows": 500,
        "artifact_url": s3.url(f"t-{uuid.uuid4().hex[:12]}/models"),
        "artifact_cache_dir": tmp_path / "cache",
        "s3_lease_seconds": LEASE,
        **s3.settings(),
    }
    return Settings(**{**fields, **overrides})


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        return Backend("local", Settings(home=tmp_path / "home", equivalence_rows=500))
    s3: S3Server = request.getfixturevalue("s3_server")
    return Backend("s3", s3_settings(s3, tmp_path), s3)


@pytest.fixture
def s3_backend(s3_server: S3Server, tmp_path: Path) -> Backend:
    return Backend("s3", s3_settings(s3_server, tmp_path), s3_server)


@pytest.fixture
def backend_registry(backend: Backend) -> Iterator[Registry]:
    registry = open_registry(backend.settings, create=True)
    yield registry
    registry.close()


def recover_until_gone(
    store: ArtifactStore, backend: Backend, journal: str, keep: Callable[[], set[str]]
) -> list[str]:
    """Run recovery until ``journal`` is gone: at once for the local store (no lock held), after its
    lease expired for the S3 store. Returns what recovery removed."""
    removed: list[str] = []

    def attempt() -> bool:
        removed.extend(store.recover(keep))
        return journal not in backend.journals()

    until(attempt, timeout=10 * LEASE, interval=0.25)
    return removed


# -- the same suite on both stores -----------------------------------------------------------------


def test_put_read_and_paths_come_from_digests(backend: Backend) -> None:
    store = backend.store()
    with store.staging() as staging:
        digest = staging.put(b"hello")
        assert staging.put(b"hello") == digest  # idempotent, stored once
    assert digest == sha256_bytes(b"hello")
    assert store.read(digest) == b"hello" and store.exists(digest)
    assert backend.blobs() == {digest} and backend.journals() == set()
    if isinstance(store, LocalArtifactStore):
        root = backend.settings.home / "artifacts"
        assert store.path_for(digest) == root / "blobs" / "sha256" / digest[:2] / digest
    else:
        assert isinstance(store, S3ArtifactStore)
        assert store.key_for(digest) == f"{backend.prefix}blobs/sha256/{digest[:2]}/{digest}"
    for hostile in ("../../etc/passwd", "a" * 63, "A" * 64, "/" + "a" * 63, "a" * 64 + "/../x", "a" * 65):
        with pytest.raises(InvalidInput):
            store.read(hostile)
        with pytest.raises(InvalidInput):
            store.exists(hostile)


def test_flipped_byte_is_refused_naming_model_version_and_digest(
    backend: Backend, backend_registry: Registry, sklearn_model: object, data: pd.DataFrame
) -> None:
    version = backend_registry.register(sklearn_model, name="credit", sample=data, target="label")
    onnx = version.artifact("onnx")
    assert onnx is not None
    backend.corrupt(onnx.digest)
    with pytest.raises(IntegrityFailure) as caught:
        backend_registry.load("credit@1")
    message = str(caught.value)
    assert "credit@1" in message and onnx.digest in message and "changed" in message
    if backend.s3:  # the damaged download was not cached, and no secret is in the message
        assert not (backend.settings.artifact_cache_dir / onnx.digest[:2] / onnx.digest).exists()  # type: ignore[operator]
        assert backend.s3.secret_key not in message and backend.s3.access_key not in message
    # the native artifact is untouched and still loads
    assert backend_registry.load("credit@1", role="native").version.number == 1


def test_missing_blob_is_refused(
    backend: Backend, backend_registry: Registry, sklearn_model: object, data: pd.DataFrame
) -> None:
    version = backend_registry.register(sklearn_model, name="credit", sample=data, target="label")
    onnx = version.artifact("onnx")
    assert onnx is not None
    backend.remove(onnx.digest)
    with pytest.raises(IntegrityFailure, match="missing"):
        backend_registry.predict("credit@1", data.drop(columns=["label"]).head(2))


_CHILD = textwrap.dedent(
    """
    import sys
    import joblib
    from modelport.app import open_registry
    from modelport.settings import Settings
    from tests.conftest import make_data
    model = joblib.load(sys.argv[2])
    data = make_data(rows=200)
    registry = open_registry(Settings(home=sys.argv[1], equivalence_rows=200))
    registry.register(model, name="killed", sample=data, target="label")
    print("committed", flush=True)
    """
)


def test_registration_killed_between_blob_write_and_commit_leaves_nothing(
    tmp_path: Path, backend: Backend, sklearn_model: object
) -> None:
    """A real crash: the test holds the SQLite write lock, so the child writes its blobs and then
    waits at the commit; the test kills it there with SIGKILL. On S3 the child's lease is renewed
    while it waits (recovery leaves it alone), and lapses once it is dead."""
    import joblib

    settings = backend.settings
    home = settings.home
    open_registry(settings, create=True).close()
    model_file = tmp_path / "model.joblib"
    joblib.dump(sklearn_model, model_file)
    blocker = create_engine(f"sqlite:///{home / 'registry.db'}", connect_args={"isolation_level": None})
    with blocker.connect() as conn:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(home), str(model_file)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            env={**os.environ, **backend.env()},
        )

        def written() -> bool:
            assert child.poll() is None, "child ended before writing its blobs"
            return len(backend.blobs()) == 2

        try:
            until(written, timeout=60, interval=0.05)
            assert len(backend.journals()) == 1
            if backend.s3:  # alive past its lease: still protected by its heartbeat
                store = backend.store()
                journal = next(iter(backend.journals()))
                first = _last_modified(backend, journal)
                until(lambda: (_server_now(backend) - first) > LEASE + 1, timeout=30, interval=0.2)
                assert child.poll() is None
                assert store.recover(lambda: set()) == [] and len(backend.blobs()) == 2
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
        conn.exec_driver_sql("ROLLBACK")
    blocker.dispose()
    assert child.returncode == -signal.SIGKILL

    def reopened_and_recovered() -> bool:
        registry = open_registry(settings)  # opening again recovers (on S3, once the lease lapsed)
        try:
            assert registry.models() == []
        finally:
            registry.close()
        return not backend.blobs() and not backend.journals()

    until(reopened_and_recovered, timeout=10 * LEASE, interval=0.25)
    if not backend.s3:
        assert list((home / "artifacts" / "staging").iterdir()) == []


def test_recovery_keeps_blobs_of_live_sessions_and_committed_versions(backend: Backend) -> None:
    store = backend.store()
    with store.staging() as live:
        shared = live.put(b"shared")
        only_live = live.put(b"live")
        dead_digest = sha256_bytes(b"dead")
        with store.staging() as other:
            other.put(b"dead")
            other.put(b"shared")
            committed = other.put(b"committed")
        # a dead session: its journal exists but nobody holds its lock (renews its lease)
        backend.write_journal("dead", [dead_digest, shared, committed, "../../not-a-digest"])
        removed = recover_until_gone(store, backend, "dead", lambda: {committed})
        assert removed == [dead_digest]
        assert store.exists(shared) and store.exists(only_live) and store.exists(committed)
        assert not store.exists(dead_digest)
        assert backend.journals() != set()  # the live session's own
    assert backend.journals() == set()


def test_discard_keeps_journaled_and_live_blobs(backend: Backend) -> None:
    store = backend.store()
    with store.staging() as staging:
        old, kept, busy = staging.put(b"old"), staging.put(b"kept"), staging.put(b"busy")
    store.read(old)  # cached on S3: discarding takes it out of this replica's cache too
    with store.staging() as registering:
        registering.put(b"busy")
        assert store.discard([old, kept, busy, "../x"], lambda: {kept}) == [old]
    assert not store.exists(old) and store.exists(kept) and store.exists(busy)
    if backend.s3:
        assert not (backend.settings.artifact_cache_dir / old[:2] / old).exists()  # type: ignore[operator]


# -- the S3 store only -----------------------------------------------------------------------------


def _last_modified(backend: Backend, journal: str) -> float:
    assert backend.s3 is not None
    key = f"{backend.prefix}staging/{journal}.journal"
    return float(
        backend.s3.client().head_object(Bucket=backend.s3.bucket, Key=key)["LastModified"].timestamp()
    )


def _server_now(backend: Backend) -> float:
    """The S3 server's clock (its Date header), which leases are judged by."""
    import email.utils

    assert backend.s3 is not None
    page = backend.s3.client().list_objects_v2(Bucket=backend.s3.bucket, MaxKeys=1)
    return email.utils.parsedate_to_datetime(page["ResponseMetadata"]["HTTPHeaders"]["date"]).timestamp()


def _cached(settings: Settings) -> set[str]:
    assert settings.artifact_cache_dir is not None
    return {p.name for p in settings.artifact_cache_dir.glob("??/*")}


def test_cache_is_bounded_least_recently_used_private_and_verified(
    s3_backend: Backend, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = s3_backend.settings.model_copy(update={"artifact_cache_bytes": 3 * 1000})
    store = open_artifact_store(settings)
    blobs = [bytes([n]) * 1000 for n in range(4)]
    with store.staging() as staging:
        a, b, c, d = (staging.put(blob) for blob in blobs)
        large = staging.put(b"L" * 3001)
    assert _cached(settings) == set()  # uploads are not cached: reads are
    for digest in (a, b, c, a):  # a is now the most recently used, b the least
        store.read(digest)
    assert _cached(settings) == {a, b, c}
    store.read(d)
    assert _cached(settings) == {a, c, d}  # b evicted
    store.read(large)
    assert _cached(settings) == {a, c, d}  # larger than the whole cache: never cached
    cache = settings.artifact_cache_dir
    assert cache is not None
    assert sum(p.stat().st_size for p in cache.glob("??/*")) <= 3000
    assert {oct(p.stat().st_mode & 0o777) for p in cache.glob("??/*")} == {"0o600"}
    assert {oct(p.stat().st_mode & 0o777) for p in [cache, *cache.glob("??")]} == {"0o700"}

    # a flipped byte in a cached file: detected, deleted, fetched again
    cached = cache / a[:2] / a
    damaged = bytearray(cached.read_bytes())
    damaged[500] ^= 0x01
    cached.write_bytes(bytes(damaged))
    with caplog.at_level(logging.WARNING, logger="modelport.registry"):
        assert store.read(a) == blobs[0]
    assert "damaged" in caplog.text and a in caplog.text
    assert cached.read_bytes() == blobs[0]

    # served from the cache while S3 is unreachable; what is not cached fails clearly
    down = open_artifact_store(
        settings.model_copy(update={"s3_endpoint_url": f"http://127.0.0.1:{_closed_port()}"})
    )
    assert down.read(c) == blobs[2]
    with pytest.raises(StoreNotReady, match="unreachable"):
        down.read(b)


def test_multipart_upload_and_dedup_by_size_and_etag(s3_backend: Backend) -> None:
    settings = s3_backend.settings.model_copy(update={"s3_multipart_bytes": 5 << 20})
    store = open_artifact_store(settings)
    assert isinstance(store, S3ArtifactStore)
    calls: list[str] = []
    for operation in ("PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"):
        store.client.meta.events.register(
            f"before-call.s3.{operation}", lambda model, **_: calls.append(model.name)
        )
    blob = os.urandom(11 << 20)
    with store.staging() as staging:
        digest = staging.put(blob)
    parts = [c for c in calls if c == "UploadPart"]
    assert len(parts) == 3 and "CompleteMultipartUpload" in calls
    head = store.client.head_object(Bucket=store.bucket, Key=store.key_for(digest))
    assert head["ETag"].strip('"').endswith("-3") and head["ContentLength"] == len(blob)
    assert store.read(digest) == blob

    calls.clear()
    with store.staging() as staging:  # stored already, intact: only the journal is written
        assert staging.put(blob) == digest
    assert set(calls) == {"PutObject"}

    s3_backend.corrupt(digest)  # same size, another ETag: uploaded again, which heals the object
    calls.clear()
    with store.staging() as staging:
        staging.put(blob)
    assert calls.count("UploadPart") == 3
    store.cache.remove(digest)  # type: ignore[union-attr]
    assert store.read(digest) == blob


_MID_UPLOAD_CHILD = textwrap.dedent(
    """
    import os, sys, threading
    from modelport.registry.artifacts import open_artifact_store
    from modelport.settings import Settings
    store = open_artifact_store(Settings(s3_multipart_bytes=5 << 20))
    parts = []
    lock = threading.Lock()
    def hold(**_):  # from the second part on, parts wait forever: the test kills the process there
        with lock:  # parts go up on several threads: the second one, and only it, says so
            parts.append(1)
            second = len(parts) == 2
        if second:
            print("mid-upload", flush=True)
        if len(parts) >= 2:
            threading.Event().wait()
    store.client.meta.events.register("before-call.s3.UploadPart", hold)
    with store.staging() as staging:
        staging.put(bytes(range(256)) * (64 << 10))  # 16 MiB: four parts
    """
)


def test_registration_killed_mid_upload_leaves_no_blob_and_recovery_cleans_up(s3_backend: Backend) -> None:
    s3 = s3_backend.s3
    assert s3 is not None
    child = subprocess.Popen(
        [sys.executable, "-c", _MID_UPLOAD_CHILD],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        env={**os.environ, **s3_backend.env()},
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"mid-upload\n"
        uploads = s3.client().list_multipart_uploads(Bucket=s3.bucket, Prefix=s3_backend.prefix)
        assert len(uploads.get("Uploads", [])) == 1
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        if child.stdout is not None:
            child.stdout.close()
    assert s3_backend.blobs() == set() and len(s3_backend.journals()) == 1
    journal = next(iter(s3_backend.journals()))
    recover_until_gone(s3_backend.store(), s3_backend, journal, lambda: set())
    assert s3_backend.blobs() == set()
    uploads = s3.client().list_multipart_uploads(Bucket=s3.bucket, Prefix=s3_backend.prefix)
    assert uploads.get("Uploads", []) == []  # the parts of the killed upload are aborted


def test_a_journal_that_cannot_be_deleted_after_the_commit_is_no_failure(
    s3_backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """The rows are committed before the session closes: S3 away for a moment then must not report
    a registered version as failed (a retry would register it twice). The journal stays until its
    lease expires; recovery then deletes it and keeps the blob the rows reference."""
    store = s3_backend.store()
    assert isinstance(store, S3ArtifactStore)
    away = s3_backend.settings.model_copy(update={"s3_endpoint_url": f"http://127.0.0.1:{_closed_port()}"})
    unreachable = open_artifact_store(away)
    assert isinstance(unreachable, S3ArtifactStore)
    reachable = store.client
    with caplog.at_level(logging.WARNING, logger="modelport.registry"), store.staging() as session:
        digest = session.put(b"registered bytes " + uuid.uuid4().bytes)
        store.client = unreachable.client  # "the rows commit here", and then S3 goes away
    assert "journal stays until its lease expires" in caplog.text
    store.client = reachable  # S3 is back
    (journal,) = s3_backend.journals()
    recover_until_gone(store, s3_backend, journal, lambda: {digest})
    assert store.read(digest).startswith(b"registered bytes ")


def test_an_oversized_object_under_a_blob_key_is_refused_before_it_is_read(
    s3_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whoever can write to the bucket can put anything under a blob's key: a replica checks the size
    the object declares before reading it (the bound is lowered here to keep the object small)."""
    import modelport.registry.s3 as s3_module

    store = s3_backend.store()
    assert isinstance(store, S3ArtifactStore) and s3_backend.s3 is not None
    data = os.urandom(4096)
    digest = sha256_bytes(data)
    s3_backend.s3.client().put_object(Bucket=s3_backend.s3.bucket, Key=store.key_for(digest), Body=data)
    monkeypatch.setattr(s3_module, "MAX_BLOB_BYTES", 1024)
    with pytest.raises(IntegrityFailure, match="over the 1,024 any artifact may be"):
        store.read(digest)
    monkeypatch.setattr(s3_module, "MAX_BLOB_BYTES", 4096)
    assert store.read(digest) == data  # at the bound: read, verified


def _closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_bucket_credentials_and_endpoint_errors_are_clear_and_keep_secrets(
    s3_server: S3Server, tmp_path: Path
) -> None:
    secret = f"never-show-{uuid.uuid4().hex}"
    digest = sha256_bytes(b"x")
    wrong = s3_settings(s3_server, tmp_path, s3_secret_access_key=secret)
    assert secret not in repr(wrong) and secret not in str(wrong) and secret not in wrong.model_dump_json()
    messages = []
    for settings, expected in (
        (wrong, "access denied"),
        (s3_settings(s3_server, tmp_path, artifact_url="s3://no-such-bucket-mp/x"), "bucket does not exist"),
        (
            s3_settings(s3_server, tmp_path, s3_endpoint_url=f"http://127.0.0.1:{_closed_port()}"),
            "unreachable",
        ),
    ):
        store = open_artifact_store(settings)
        with pytest.raises(StoreNotReady) as read:
            store.read(digest)
        with pytest.raises(StoreNotReady) as written, store.staging() as staging:
            staging.put(b"x")
        for caught in (read, written):
            message = str(caught.value)
            assert expected in message and settings.resolved_artifact_url in message, message
            messages.append(message)
    for message in messages:
        assert secret not in message and s3_server.secret_key not in message
        assert "Traceback" not in message and "\n" not in message

    # at start-up: a mistake (bucket, credentials) is refused, an outage is tolerated
    with pytest.raises(StoreNotReady, match="access denied"):
        open_registry(wrong, create=True)
    outage = s3_settings(s3_server, tmp_path, s3_endpoint_url=f"http://127.0.0.1:{_closed_port()}")
    open_registry(outage, create=True).close()


def test_s3_urls_are_checked_and_normalised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_s3_url("s3://models") == ("models", "")
    assert parse_s3_url("s3://models//team-a///prod/") == ("models", "team-a/prod/")
    for hostile in (
        "s3://models/../other",
        "s3://models/a/%2e%2e/b",
        "s3://models/a/./b",
        "s3://user:pw@models/x",
        "s3://models:9000/x",
        "s3://Models/x",
        "s3://m/x",
        "s3:///x",
        "s3://models/x?versionId=1",
        "s3://models/x#y",
        "s3://models/a b",
        "s3://models/a%0ab",
        "s3://models/a\\b",
        "s3://../x",
    ):
        with pytest.raises(InvalidInput) as caught:
            parse_s3_url(hostile)
        assert "pw" not in str(caught.value)
    with pytest.raises(InvalidInput, match="both"):
        open_artifact_store(Settings(home=tmp_path, artifact_url="s3://models/x", s3_access_key_id="AK"))
    # no boto3 (the core install): the command that installs it
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(MissingExtra, match=r"pip install 'modelport\[s3\]'"):
        open_artifact_store(Settings(home=tmp_path, artifact_url="s3://models/x"))


def test_init_register_serve_and_predict_with_artifacts_in_s3(
    s3_backend: Backend, tmp_path: Path, data: pd.DataFrame, sklearn_model: object
) -> None:
    from modelport.runtimes.convert import to_onnx
    from modelport.signature import Outputs, Signature
    from tests.serving.conftest import serve_in_process

    classes = sorted(data["label"].unique())
    signature = Signature(Signature.infer_features(data[FEATURES]), Outputs("classification", classes))
    model, sample = tmp_path / "credit.onnx", tmp_path / "sample.csv"
    model.write_bytes(to_onnx("sklearn", sklearn_model, signature))
    data.to_csv(sample, index=False)
    home, env = s3_backend.settings.home, s3_backend.env()

    assert invoke_cli(home, "init", "--json", env=env).returncode == 0
    registered = invoke_cli(
        home,
        *("register", "credit", str(model), "--sample", str(sample), "--target", "label"),
        *("--alias", "production", "--json"),
        env=env,
    )
    assert registered.returncode == 0, registered.stderr
    digests = {a["digest"] for a in json.loads(registered.stdout)["artifacts"]}
    assert digests and digests <= s3_backend.blobs()  # in the bucket …
    assert not (home / "artifacts").exists()  # … and nowhere under the home

    s3 = s3_backend.s3
    assert s3 is not None
    fields = {
        "artifact_url": s3_backend.settings.artifact_url,
        "artifact_cache_dir": s3_backend.settings.artifact_cache_dir,
        **s3.settings(),
    }
    body = {"inputs": [{"name": "input", "shape": [2, 6], "datatype": "FP64", "data": [0.5] * 12}]}
    with serve_in_process(home, **fields) as app, app.client() as client:
        answer = client.post("/v2/models/credit/infer", json=body)
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    assert set(outputs) == {"label", "probabilities"} and set(outputs["label"]["data"]) <= set(classes)
    assert _cached(s3_backend.settings) & digests  # the served blob came through the replica's cache
