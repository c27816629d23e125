"""External dependencies that hang: a change is committed before its answer or not at all, and a hung
Redis does not slow every request down. The app in-process, a real SQLite lock, a real (silent) TCP peer."""

from __future__ import annotations

import socket
import sqlite3
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelport.app import open_registry
from modelport.settings import Settings
from tests.security.conftest import INFER, make_key
from tests.serving.conftest import InProcess, serve_in_process


def _alias(home: Path, alias: str) -> int | None:
    registry = open_registry(Settings(home=home))
    try:
        return registry.store.routing_table()["credit"].get(alias)
    finally:
        registry.close()


class HeldLock:
    """An exclusive write lock on the registry database, held by another process's connection."""

    def __init__(self, home: Path) -> None:
        self.connection = sqlite3.connect(home / "registry.db", isolation_level=None, check_same_thread=False)

    def __enter__(self) -> HeldLock:
        self.connection.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, *exc: object) -> None:
        self.connection.execute("ROLLBACK")
        self.connection.close()


@pytest.fixture(scope="module")
def locked_server(
    keyed_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[InProcess, str, Path]]:
    """The app (in-process) on a copy of ``keyed_home``, an admin key, the home: requests time out
    after 1 s, changes wait 2 s for a database lock. One for the module: one test moves
    ``production``, the other ``staging``."""
    import shutil

    home = tmp_path_factory.mktemp("locked") / "home"
    shutil.copytree(keyed_home, home)
    admin = make_key(home, "admin")
    settings = {"request_timeout_seconds": 1, "database_lock_timeout_seconds": 2}
    with serve_in_process(home, insecure_dev=False, **settings) as app:
        yield app, admin, home


def test_a_change_blocked_by_a_lock_fails_cleanly_and_is_not_applied_later(
    locked_server: tuple[InProcess, str, Path],
) -> None:
    app, admin, home = locked_server
    assert _alias(home, "production") == 1
    with app.client(admin) as http:
        with HeldLock(home):
            started = time.monotonic()
            response = http.put("/api/v1/models/credit/aliases/production", json={"version": 2})
            took = time.monotonic() - started
            # not the 1 s request timeout (504, with the change still waiting in a thread): the lock
            # timeout, with nothing applied
            assert response.status_code == 503, response.text
            assert "busy" in response.json()["error"] or "unavailable" in response.json()["error"]
            assert 1.5 < took < 10
            assert "locked" not in response.text.lower()  # no database internals
            time.sleep(0.5)  # the lock is held a while longer: nothing may be waiting to commit
        time.sleep(1.0)
        assert _alias(home, "production") == 1, "the refused change was applied after its answer"
        # the registry is free again: the same change succeeds and is answered once committed
        assert http.put("/api/v1/models/credit/aliases/production", json={"version": 2}).status_code == 200
        assert _alias(home, "production") == 2


def test_a_change_that_waits_for_a_lock_is_answered_after_it_commits(
    locked_server: tuple[InProcess, str, Path],
) -> None:
    """The lock is released after 1.2 s: longer than the request timeout (1 s), shorter than the lock
    timeout (2 s). The change commits, and its answer says so (never 504-then-commit)."""
    app, admin, home = locked_server
    lock = HeldLock(home).__enter__()
    threading.Timer(1.2, lock.__exit__).start()
    with app.client(admin) as http:
        response = http.put("/api/v1/models/credit/aliases/staging", json={"version": 1})
    assert response.status_code == 200, response.text
    assert _alias(home, "staging") == 1


class SilentPeer:
    """A TCP server that accepts connections and never answers: a hung Redis."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                continue
            self.held.append(connection)

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        for connection in self.held:
            connection.close()
        self.sock.close()


def test_a_hung_redis_costs_one_short_wait_per_period_not_a_second_per_request(
    keyed_home: Path, tmp_path: Path
) -> None:
    import shutil

    home = tmp_path / "home"
    shutil.copytree(keyed_home, home)
    limited = make_key(home, "consumer", ["credit*"], rate=1000.0)
    peer = SilentPeer()
    redis_url = f"redis://127.0.0.1:{peer.port}/0"
    try:
        times = []
        with (
            serve_in_process(home, insecure_dev=False, redis_url=redis_url) as app,
            app.client(limited) as http,
        ):
            for _ in range(30):
                started = time.monotonic()
                assert http.post("/v2/models/credit/infer", json=INFER).status_code == 200
                times.append(time.monotonic() - started)
        # before: every request waited for Redis's 1 s socket timeout (30 s in all). Now the first
        # waits for the 0.1 s timeout, then Redis is skipped for 5 s at a time.
        assert sum(times) < 3.0, times
        assert statistics.median(times) < 0.1, times
        assert peer.held, "the server never tried Redis"
    finally:
        peer.close()
