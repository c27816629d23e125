"""Latency of two servers measured at the same moment under the same fixed request rate: both pinned
to CPU 0, each sent ``--rate`` requests per second (open loop: a request is sent at its scheduled time
whether or not earlier ones have been answered, and its latency counts from that time, so a stall is
not hidden by the client waiting) from one asyncio client on CPU 1 over ``--connections`` keep-alive
connections per server, the two schedules offset by half a period (which one leads alternates by
round). Rounds swap the ports. Prints p50/p99/p99.9 per server and round and the
median ratio of p99 (B / A).

    .venv/bin/python bench/paired_latency.py --a HOME_A --b HOME_B --model small --body body.json \
        [--rate 400] [--seconds 20] [--rounds 4] [--a-source OLD_CHECKOUT/src]

``--a-source`` runs server A from another checkout's ``src`` (the same virtualenv otherwise): a change
to the hot path measured against the commit before it, at the same moment.

Standard library only; talks only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from monitoring_paired import wait_ready


async def _connection(port: int, request: bytes, jobs: asyncio.Queue[float], latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while True:
            scheduled = await jobs.get()
            if scheduled < 0:
                return
            writer.write(request)
            await writer.drain()
            length = 0
            while True:
                line = await reader.readline()
                if not line:
                    raise ConnectionError("the server closed the connection")
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
                if line in (b"\r\n", b"\n"):
                    break
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - scheduled)
    finally:
        writer.close()


async def _load(
    port: int, path: str, body: bytes, rate: float, seconds: float, connections: int, offset: float = 0.0
) -> list[float]:
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    jobs: asyncio.Queue[float] = asyncio.Queue()
    latencies: list[float] = []
    workers = [asyncio.create_task(_connection(port, request, jobs, latencies)) for _ in range(connections)]
    start = time.perf_counter() + offset
    total = int(rate * seconds)
    for index in range(total):
        due = start + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        jobs.put_nowait(due)
    for _ in workers:
        jobs.put_nowait(-1.0)
    await asyncio.gather(*workers)
    return latencies


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def _round(
    ports: dict[str, int], args: argparse.Namespace, body: bytes, late: str
) -> dict[str, list[float]]:
    """Both loads at once; the ``late`` server's schedule is offset by half a period, so the two
    servers' requests interleave instead of arriving in pairs where one always waits for the other."""
    path = f"/v2/models/{args.model}/infer"
    half = 0.5 / args.rate
    warm = [_load(p, path, body, args.rate, 3, args.connections) for p in ports.values()]
    await asyncio.gather(*warm)
    loads = [
        _load(port, path, body, args.rate, args.seconds, args.connections, half if name == late else 0.0)
        for name, port in ports.items()
    ]
    results = await asyncio.gather(*loads)
    return dict(zip(ports, results, strict=True))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--a", type=Path, required=True, help="home of server A (the baseline)")
    parser.add_argument("--b", type=Path, required=True, help="home of server B")
    parser.add_argument("--model", required=True)
    parser.add_argument("--body", type=Path, required=True)
    parser.add_argument("--rate", type=float, default=400.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--port", type=int, default=9340)
    parser.add_argument("--a-source", type=Path, help="run server A from this src directory (baseline code)")
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})  # the client on CPU 1, the servers on CPU 0
    modelport = str(Path(sys.executable).with_name("modelport"))
    body = args.body.read_bytes()
    ratios = []
    for round_ in range(args.rounds):
        ports = {"A": args.port + round_ % 2, "B": args.port + 1 - round_ % 2}
        servers = []
        for name, home in (("A", args.a), ("B", args.b)):
            env = {**os.environ, "MODELPORT_HOME": str(home), "MODELPORT_ACCESS_LOG": "false"}
            command = [modelport]
            if name == "A" and args.a_source is not None:
                env["PYTHONPATH"] = str(args.a_source.resolve())
                command = [sys.executable, "-m", "modelport.cli.main"]
            servers.append(
                subprocess.Popen(
                    ["taskset", "-c", "0", *command, "serve", "--port", str(ports[name]), "--insecure-dev"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        try:
            for port in ports.values():
                wait_ready(port)
            results = asyncio.run(_round(ports, args, body, late="B" if round_ % 2 else "A"))
        finally:
            for server in servers:
                server.terminate()
            for server in servers:
                server.wait(timeout=30)
        line = []
        for name in ("A", "B"):
            values = results[name]
            p50, p99, p999 = (_quantile(values, q) for q in (0.5, 0.99, 0.999))
            line.append(f"{name}: n={len(values)} p50 {p50:.2f} ms p99 {p99:.2f} ms p99.9 {p999:.2f} ms")
        ratios.append(_quantile(results["B"], 0.99) / _quantile(results["A"], 0.99))
        print(f"round {round_ + 1}: " + " | ".join(line) + f" | p99 B/A {ratios[-1]:.3f}", flush=True)
    print(f"p99 B/A: median {statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
