"""Rate limits, quotas, brute force, propagation across workers and replicas, usage records — against
real servers (two workers; two replicas sharing Redis), and the quota counters through the gate itself
(in-process gates on the real key store, Redis and bucket file: one gate stands for one worker)."""

from __future__ import annotations

import asyncio
import calendar
import json
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from modelport.errors import RateLimited
from modelport.security.gate import Gate
from modelport.security.ratelimit import Buckets, FileBuckets, LocalBuckets, RedisBuckets
from modelport.security.store import KeyStore
from tests.conftest import invoke_cli
from tests.security.conftest import INFER, Keys, bearer, make_key, open_home
from tests.serving.conftest import (
    Server,
    free_port,
    new_connection_each,
    serve_in_process,
    start_server,
    stop_server,
)

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
    # The clients are built before the clock starts (~20 ms of CPU each): the first request leaves on
    # time, so the budget the servers see accrue spans the whole schedule.
    clients = [httpx.Client(timeout=10, headers=bearer(token)) for _ in range(4)]
    start = time.monotonic()

    def worker(offset: int) -> None:
        with clients[offset] as client:
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


def burst(urls: list[str], token: str, requests: int, threads: int = 6) -> list[int]:
    """``requests`` inference requests at once (``threads`` at a time), round robin over ``urls``, each
    on a new connection (so on any worker); the statuses."""
    clients = {url: new_connection_each(base_url=url, headers=bearer(token), timeout=30) for url in urls}
    try:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            return list(
                pool.map(
                    lambda i: (
                        clients[urls[i % len(urls)]].post("/v2/models/credit/infer", json=INFER).status_code
                    ),
                    range(requests),
                )
            )
    finally:
        for client in clients.values():
            client.close()


def shared_registry(keyed_home: Path) -> dict[str, str]:
    """Environment for a server with a home of its own (its own bucket file) on the keyed registry."""
    return {
        "MODELPORT_DATABASE_URL": f"sqlite:///{keyed_home / 'registry.db'}",
        "MODELPORT_ARTIFACT_URL": (keyed_home / "artifacts").as_uri(),
    }


@dataclass
class Servers:
    two_workers: Server  # one server, two workers, on the keyed home
    replicas: list[Server]  # two servers with homes of their own on the keyed registry (and one Redis)
    tokens: dict[str, str]  # keys made before the servers started: every worker knows them from the start


@pytest.fixture(scope="module")
def servers(keyed_home: Path, keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """Every real server of this module, started side by side. Failed authentications are not what
    these tests count: they are all answered with 401. The replicas share one Redis when it is
    reachable (only rate-limit buckets live there: keys and revocations come from the database)."""
    tokens = {
        "rate_workers": make_key(keyed_home, "consumer", ["credit*"], rate=40.0),
        "rate_replicas": make_key(keyed_home, "consumer", ["credit*"], rate=40.0),
        "quota": make_key(keyed_home, "consumer", ["credit*"], quota=12),
        "quota_workers": make_key(keyed_home, "consumer", ["credit*"], quota=10),
        "quota_replicas": make_key(keyed_home, "consumer", ["credit*"], quota=15),
        "revoked": make_key(keyed_home, "consumer", ["credit*"]),
    }
    env = {"MODELPORT_AUTH_FAILURE_BURST": "100000"}
    replica_env = {**env, **shared_registry(keyed_home)}
    if _redis_available():
        # Redis answers in microseconds, but a loaded test machine can miss the 0.1 s default, and a
        # missed answer turns the shared buckets off for 5 s (test_dependencies.py tests that).
        replica_env |= {"MODELPORT_REDIS_URL": REDIS_URL, "MODELPORT_REDIS_TIMEOUT_SECONDS": "2"}
    homes = tmp_path_factory.mktemp("replicas")
    with ThreadPoolExecutor(max_workers=3) as pool:
        starting = [
            pool.submit(start_server, keyed_home, "--workers", "2", insecure_dev=False, env=env),
            *(
                pool.submit(start_server, homes / f"replica{i}", insecure_dev=False, env=replica_env)
                for i in range(2)
            ),
        ]
        started = [future.result() for future in starting if future.exception() is None]
    try:
        assert len(started) == len(starting), [future.exception() for future in starting]
        yield Servers(started[0], started[1:], tokens)
    finally:
        for server in started:
            stop_server(server)
        if "MODELPORT_REDIS_URL" in replica_env:  # the month's quota counters would stay a month
            import redis

            with redis.Redis.from_url(REDIS_URL) as client:
                for token in tokens.values():
                    for counter in client.scan_iter(f"modelport:quota:{Keys.id_of(token)}:*"):
                        client.delete(counter)


@pytest.fixture(scope="module")
def two_workers(servers: Servers) -> Server:
    return servers.two_workers


def test_rate_limit_is_shared_by_two_workers(servers: Servers) -> None:
    token = servers.tokens["rate_workers"]
    # Twice the rate is offered: a bucket per worker would admit about twice the expected count.
    seconds = 3.0
    statuses = paced([servers.two_workers.url], token, seconds, per_second=80)
    allowed = statuses.count(200)
    limited = statuses.count(429)
    assert allowed + limited == len(statuses), set(statuses)
    expected = 40.0 + 40.0 * seconds  # the one-second burst, then the rate
    assert abs(allowed - expected) <= 0.1 * expected, (allowed, expected)
    with httpx.Client(headers=bearer(token)) as client:
        refused = client.post(f"{servers.two_workers.url}/v2/models/credit/infer", json=INFER)
        if refused.status_code == 429:
            assert 1 <= int(refused.headers["retry-after"]) <= 2
            assert "over its rate" in refused.json()["error"]


def _accepted_by_every_worker(url: str, token: str) -> None:
    """Until a new key is accepted on ten new connections in a row (each may land on either worker)
    and four registry polls (0.25 s each) have passed since the key was made: the kernel does not
    spread new connections evenly between the workers, so ten in a row can all reach the one worker
    that already knows the key (seen once in CI); after four polls, both do."""
    started = time.monotonic()
    deadline = started + 5
    streak = 0
    with new_connection_each(base_url=url, headers=bearer(token), timeout=10) as client:
        while streak < 10 or time.monotonic() - started < 1.0:
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


def test_quota_and_usage_records(servers: Servers, two_workers: Server, keyed_home: Path, keys: Keys) -> None:
    token = servers.tokens["quota"]
    key_id = Keys.id_of(token)
    statuses = []
    with httpx.Client(base_url=two_workers.url, headers=bearer(token), timeout=10) as client:
        for _ in range(8):
            statuses.append(client.post("/v2/models/credit/infer", json=INFER).status_code)
        statuses.append(client.post("/v2/models/credit/infer", json={"inputs": []}).status_code)  # an error
        time.sleep(1.6)  # flushed to the database and re-read by both workers
        for _ in range(10):
            statuses.append(client.post("/v2/models/credit/infer", json=INFER).status_code)
    assert statuses[:8] == [200] * 8 and statuses[8] == 400
    # 12 a month, charged at admission on the counter both workers share: the 13th request onwards
    # is refused, whichever worker it reaches (the failed request was admitted, so it counts)
    admitted = len(statuses) - statuses.count(429)
    assert admitted == 12 and statuses[12:] == [429] * 7, statuses
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
def test_two_replicas_share_a_rate_through_redis(servers: Servers) -> None:
    """Two servers with their own homes (so no shared bucket file) on one database and one Redis."""
    token = servers.tokens["rate_replicas"]
    # Twice the rate is offered: a bucket per replica would admit about twice the expected count.
    seconds = 3.0
    statuses = paced([r.url for r in servers.replicas], token, seconds, per_second=80)
    allowed = statuses.count(200)
    expected = 40.0 + 40.0 * seconds
    assert statuses.count(200) + statuses.count(429) == len(statuses)
    assert abs(allowed - expected) <= 0.1 * expected, (allowed, expected)


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


def test_revocation_reaches_another_replica_within_a_second(servers: Servers, keys: Keys) -> None:
    """Two servers (own homes) sharing one database: a key revoked through one is refused by the other."""
    token = servers.tokens["revoked"]
    first, second = servers.replicas
    with httpx.Client(base_url=second.url, headers=bearer(token)) as client:
        assert client.post("/v2/models/credit/infer", json=INFER).status_code == 200
    revoked = httpx.delete(f"{first.url}/api/v1/keys/{Keys.id_of(token)}", headers=bearer(keys.admin))
    assert revoked.status_code == 200

    def refused(client: httpx.Client) -> bool:
        with client:
            return (
                client.post("/v2/models/credit/infer", json=INFER, headers=bearer(token)).status_code == 401
            )

    assert _within_a_second(refused, second.url) < 1.0


# -- quotas: one counter per key and month, charged at admission ------------------------------------


def test_a_quota_burst_over_two_workers_is_admitted_exactly(servers: Servers) -> None:
    """Thirty requests at once, on new connections, so both workers take them: a quota of ten admits
    ten in all (each worker checking its own count would admit up to ten each)."""
    statuses = burst([servers.two_workers.url], servers.tokens["quota_workers"], 30)
    assert sorted(set(statuses)) == [200, 429] and statuses.count(200) == 10, statuses


@pytest.mark.skipif(not _redis_available(), reason=f"Redis is not reachable at {REDIS_URL}")
def test_two_replicas_share_a_quota_through_redis(servers: Servers) -> None:
    """Three times the quota at once, spread over two servers with homes of their own (no shared file):
    exactly the quota is admitted."""
    statuses = burst([r.url for r in servers.replicas], servers.tokens["quota_replicas"], 45)
    assert sorted(set(statuses)) == [200, 429] and statuses.count(200) == 15, statuses
    with httpx.Client(headers=bearer(servers.tokens["quota_replicas"])) as client:
        refused = client.post(f"{servers.replicas[0].url}/v2/models/credit/infer", json=INFER)
    assert refused.status_code == 429 and "quota of 15 requests" in refused.json()["error"]
    assert int(refused.headers["retry-after"]) >= 86400 - 1  # until next month, not a rate's second


@pytest.fixture
def key_store(keyed_home: Path) -> Iterator[KeyStore]:
    registry = open_home(keyed_home)
    try:
        yield KeyStore(registry.store)
    finally:
        registry.close()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """Key names in Redis no other test (or server) uses; deleted afterwards."""
    if not _redis_available():
        pytest.skip(f"Redis is not reachable at {REDIS_URL}")
    import redis

    prefix = f"test-quota-{uuid.uuid4().hex[:8]}:"
    yield prefix
    with redis.Redis.from_url(REDIS_URL) as client:
        for name in client.scan_iter(f"{prefix}*"):
            client.delete(name)


def _redis_key(prefix: str, token: str) -> str:
    """The name of the key's counter for this month in Redis."""
    import redis

    with redis.Redis.from_url(REDIS_URL) as client:
        (name,) = client.scan_iter(f"{prefix}quota:{Keys.id_of(token)}:*")
    return str(name.decode())


def _redis(command: str, *args: object) -> object:
    import redis

    with redis.Redis.from_url(REDIS_URL) as client:
        return client.execute_command(command, *args)


@asynccontextmanager
async def _in_redis(prefix: str, url: str = REDIS_URL) -> AsyncIterator[RedisBuckets]:
    """Buckets and counters in Redis under ``prefix`` (made on the running loop, which its client
    belongs to)."""
    buckets = RedisBuckets(url, prefix=f"{prefix}bucket:", quota_prefix=f"{prefix}quota:", timeout=2.0)
    try:
        yield buckets
    finally:
        await buckets.close()


async def _admit(gates: list[Gate], token: str, requests: int, permission: str = "infer") -> int:
    """``requests`` admissions at once, round robin over ``gates``; each admitted one is used as a
    served request is (counted for the usage records). How many were admitted."""

    async def one(gate: Gate) -> int:
        try:
            principal = await gate.admit(token, "127.0.0.1", permission, "credit")
        except RateLimited:
            return 0
        gate.count(principal, "credit", rows=1, error=False, bytes_in=10, bytes_out=10)
        return 1

    return sum(await asyncio.gather(*(one(gates[i % len(gates)]) for i in range(requests))))


def _written(gates: list[Gate]) -> None:
    """What the workers' once-a-second duty does, then every worker reading the totals again: usage
    written to the records, and each worker's floor the records' total. (A worker that has not read
    another's usage yet seeds a lost counter lower, by at most that usage: about a second's.)"""
    for gate in gates:
        gate.flush()
    for gate in gates:
        gate.reload()


def test_a_lost_counter_is_seeded_again_from_the_usage_records(
    keyed_home: Path, key_store: KeyStore, redis_prefix: str
) -> None:
    """Redis restarted, or the counter evicted: the next request counts from the usage records, so
    the month's written usage is never forgotten (at most the last second's, not yet written)."""
    token = make_key(keyed_home, "consumer", ["credit*"], quota=10)

    async def scenario() -> None:
        async with _in_redis(redis_prefix) as shared:
            replicas = [Gate(key_store, shared), Gate(key_store, shared)]
            assert await _admit(replicas, token, 6) == 6
            _written(replicas)
            _redis("DEL", _redis_key(redis_prefix, token))
            assert await _admit(replicas, token, 10) == 4
            # A garbage or negative counter (written by hand) cannot lower the count below the
            # records either: everything written so far stays counted.
            _written(replicas)
            for tampered in ("not a number", "-1000000"):
                _redis("SET", _redis_key(redis_prefix, token), tampered)
                assert await _admit(replicas, token, 5) == 0
            # a gate started later (a new replica) reads the records and agrees
            assert await _admit([Gate(key_store, shared)], token, 3) == 0

    asyncio.run(scenario())


def test_without_redis_each_server_still_holds_the_quota(
    keyed_home: Path, key_store: KeyStore, redis_prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis away: the circuit breaker turns to this server's counter (the bucket file its workers
    share), which starts from the usage records — so what was used before the outage still counts,
    and the workers of one server still share one quota."""
    token = make_key(keyed_home, "consumer", ["credit*"], quota=12)

    async def scenario() -> None:
        async with _in_redis(redis_prefix) as shared:
            before = Gate(key_store, shared)
            assert await _admit([before], token, 5) == 5
            before.flush()
        dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there: refused at once
        async with _in_redis(redis_prefix, dead) as away:
            file = FileBuckets(tmp_path / "buckets")
            try:
                workers = [Gate(key_store, away, fallback=file), Gate(key_store, away, fallback=file)]
                assert await _admit(workers, token, 20) == 12 - 5
            finally:
                file.close()
        assert "limiting per server" in caplog.text

    asyncio.run(scenario())


@pytest.fixture(params=["redis", "file", "local"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@asynccontextmanager
async def _store(kind: str, prefix: str, directory: Path) -> AsyncIterator[Buckets]:
    if kind == "redis":
        async with _in_redis(prefix) as shared:
            yield shared
    elif kind == "file":
        file = FileBuckets(directory / "buckets")
        try:
            yield file
        finally:
            file.close()
    else:
        yield LocalBuckets()


def test_rate_and_quota_are_settled_in_one_step(
    keyed_home: Path, key_store: KeyStore, store_kind: str, tmp_path: Path
) -> None:
    """A request refused for the rate is not counted against the quota, and one refused for the quota
    takes no token: on every kind of store."""
    if store_kind == "redis" and not _redis_available():
        pytest.skip(f"Redis is not reachable at {REDIS_URL}")
    token = make_key(keyed_home, "consumer", ["credit*"], quota=3, rate=0.01)  # one request, then 100 s
    prefix = f"test-quota-{uuid.uuid4().hex[:8]}:"

    async def scenario() -> None:
        async with _store(store_kind, prefix, tmp_path) as buckets:
            gate = Gate(key_store, buckets)
            assert await _admit([gate], token, 5) == 1  # the rest waited for a token, uncounted
            with pytest.raises(RateLimited, match="over its rate") as refused:
                await gate.admit(token, "127.0.0.1", "infer", "credit")
            assert refused.value.retry_after > 50
            # Two more each time a token is there (updated by hand: no test waits 100 s):
            key_store.update(Keys.id_of(token), rate=1_000_000.0, actor="local:test")
            gate.reload()
            assert await _admit([gate], token, 5) == 2
            key_store.update(Keys.id_of(token), rate=0.01, actor="local:test")
            gate.reload()
            for _ in range(3):  # spent: refused for the quota, and no token taken
                with pytest.raises(RateLimited, match="quota of 3 requests") as spent:
                    await gate.admit(token, "127.0.0.1", "infer", "credit")
                assert spent.value.retry_after >= 86400 - 1
            # raised: the token the refusals did not take is still there
            key_store.update(Keys.id_of(token), quota=4, actor="local:test")
            gate.reload()
            assert await _admit([gate], token, 3) == 1

    try:
        asyncio.run(scenario())
    finally:
        if store_kind == "redis":
            import redis

            with redis.Redis.from_url(REDIS_URL) as client:
                for name in client.scan_iter(f"{prefix}*"):
                    client.delete(name)


def test_reads_spend_no_quota_and_are_refused_once_it_is_spent(
    keyed_home: Path, key_store: KeyStore, tmp_path: Path
) -> None:
    """Only inference is charged (what usage records count): a client polling model metadata keeps
    its quota; once the quota is used up, the key's other requests are refused as well."""
    token = make_key(keyed_home, "consumer", ["credit*"], quota=4)

    async def scenario() -> None:
        file = FileBuckets(tmp_path / "buckets")
        try:
            gate = Gate(key_store, file)
            for _ in range(20):
                await gate.admit(token, "127.0.0.1", "read", "credit")
            assert await _admit([gate], token, 10) == 4
            gate.flush()
            with pytest.raises(RateLimited, match="quota"):
                await gate.admit(token, "127.0.0.1", "read", "credit")
        finally:
            file.close()

    asyncio.run(scenario())


def test_a_lowered_quota_refuses_at_once(keyed_home: Path, key_store: KeyStore, tmp_path: Path) -> None:
    token = make_key(keyed_home, "consumer", ["credit*"], quota=100)

    async def scenario() -> None:
        file = FileBuckets(tmp_path / "buckets")
        try:
            gate = Gate(key_store, file)
            assert await _admit([gate], token, 8) == 8
            key_store.update(Keys.id_of(token), quota=5, actor="local:test")
            gate.reload()
            assert await _admit([gate], token, 3) == 0
        finally:
            file.close()

    asyncio.run(scenario())


def test_the_month_turns_over(keyed_home: Path, key_store: KeyStore, redis_prefix: str) -> None:
    """A new month is a new counter, and last month's totals are not its floor: the totals a worker
    read in the last second of a month are labelled with that month, so in the first second of the
    next (before the next read) they are not taken for it. Each counter expires a day after its
    month ends. The gate's clock is set: no test waits for midnight on the first."""
    token = make_key(keyed_home, "consumer", ["credit*"], quota=5)
    clock = [calendar.timegm((2031, 1, 31, 23, 59, 59, 0, 0, 0)) + 0.5]

    async def scenario() -> None:
        async with _in_redis(redis_prefix) as shared:
            gate = Gate(key_store, shared, clock=lambda: clock[0])
            assert await _admit([gate], token, 10) == 5
            gate.flush()  # the records hold 5 requests, read as January's
            clock[0] += 1.0  # 1 February, 00:00:00.5
            assert await _admit([gate], token, 10) == 5
            with pytest.raises(RateLimited) as spent:
                await gate.admit(token, "127.0.0.1", "infer", "credit")
            assert spent.value.retry_after == 28 * 86400 - 0.5  # until 1 March

    asyncio.run(scenario())
    key_id = Keys.id_of(token)
    for month, ends in (("2031-01", (2031, 2, 1)), ("2031-02", (2031, 3, 1))):
        name = f"{redis_prefix}quota:{key_id}:{month}"
        assert _redis("GET", name) == b"5"
        assert _redis("EXPIRETIME", name) == calendar.timegm((*ends, 0, 0, 0, 0, 0, 0)) + 86400
