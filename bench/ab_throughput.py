"""Throughput and latency of this checkout (B) against a baseline checkout (A), same model, same load,
secure defaults (an API key on every request, one worker): each round starts A's and B's server in turn
pinned to CPU 0 and drives it with wrk on CPU 1 at concurrency 1 and 64, alternating which goes first.
Prints every measurement and the median B/A ratio of req/s and p99 per concurrency.

    .venv/bin/python bench/ab_throughput.py --a-source OLD_CHECKOUT/src --home HOME --model small \\
        --body body.json --key mpk_... [--seconds 10] [--rounds 4]

A's server runs from ``--a-source`` (PYTHONPATH) in this virtualenv; both serve the same ``--home``, one
at a time. Needs ``wrk``; talks only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from monitoring_paired import wait_ready

HERE = Path(__file__).resolve().parent


def _wrk(port: int, args: argparse.Namespace, connections: int) -> tuple[float, float, int]:
    url = f"http://127.0.0.1:{port}/v2/models/{args.model}/infer"
    load = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{args.seconds}s",
        "--latency",
        "-s",
        str(HERE / "keyed.lua"),
    ]
    result = subprocess.run(
        ["taskset", "-c", "1", *load, url],
        env={**os.environ, "WRK_BODY_FILE": str(args.body), "WRK_KEY": args.key},
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"RESULT rps=([\d.]+) p50_us=(\d+) p99_us=(\d+) non2xx=(\d+)", result.stdout)
    if found is None:
        raise SystemExit(f"wrk printed no result: {result.stdout[-500:]}")
    return float(found.group(1)), int(found.group(3)) / 1000, int(found.group(4))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--a-source", type=Path, required=True, help="src directory of the baseline")
    parser.add_argument("--b-source", type=Path, help="src directory of B (default: this checkout)")
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--body", type=Path, required=True)
    parser.add_argument("--key", required=True, help="an API key of --home (consumer)")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--port", type=int, default=9360)
    args = parser.parse_args()
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for round_ in range(args.rounds):
        for name in ("A", "B") if round_ % 2 == 0 else ("B", "A"):
            env = {**os.environ, "MODELPORT_HOME": str(args.home), "MODELPORT_ACCESS_LOG": "false"}
            command = [str(Path(sys.executable).with_name("modelport"))]
            source = args.a_source if name == "A" else args.b_source
            if source is not None:
                env["PYTHONPATH"] = str(source.resolve())
                command = [sys.executable, "-m", "modelport.cli.main"]
            server = subprocess.Popen(
                ["taskset", "-c", "0", *command, "serve", "--port", str(args.port)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                wait_ready(args.port)
                _wrk(args.port, args, 8)  # warm-up
                for connections in (1, 64):
                    rps, p99, errors = _wrk(args.port, args, connections)
                    if errors:
                        raise SystemExit(f"{name}: {errors} non-2xx answers")
                    results.setdefault((name, connections), []).append((rps, p99))
                    print(
                        f"round {round_ + 1} {name} c={connections}: {rps:,.0f} req/s, p99 {p99:.2f} ms",
                        flush=True,
                    )
            finally:
                server.terminate()
                server.wait(timeout=30)
    for connections in (1, 64):
        a, b = results[("A", connections)], results[("B", connections)]
        rps = statistics.median(y[0] / x[0] for x, y in zip(a, b, strict=True))
        p99 = statistics.median(y[1] / x[1] for x, y in zip(a, b, strict=True))
        summary = [
            f"{name} {statistics.median(x[0] for x in runs):,.0f} req/s p99 "
            f"{statistics.median(x[1] for x in runs):.2f} ms"
            for name, runs in (("A", a), ("B", b))
        ]
        print(f"c={connections}: " + " | ".join(summary) + f" | B/A req/s {rps:.3f}, p99 {p99:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
