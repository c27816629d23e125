"""Content-addressed artifacts: verified on every load, crash-safe writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import create_engine

from modelport.app import open_registry
from modelport.errors import IntegrityFailure, InvalidInput
from modelport.registry.artifacts import LocalArtifactStore, sha256_bytes
from modelport.registry.service import Registry
from modelport.settings import Settings


def test_put_read_and_paths_come_from_digests(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "a")
    with store.staging() as staging:
        digest = staging.put(b"hello")
        assert staging.put(b"hello") == digest  # idempotent, stored once
    assert digest == sha256_bytes(b"hello")
    assert store.read(digest) == b"hello"
    assert store.path_for(digest) == tmp_path / "a" / "blobs" / "sha256" / digest[:2] / digest
    assert not list((tmp_path / "a" / "staging").iterdir())
    for hostile in ("../../etc/passwd", "a" * 63, "A" * 64, "/" + "a" * 63):
        with pytest.raises(InvalidInput):
            store.path_for(hostile)


def test_flipped_byte_is_refused_naming_model_version_and_digest(
    sqlite_registry: Registry, sklearn_model: object, data: pd.DataFrame
) -> None:
    version = sqlite_registry.register(sklearn_model, name="credit", sample=data, target="label")
    onnx = version.artifact("onnx")
    assert onnx is not None
    path = sqlite_registry.artifacts.path_for(onnx.digest)  # type: ignore[attr-defined]
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    os.chmod(path, 0o644)
    path.write_bytes(bytes(blob))
    with pytest.raises(IntegrityFailure) as caught:
        sqlite_registry.load("credit@1")
    message = str(caught.value)
    assert "credit@1" in message and onnx.digest in message and "changed" in message
    # the native artifact is untouched and still loads
    assert sqlite_registry.load("credit@1", role="native").version.number == 1


def test_missing_blob_is_refused(
    sqlite_registry: Registry, sklearn_model: object, data: pd.DataFrame
) -> None:
    version = sqlite_registry.register(sklearn_model, name="credit", sample=data, target="label")
    onnx = version.artifact("onnx")
    assert onnx is not None
    sqlite_registry.artifacts.path_for(onnx.digest).unlink()  # type: ignore[attr-defined]
    with pytest.raises(IntegrityFailure, match="missing"):
        sqlite_registry.predict("credit@1", data.drop(columns=["label"]).head(2))


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


def _blob_files(home: Path) -> list[Path]:
    return [p for p in (home / "artifacts" / "blobs").rglob("*") if p.is_file()]


def test_registration_killed_between_blob_write_and_commit_leaves_nothing(
    tmp_path: Path, sqlite_settings: Settings, sklearn_model: object
) -> None:
    """A real crash: the test holds the SQLite write lock, so the child writes its blobs and then
    waits at the commit; the test kills it there with SIGKILL."""
    import joblib

    home = sqlite_settings.home
    open_registry(sqlite_settings, create=True).close()
    model_file = tmp_path / "model.joblib"
    joblib.dump(sklearn_model, model_file)
    blocker = create_engine(f"sqlite:///{home / 'registry.db'}", connect_args={"isolation_level": None})
    with blocker.connect() as conn:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(home), str(model_file)],
            cwd=Path(__file__).resolve().parents[2],
            stdout=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while len(_blob_files(home)) < 2 and time.monotonic() < deadline:
                assert child.poll() is None, "child ended before writing its blobs"
                time.sleep(0.05)
            assert len(_blob_files(home)) == 2, "child never wrote its blobs"
            assert list((home / "artifacts" / "staging").glob("*.journal"))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
        conn.exec_driver_sql("ROLLBACK")
    blocker.dispose()
    assert child.returncode == -signal.SIGKILL

    registry = open_registry(sqlite_settings)  # opening again recovers
    try:
        assert registry.models() == []
        assert _blob_files(home) == []
        assert list((home / "artifacts" / "staging").iterdir()) == []
    finally:
        registry.close()


def test_recovery_keeps_blobs_of_live_sessions_and_committed_versions(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "a")
    with store.staging() as live:
        shared = live.put(b"shared")
        only_live = live.put(b"live")
        # a dead session: its journal exists but nobody holds its lock
        dead_journal = store.staging_dir / "dead.journal"
        dead_digest = sha256_bytes(b"dead")
        with store.staging() as other:
            other.put(b"dead")
            other.put(b"shared")
            committed = other.put(b"committed")
            dead_journal.write_text(f"{dead_digest}\n{shared}\n{committed}\n")
        removed = store.recover(lambda: {committed})
        assert removed == [dead_digest]
        assert store.exists(shared) and store.exists(only_live) and store.exists(committed)
        assert not dead_journal.exists()
