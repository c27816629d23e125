"""Rate limits, quotas, brute force, propagation across workers and replicas, usage records — against
real servers (two workers; two replicas sharing Redis)."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelport.security.store import KeyStore
from tests.conftest import invoke_cli
from tests.security.conftest import INFER, Keys, bearer, make_key, open_home
from tests.serving.conftest import Server, new_connection_each, serve_in_process, start_server, stop_server

REDIS_URL = os.environ.get("MODELPORT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _redis_available() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def paced(urls: list[str], token: str, seconds: float, per_second: float) -> list[int]:
    """Send ``per_second`` inference requests for ``seconds``, spread over ``urls`` (round robin, four
    threads); return the statuses. Bounded: at most seconds × per_second requests."""
    statuses: list[int] = []
    lock = threading.Lock()
    total = int(seconds * per_second)
    start = time.monotonic()

    def worker(offset: int) -> None:
        with httpx.Client(timeout=10, headers=bearer(token)) as client:
            for i in range(offset, total, 4):
                delay = start + i / per_second - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                status = client.post(f"{urls[i % len(urls)]}/v2/models/credit/infer", json=INFER).status_code
                with lock:
                    statuses.append(status)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


@pytest.fixture(scope="module")
def two_workers(keyed_home: Path, keys: Keys) -> Iterator[Server]:
    # Failed authentications are not what these tests count: let them all be answered with 401.
    env = {"MODELPORT_AUTH_FAILURE_BURST": "100000"}
    server = start_server(keyed_home, "--workers", "2", insecure_dev=False, env=env)
    yield server
    stop_server(server)


def test_rate_limit_is_shared_by_two_workers(two_workers: Server, keyed_home: Path) -> None:
    token = make_key(keyed_home, "consumer", ["credit*"], rate=40.0)
    time.sleep(0.6)  # the key reaches both workers
    seconds = 5.0
    statuses = paced([two_workers.url], token, seconds, per_second=160)
    allowed = statuses.count(200)
    limited = statuses.count(429)
    assert allowed + limited == len(statuses), set(statuses)
    expected = 40.0 + 40.0 * seconds  # the one-second burst, then the rate
    assert abs(allowed - expected) <= 0.1 * expected, (allowed, expected)
    with httpx.Client(headers=bearer(token)) as client:
        refused = client.post(f"{two_workers.url}/v2/models/credit/infer", json=INFER)
        if refused.status_code == 429:
            assert 1 <= int(refused.headers["retry-after"]) <= 2
            assert "over its rate" in refused.json()["error"]


def _accepted_by_every_worker(url: str, token: str) -> None:
    """Until a new key is accepted on ten new connections in a row (each may land on either worker);
    the workers read new keys within a poll of the registry (0.25 s)."""
    deadline = time.monotonic() + 5
    streak = 0
    with new_connection_each(base_url=url, headers=bearer(token), timeout=10) as client:
        while streak < 10:
            accepted = client.post("/v2/models/credit/infer", json=INFER).status_code == 200
            streak = streak + 1 if accepted else 0
            assert time.monotonic() < deadline, "the new key did not reach both workers"


def test_revocation_reaches_both_workers_within_a_second(two_workers: Server, keyed_home: Path) -> None:
    token = make_key(keyed_home, "consumer", ["credit*"])
    _accepted_by_every_worker(two_workers.url, token)
    with httpx.Client(base_url=two_workers.url, headers=bearer(token), timeout=10) as client:
        registry = open_home(keyed_home)
        try:
            KeyStore(registry.store).revoke(Keys.id_of(token), actor="local:test")
        finally:
            registry.close()
        revoked_at = time.monotonic()
        late: list[float] = []
        with new_connection_each(base_url=two_workers.url, headers=bearer(token), timeout=10) as fresh:
            while time.monotonic() - revoked_at < 2.0:  # new connections land on either worker
                if fresh.post("/v2/models/credit/infer", json=INFER).status_code == 200:
                    late.append(time.monotonic() - revoked_at)
                time.sleep(0.02)
        assert not late or max(late) < 1.0, f"revoked key still answered {max(late):.2f} s later"
        assert client.post("/v2/models/credit/infer", json=INFER).status_code == 401


def test_quota_and_usage_records(two_workers: Server, keyed_home: Path, keys: Keys) -> None:
    token = make_key(keyed_home, "consumer", ["credit*"], quota=12)
    key_id = Keys.id_of(token)
    time.sleep(0.6)
    statuses = []
    with httpx.Client(base_url=two_workers.url, headers=bearer(token), timeout=10) as client:
        for _ in range(8):
            statuses.append(client.post("/v2/models/credit/infer", json=INFER).status_code)
        statuses.append(client.post("/v2/models/credit/infer", json={"inputs": []}).status_code)  # an error
        time.sleep(1.6)  # flushed to the database and re-read by both workers
        for _ in range(10):
            statuses.append(client.post("/v2/models/credit/infer", json=INFER).status_code)
    assert statuses[:8] == [200] * 8 and statuses[8] == 400
    # 12 a month: the 13th request onwards is refused (at most one flush interval late across workers)
    assert statuses.count(200) in (11, 12, 13), statuses
    assert statuses[-1] == 429
    admitted = len(statuses) - statuses.count(429)
    deadline = time.monotonic() + 10
    while True:  # until both workers have added their counts (once a second)
        out = invoke_cli(keyed_home, "usage", "--key", key_id, "--json")
        assert out.returncode == 0, out.stderr
        rows = json.loads(out.stdout)
        if sum(r["requests"] for r in rows) >= admitted or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    (row,) = rows
    # Usage counts admitted requests (refusals at the gate cost nothing and are not billed).
    assert row["model"] == "credit" and row["errors"] == 1
    assert row["requests"] == admitted and row["rows"] == statuses.count(200)
    assert row["bytes_in"] > 0 and row["bytes_out"] > 0
    csv = invoke_cli(keyed_home, "usage", "--csv").stdout
    assert csv.splitlines()[0] == "day,key_id,model,requests,rows,errors,bytes_in,bytes_out"
    with httpx.Client(base_url=two_workers.url, timeout=10) as client:
        mine = client.get("/api/v1/usage", headers=bearer(keys.consumer)).json()["usage"]
        assert all(r["key_id"] == Keys.id_of(keys.consumer) for r in mine)
        assert client.get(f"/api/v1/usage?key={key_id}", headers=bearer(keys.consumer)).status_code == 404
        everyone = client.get(f"/api/v1/usage?key={key_id}", headers=bearer(keys.admin)).json()["usage"]
        assert everyone == [row]


def shared_registry(keyed_home: Path) -> dict[str, str]:
    """Environment for a server with a home of its own (its own bucket file) on the keyed registry."""
    return {
        "MODELPORT_DATABASE_URL": f"sqlite:///{keyed_home / 'registry.db'}",
        "MODELPORT_ARTIFACT_URL": (keyed_home / "artifacts").as_uri(),
    }


def test_key_guessing_ends_in_429(keyed_home: Path, keys: Keys, tmp_path: Path) -> None:
    # default limits (burst 20, then 5/s), and a bucket file no other test's app has touched
    home = tmp_path / "home"
    home.mkdir()
    shared = {
        "database_url": f"sqlite:///{keyed_home / 'registry.db'}",
        "artifact_url": (keyed_home / "artifacts").as_uri(),
    }
    with serve_in_process(home, insecure_dev=False, **shared) as app, app.client() as client:
        statuses = [
            client.post(
                "/v2/models/credit/infer", json=INFER, headers=bearer(f"mpk_abcdefghijkl_{i:043d}")
            ).status_code
            for i in range(60)
        ]
        assert statuses[:20] == [401] * 20
        assert statuses[-10:] == [429] * 10
        refused = client.get("/v2", headers={"X-API-Key": "guess"})
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        # a valid key from the same address still works
        assert (
            client.post("/v2/models/credit/infer", json=INFER, headers=bearer(keys.consumer)).status_code
            == 200
        )


@pytest.mark.skipif(not _redis_available(), reason=f"Redis is not reachable at {REDIS_URL}")
def test_two_replicas_share_a_rate_through_redis(keyed_home: Path, tmp_path: Path) -> None:
    """Two servers with their own homes (so no shared bucket file) on one database and one Redis."""
    token = make_key(keyed_home, "consumer", ["credit*"], rate=40.0)
    env = {**shared_registry(keyed_home), "MODELPORT_REDIS_URL": REDIS_URL}
    replicas = [start_server(tmp_path / f"replica{i}", insecure_dev=False, env=env) for i in range(2)]
    try:
        seconds = 5.0
        statuses = paced([r.url for r in replicas], token, seconds, per_second=160)
        allowed = statuses.count(200)
        expected = 40.0 + 40.0 * seconds
        assert statuses.count(200) + statuses.count(429) == len(statuses)
        assert abs(allowed - expected) <= 0.1 * expected, (allowed, expected)
    finally:
        for replica in replicas:
            stop_server(replica)


def _within_a_second(check: object, url: str) -> float:
    """Seconds until ``check(client)`` holds on fresh connections (so on either worker), polling."""
    started = time.monotonic()
    while time.monotonic() - started < 3.0:
        if all(check(httpx.Client(base_url=url, timeout=10)) for _ in range(4)):  # type: ignore[operator]
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError("the change did not arrive within 3 s")


def test_scope_change_reaches_both_workers_within_a_second(two_workers: Server, keyed_home: Path) -> None:
    token = make_key(keyed_home, "consumer", ["credit*"])
    _accepted_by_every_worker(two_workers.url, token)
    with httpx.Client(base_url=two_workers.url, headers=bearer(token)) as client:
        assert client.post("/v2/models/credit/infer", json=INFER).status_code == 200
        assert client.post("/v2/models/fraud/infer", json=INFER).status_code == 404
    registry = open_home(keyed_home)
    try:
        KeyStore(registry.store).update(Keys.id_of(token), models=["fraud"], actor="local:test")
    finally:
        registry.close()

    def moved(client: httpx.Client) -> bool:
        with client:
            credit = client.post("/v2/models/credit/infer", json=INFER, headers=bearer(token)).status_code
            fraud = client.post("/v2/models/fraud/infer", json=INFER, headers=bearer(token)).status_code
        return credit == 404 and fraud == 200

    assert _within_a_second(moved, two_workers.url) < 1.0


def test_revocation_reaches_another_replica_within_a_second(keyed_home: Path, tmp_path: Path) -> None:
    """Two servers (own homes) sharing one database: a key revoked through one is refused by the other."""
    token = make_key(keyed_home, "consumer", ["credit*"])
    admin = make_key(keyed_home, "admin")
    env = {**shared_registry(keyed_home), "MODELPORT_AUTH_FAILURE_BURST": "100000"}
    first, second = (start_server(tmp_path / f"r{i}", insecure_dev=False, env=env) for i in range(2))
    try:
        with httpx.Client(base_url=second.url, headers=bearer(token)) as client:
            assert client.post("/v2/models/credit/infer", json=INFER).status_code == 200
        revoked = httpx.delete(f"{first.url}/api/v1/keys/{Keys.id_of(token)}", headers=bearer(admin))
        assert revoked.status_code == 200

        def refused(client: httpx.Client) -> bool:
            with client:
                return (
                    client.post("/v2/models/credit/infer", json=INFER, headers=bearer(token)).status_code
                    == 401
                )

        assert _within_a_second(refused, second.url) < 1.0
    finally:
        stop_server(first)
        stop_server(second)
