"""Replicas behind HAProxy: throughput and p99 with 1, 2 and 3 replicas, and how long a change takes to
reach every replica.

    .venv/bin/python bench/replicas.py [--model small] [--seconds 10] [--rounds 2] [--propagation 20]

Each replica is a `modelport serve` (one worker, API keys on) with a home of its own, on one PostgreSQL
registry (a fresh schema of ``--database-url``, dropped at the end), one artifact directory and one
Redis (database 12, flushed at the end); HAProxy (tests/scaleout/balancer.py, the configuration of
docs/deploy.md, ``retry-on`` on) balances round robin. The load is the keyed harness of issue 8: wrk
(c=64, one thread) with `bench/keyed.lua` and a consumer key, against the balancer.

Pinning: replica i is pinned to CPU i mod (number of CPUs); wrk and HAProxy are not pinned. On a
machine with fewer cores than replicas + load generator the replicas share cores with each other and
with wrk — the table then shows the cost of the extra hop and the sharing, not a scale-out.

Propagation: with three replicas, idle and then under the same wrk load, ``--propagation`` alias moves
(production between v1 and v2, through one replica's API) and as many key revocations; for each, the
time from the API's answer (the commit) until every replica, asked directly in turn, reflects it.
The model and its sample come from the peer harness (/work/shared/bench/setup.sh → ~/.cache/modelport-bench).
Talks only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pandas as pd
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.scaleout.balancer import FULL_RETRY, start_balancer  # noqa: E402
from tests.scaleout.cluster import Cluster, Replica, bearer  # noqa: E402

RESULT = re.compile(r"RESULT rps=([\d.]+) p50_us=(\d+) p99_us=(\d+) non2xx=(\d+)")
REDIS_URL = "redis://127.0.0.1:6379/12"


@contextlib.contextmanager
def schema(url: str) -> Iterator[str]:
    """A fresh PostgreSQL schema of ``url`` (dropped on the way out): its URL."""
    parsed = make_url(url).set(drivername="postgresql+psycopg")
    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(parsed)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    try:
        yield parsed.update_query_dict({"options": f"-csearch_path={name}"}).render_as_string(
            hide_password=False
        )
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()


def wrk_command(url: str, seconds: int, connections: int) -> list[str]:
    script = str(ROOT / "bench/keyed.lua")
    return ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script, url]


def wrk(url: str, token: str, body: Path, seconds: int, connections: int) -> tuple[float, float, int]:
    """(requests/s, p99 ms, non-2xx) of one wrk run."""
    out = subprocess.run(
        wrk_command(url, seconds, connections),
        env={**os.environ, "WRK_BODY_FILE": str(body), "WRK_KEY": token},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = RESULT.search(out)
    assert match, out
    return float(match[1]), int(match[3]) / 1000, int(match[4])


def until_every_replica(
    replicas: list[Replica], token: str, holds: Callable[[httpx.Client], bool], timeout: float = 10.0
) -> float:
    """Seconds from now until ``holds`` is true on every replica, asking each in turn."""
    clients = {r.name: httpx.Client(base_url=r.url, headers=bearer(token), timeout=10) for r in replicas}
    start = time.monotonic()
    seen: set[str] = set()
    try:
        while len(seen) < len(replicas):
            for replica in replicas:
                if replica.name not in seen and holds(clients[replica.name]):
                    seen.add(replica.name)
            if time.monotonic() - start > timeout:
                raise RuntimeError(f"only {seen} reflect the change after {timeout:g} s")
        return time.monotonic() - start
    finally:
        for client in clients.values():
            client.close()


def propagation(
    cluster: Cluster, admin: str, model: str, body: dict[str, object], times: int
) -> dict[str, list[float]]:
    replicas = cluster.replicas
    infer = f"/v2/models/{model}/infer"
    consumer = cluster.make_key("consumer")
    until_every_replica(replicas, consumer, lambda c: c.get("/v2/none").status_code == 404)
    moves, revocations = [], []
    alias_url = f"{replicas[0].url}/api/v1/models/{model}/aliases/production"
    for i in range(times):
        version = 2 if i % 2 == 0 else 1
        answer = httpx.put(alias_url, json={"version": version}, headers=bearer(admin), timeout=30)
        answer.raise_for_status()
        moves.append(
            until_every_replica(
                replicas,
                consumer,
                lambda c, v=version: c.post(infer, json=body).json().get("model_version") == str(v),
            )
        )
        token = cluster.make_key("consumer")
        until_every_replica(replicas, token, lambda c: c.get("/v2/none").status_code == 404)
        revoked = httpx.delete(f"{replicas[0].url}/api/v1/keys/{token.split('_')[1]}", headers=bearer(admin))
        revoked.raise_for_status()
        revocations.append(
            until_every_replica(replicas, token, lambda c: c.post(infer, json=body).status_code == 401)
        )
    return {"alias move": moves, "key revocation": revocations}


def summary(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    return f"median {statistics.median(ms):.0f} ms, max {ms[-1]:.0f} ms (n={len(ms)})"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="small")
    parser.add_argument("--bench-home", type=Path, default=Path.home() / ".cache/modelport-bench")
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "MODELPORT_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--propagation", type=int, default=20)
    args = parser.parse_args()
    assert shutil.which("wrk"), "wrk is needed (apt-get install wrk)"
    onnx = args.bench_home / "models" / f"{args.model}.onnx"
    row = json.loads((args.bench_home / "data" / "row.json").read_text())
    body = {"inputs": [{"name": "input", "shape": [1, 12], "datatype": "FP64", "data": [row]}]}
    work = Path(tempfile.mkdtemp(prefix="bench-replicas-"))
    body_file = work / "body.json"
    body_file.write_text(json.dumps(body))
    cpus = sorted(os.sched_getaffinity(0))
    print(
        f"machine: {len(cpus)} CPUs ({os.uname().machine}); replica i pinned to CPU i mod {len(cpus)}; "
        f"wrk -t1 -c{args.connections} -d{args.seconds}s and HAProxy unpinned"
    )
    with schema(args.database_url) as database_url:
        cluster = Cluster(work, database_url, (work / "artifacts").as_uri(), REDIS_URL, drain_seconds=0)
        cluster.extra_env["MODELPORT_LOG_LEVEL"] = "WARNING"
        registry = cluster.registry(create=True)
        try:
            sample = pd.read_csv(args.bench_home / "data" / "batch_1m.csv", nrows=2000)
            for _ in range(2):
                registry.register(name=args.model, path=onnx, sample=sample, alias="production")
        finally:
            registry.close()
        admin, consumer = cluster.make_key("admin"), cluster.make_key("consumer")
        cluster.add(3, cpus=[{cpus[i % len(cpus)]} for i in range(3)])
        balancer = None
        try:
            rows = []
            for count in (1, 2, 3):
                for replica in cluster.replicas[:count]:
                    if not replica.running():
                        cluster.start(replica)
                if balancer is not None:
                    balancer.stop()
                balancer = start_balancer([r.port for r in cluster.replicas[:count]], retry_on=FULL_RETRY)
                url = f"{balancer.url}/v2/models/{args.model}/infer"
                wrk(url, consumer, body_file, 3, args.connections)  # warm-up
                runs = [
                    wrk(url, consumer, body_file, args.seconds, args.connections) for _ in range(args.rounds)
                ]
                rps = statistics.median(r[0] for r in runs)
                p99 = statistics.median(r[1] for r in runs)
                errors = sum(r[2] for r in runs)
                rows.append((count, rps, rps / count, p99, errors))
                print(
                    f"{count} replica(s): {rps:.0f} req/s ({rps / count:.0f} per replica), "
                    f"p99 {p99:.1f} ms, non-2xx {errors}"
                )
            direct = cluster.replicas[0]
            runs = [
                wrk(
                    f"{direct.url}/v2/models/{args.model}/infer",
                    consumer,
                    body_file,
                    args.seconds,
                    args.connections,
                )
                for _ in range(args.rounds)
            ]
            print(
                f"1 replica without the balancer: {statistics.median(r[0] for r in runs):.0f} req/s, "
                f"p99 {statistics.median(r[1] for r in runs):.1f} ms"
            )
            print("\n| replicas | req/s | req/s per replica | p99 ms | non-2xx |\n|---|---|---|---|---|")
            for count, rps, per, p99, errors in rows:
                print(f"| {count} | {rps:.0f} | {per:.0f} | {p99:.1f} | {errors} |")
            idle = propagation(cluster, admin, args.model, body, args.propagation)
            assert balancer is not None
            load = subprocess.Popen(
                wrk_command(f"{balancer.url}/v2/models/{args.model}/infer", 600, args.connections),
                env={**os.environ, "WRK_BODY_FILE": str(body_file), "WRK_KEY": consumer},
                stdout=subprocess.DEVNULL,
            )
            time.sleep(1)  # wrk connected and the replicas busy before the first change
            try:
                busy = propagation(cluster, admin, args.model, body, args.propagation)
            finally:
                load.send_signal(signal.SIGINT)
                load.wait(timeout=30)
            print("\npropagation (commit answered → every replica reflects it; poll 0.25 s):")
            for what in idle:
                print(f"  {what}: idle {summary(idle[what])}; under load {summary(busy[what])}")
        finally:
            if balancer is not None:
                balancer.stop()
            cluster.stop_all()
            import redis

            redis.Redis.from_url(REDIS_URL).flushdb()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
