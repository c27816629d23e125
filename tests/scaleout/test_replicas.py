"""Three replicas that agree within a second, behind HAProxy.

Three real `modelport serve` processes (one worker each, API keys on), each with a home of its own, on
one PostgreSQL registry (a fresh schema for this module), one artifact store and one Redis; three
HAProxy processes in front of them that differ only in what they retry (tests/scaleout/balancer.py).
All started once for the module.

- Propagation: an alias move, a key revocation and a release change, each committed through one
  replica's API, reach every replica — asked directly, not through the balancer — within 1 s of the
  commit's answer (measured; each replica polls the registry's change counter every 0.25 s).
- Rate limits and quotas: one budget per key across replicas, not one per replica.
- SIGTERM under load: no failed request (readiness fails first, the balancer stops sending, in-flight
  requests finish). SIGKILL under load: the failures counted with each retry policy.

Measured figures are printed (``pytest -s`` or ``-rP`` shows them).
"""

from __future__ import annotations

import contextlib
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pandas as pd
import pytest

from tests.conftest import FEATURES, _postgres_schema_url, until
from tests.scaleout.balancer import CONNECT_RETRY, FULL_RETRY, NO_RETRY, Balancer, haproxy, start_balancer
from tests.scaleout.cluster import INFER, Cluster, Replica, bearer
from tests.scaleout.load import Load
from tests.seaweed import S3Server
from tests.security.test_limits import paced

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(haproxy() is None, reason="HAProxy is not installed (make tools)"),
]

# A database number of its own: tests/security/test_limits.py uses 15. Flushed when the module ends.
REDIS_URL = "redis://127.0.0.1:6379/13"
BOUND = 1.0  # seconds: issue 16's bound for a change to reach every replica


def _redis() -> str | None:
    import redis

    try:
        return REDIS_URL if redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping() else None
    except redis.RedisError:
        return None


@dataclass
class Setup:
    cluster: Cluster
    balancers: dict[str, Balancer]  # by retry policy
    admin: str
    consumer: str

    @property
    def replicas(self) -> list[Replica]:
        return self.cluster.replicas

    def all_up(self) -> None:
        """Every replica running and seen up by every balancer (a test before may have stopped one)."""
        self.cluster.start_all()
        for balancer in self.balancers.values():
            balancer.wait_for({replica.name: "UP" for replica in self.replicas})


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory, data: pd.DataFrame, s3_server: S3Server
) -> Iterator[Setup]:
    from sklearn.linear_model import LogisticRegression

    with contextlib.contextmanager(_postgres_schema_url)() as database_url:
        root = tmp_path_factory.mktemp("scaleout")
        artifacts = s3_server.url(f"scaleout-{uuid.uuid4().hex[:8]}")  # the session's SeaweedFS
        cluster = Cluster(root, database_url, artifacts, _redis(), store_settings=s3_server.settings())
        registry = cluster.registry(create=True)
        try:  # three versions of credit; production on v1
            for number, c in enumerate((1.0, 0.01, 0.001), start=1):
                model = LogisticRegression(C=c, max_iter=500).fit(data[FEATURES], data["label"])
                alias = "production" if number == 1 else None
                registry.register(model, name="credit", sample=data, target="label", alias=alias)
        finally:
            registry.close()
        admin, consumer = cluster.make_key("admin"), cluster.make_key("consumer")
        cluster.add(3)
        balancers: dict[str, Balancer] = {}
        try:
            cluster.start_all()
            ports = [replica.port for replica in cluster.replicas]
            for policy in (FULL_RETRY, CONNECT_RETRY, NO_RETRY):
                balancers[policy] = start_balancer(ports, retry_on=policy)
            yield Setup(cluster, balancers, admin, consumer)
        finally:
            for balancer in balancers.values():
                balancer.stop()
            cluster.stop_all()
            if cluster.redis_url:
                import redis

                redis.Redis.from_url(cluster.redis_url).flushdb()


# -- propagation -----------------------------------------------------------------------------------


def _version(client: httpx.Client) -> str | None:
    response = client.post("/v2/models/credit/infer", json=INFER)
    return response.json()["model_version"] if response.status_code == 200 else None


def _until_every_replica(
    replicas: list[Replica], token: str, holds: Callable[[httpx.Client], bool], timeout: float = 5.0
) -> dict[str, float]:
    """Seconds from now until ``holds`` is true on each replica, asking them in turn (about a request
    per replica every few milliseconds); each must then keep holding for three more requests."""
    clients = {r.name: httpx.Client(base_url=r.url, headers=bearer(token), timeout=10) for r in replicas}
    start = time.monotonic()
    seen: dict[str, float] = {}
    try:
        while len(seen) < len(replicas):
            for replica in replicas:
                if replica.name not in seen and holds(clients[replica.name]):
                    seen[replica.name] = time.monotonic() - start
            assert time.monotonic() - start < timeout, f"after {timeout:g} s only {seen} reflect the change"
        for replica in replicas:
            assert all(holds(clients[replica.name]) for _ in range(3)), f"{replica.name} went back"
    finally:
        for client in clients.values():
            client.close()
    return seen


def _known(client: httpx.Client) -> bool:
    """Whether the replica knows the client's key, without using any of its rate or quota: an unknown
    path is answered 404 to a valid key and 401 to any other (the route table is not revealed)."""
    return client.get("/v2/no-such-route").status_code == 404


def _report(what: str, seen: dict[str, float]) -> float:
    slowest = max(seen.values())
    print(
        f"propagation of {what}: {slowest * 1000:.0f} ms to all ({', '.join(f'{k} {v * 1000:.0f} ms' for k, v in seen.items())})"
    )
    return slowest


def _move(setup: Setup, version: int) -> httpx.Response:
    """Point credit@production at ``version`` through the first replica's API (answers after commit)."""
    return httpx.put(
        f"{setup.replicas[0].url}/api/v1/models/credit/aliases/production",
        json={"version": version},
        headers=bearer(setup.admin),
        timeout=30,
    )


def test_an_alias_move_reaches_every_replica_within_a_second(setup: Setup) -> None:
    setup.all_up()
    assert _move(setup, 1).status_code == 200
    _until_every_replica(setup.replicas, setup.consumer, lambda c: _version(c) == "1")
    moved = _move(setup, 2)
    assert moved.status_code == 200, moved.text
    # Each replica has served v1 through production: it loads and warms v2 before it switches, and
    # that is inside the measured time.
    seen = _until_every_replica(setup.replicas, setup.consumer, lambda c: _version(c) == "2")
    assert _report("an alias move", seen) <= BOUND
    assert _move(setup, 1).status_code == 200


def test_a_revoked_key_is_refused_by_every_replica_within_a_second(setup: Setup) -> None:
    setup.all_up()
    token = setup.cluster.make_key("consumer")
    _until_every_replica(setup.replicas, token, _known)
    key_id = token.split("_")[1]
    revoked = httpx.delete(f"{setup.replicas[0].url}/api/v1/keys/{key_id}", headers=bearer(setup.admin))
    assert revoked.status_code == 200, revoked.text

    def refused(client: httpx.Client) -> bool:
        return client.post("/v2/models/credit/infer", json=INFER).status_code == 401

    seen = _until_every_replica(setup.replicas, token, refused)
    assert _report("a key revocation", seen) <= BOUND
    # and through the balancer, on whichever replica it lands
    with httpx.Client(base_url=setup.balancers[FULL_RETRY].url, headers=bearer(token)) as client:
        assert {client.post("/v2/models/credit/infer", json=INFER).status_code for _ in range(6)} == {401}


def test_a_release_change_reaches_every_replica_within_a_second(setup: Setup) -> None:
    setup.all_up()
    release = f"{setup.replicas[0].url}/api/v1/models/credit/aliases/production/release"
    _until_every_replica(setup.replicas, setup.consumer, lambda c: _version(c) == "1")
    # 99.99 % to the canary: one request in 10,000 still goes to the primary, so a replica shows the
    # canary on its first request after the change (the policy itself is tested in tests/releases).
    started = httpx.put(release, json={"canary": 3, "weight": 99.99}, headers=bearer(setup.admin), timeout=30)
    try:
        assert started.status_code == 200, started.text
        seen = _until_every_replica(setup.replicas, setup.consumer, lambda c: _version(c) == "3")
        assert _report("a release start (canary)", seen) <= BOUND
    finally:
        stopped = httpx.delete(release, headers=bearer(setup.admin), timeout=30)
        assert stopped.status_code == 200, stopped.text
    seen = _until_every_replica(setup.replicas, setup.consumer, lambda c: _version(c) == "1")
    assert _report("a release stop", seen) <= BOUND


# -- rate limits and quotas ------------------------------------------------------------------------


def test_a_rate_limit_is_one_budget_across_replicas(setup: Setup) -> None:
    if setup.cluster.redis_url is None:
        pytest.skip(f"Redis is not reachable at {REDIS_URL}")
    setup.all_up()
    token = setup.cluster.make_key("consumer", rate=30.0)
    _until_every_replica(setup.replicas, token, _known)
    # Twice the rate, spread over three replicas, through the balancer and around it (a client that
    # asks each replica directly to collect a budget per replica): a bucket per replica would admit
    # all of it (3 × 30/s is more than the 60/s offered).
    seconds = 3.0
    urls = [setup.balancers[FULL_RETRY].url, *(replica.url for replica in setup.replicas)]
    statuses = paced(urls, token, seconds, per_second=60)
    allowed = statuses.count(200)
    expected = 30 + 30 * seconds  # the one-second burst, then the rate
    print(
        f"rate limit 30/s over three replicas: {allowed} admitted of {len(statuses)} (expected {expected:g})"
    )
    assert statuses.count(200) + statuses.count(429) == len(statuses), set(statuses)
    assert abs(allowed - expected) <= 0.1 * expected, (allowed, expected)


def _burst_on_every_replica(setup: Setup, token: str, requests: int) -> list[int]:
    """``requests`` inference requests, one after another, round robin over the replicas directly (a
    client that bypasses the balancer to collect a budget per replica)."""
    clients = [httpx.Client(base_url=r.url, headers=bearer(token), timeout=10) for r in setup.replicas]
    try:
        return [
            clients[i % len(clients)].post("/v2/models/credit/infer", json=INFER).status_code
            for i in range(requests)
        ]
    finally:
        for client in clients:
            client.close()


def test_a_quota_is_one_budget_across_replicas_once_counted(setup: Setup) -> None:
    """Once a key's quota is spent, every replica keeps refusing it: the shared counter refuses
    inference at once, and the usage each replica writes about once a second reaches every other
    replica's view of the month's totals."""
    setup.all_up()
    quota = 30
    token = setup.cluster.make_key("consumer", quota=quota)
    _until_every_replica(setup.replicas, token, _known)
    statuses = _burst_on_every_replica(setup, token, 3 * quota)
    admitted = statuses.count(200)
    assert set(statuses) <= {200, 429}, set(statuses)

    def refused_everywhere() -> bool:
        return set(_burst_on_every_replica(setup, token, len(setup.replicas))) == {429}

    started = time.monotonic()
    until(refused_everywhere, timeout=10, interval=0.05)
    print(
        f"quota {quota} over three replicas, {3 * quota} requests at once: {admitted} admitted "
        f"(over by {admitted - quota}); every replica refuses {time.monotonic() - started:.2f} s later"
    )
    assert admitted == quota if setup.cluster.redis_url is not None else admitted >= quota


def test_a_quota_burst_spread_over_replicas_is_admitted_once(setup: Setup) -> None:
    """Each inference request is charged at admission on one counter per key and month in Redis
    (security/ratelimit.py), so three times the quota spread over the replicas admits the quota
    exactly — not a quota per replica, and without waiting for usage to reach the database."""
    if setup.cluster.redis_url is None:
        pytest.skip(f"Redis is not reachable at {REDIS_URL}")
    setup.all_up()
    quota = 30
    token = setup.cluster.make_key("consumer", quota=quota)
    _until_every_replica(setup.replicas, token, _known)
    statuses = _burst_on_every_replica(setup, token, 3 * quota)
    assert set(statuses) <= {200, 429}, set(statuses)
    assert statuses.count(200) == quota, statuses.count(200)


# -- a replica stopped under load ------------------------------------------------------------------


def _loads(setup: Setup, threads: int = 2) -> dict[str, Load]:
    """A steady load through each balancer, running with answers counted."""
    loads = {
        policy: Load(b.url, setup.consumer, threads=threads).start() for policy, b in setup.balancers.items()
    }
    for load in loads.values():
        until(lambda load=load: load.ok >= 30, timeout=20, interval=0.02)  # type: ignore[misc]
    return loads


def test_a_replica_sigtermed_under_load_fails_no_request(setup: Setup) -> None:
    setup.all_up()
    victim = setup.replicas[2]
    loads = _loads(setup)
    try:
        assert victim.process is not None
        stopping = time.monotonic()
        victim.process.send_signal(signal.SIGTERM)
        # Readiness fails at once; every balancer must mark the replica down before its socket closes
        # (``drain_seconds`` later).
        for balancer in setup.balancers.values():
            balancer.wait_for({victim.name: "DOWN"}, timeout=setup.cluster.drain_seconds)
        marked_down = time.monotonic() - stopping
        code = setup.cluster.wait(victim)
        exited = time.monotonic() - stopping
        before = {policy: load.ok for policy, load in loads.items()}
        for policy, load in loads.items():  # the others carry on alone
            until(lambda load=load, n=before[policy]: load.ok >= n + 30, timeout=20, interval=0.02)  # type: ignore[misc]
    finally:
        for load in loads.values():
            load.stop()
    print(
        f"SIGTERM under load: marked down after {marked_down * 1000:.0f} ms, exited after {exited:.2f} s; "
        + "; ".join(f"retry-on {policy}: {load.describe()}" for policy, load in loads.items())
    )
    assert code in (0, -signal.SIGTERM), code
    for policy, load in loads.items():
        assert load.failed == 0, (policy, load.describe())


def test_a_replica_sigkilled_under_load(setup: Setup) -> None:
    """With HAProxy's default retry (connection failures only) the requests the dead replica had taken
    fail — at most one per client thread, as each waits for its answer before sending the next; with
    no retry at all, also those sent to it until the health check marks it down (not bounded here:
    8–27 measured); with FULL_RETRY, only a request whose answer the replica had begun to send when
    it died (HAProxy's ``SD``: nobody can send it again)."""
    setup.all_up()
    victim = setup.replicas[1]
    threads = 2
    loads = _loads(setup, threads)
    try:
        setup.cluster.stop(victim, signal.SIGKILL)
        for balancer in setup.balancers.values():
            balancer.wait_for({victim.name: "DOWN"})
        before = {policy: load.ok for policy, load in loads.items()}
        for policy, load in loads.items():
            until(lambda load=load, n=before[policy]: load.ok >= n + 30, timeout=20, interval=0.02)  # type: ignore[misc]
    finally:
        for load in loads.values():
            load.stop()
    cut = {policy: balancer.terminations()["SD"] for policy, balancer in setup.balancers.items()}
    print(
        "SIGKILL under load: "
        + "; ".join(f"retry-on {p}: {load.describe()}, {cut[p]} cut mid-answer" for p, load in loads.items())
    )
    assert loads[FULL_RETRY].failed == cut[FULL_RETRY] <= threads, loads[FULL_RETRY].describe()
    assert loads[CONNECT_RETRY].failed <= threads, loads[CONNECT_RETRY].describe()
