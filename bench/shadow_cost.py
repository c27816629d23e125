"""The cost of a shadow to the primary: the same server and load with and without `--shadow` on the
alias, one server at a time (pinned to CPU 0, wrk c=64 on CPU 1), alternating A B B A … so drift of the
machine falls on both. Prints each run and the medians of throughput and p99.

    .venv/bin/python bench/shadow_cost.py HOME MODEL BODY_FILE [--rounds 6] [--seconds 15]

HOME is a registry where MODEL's alias ``production`` points at a version and a second version exists
(bench/servers/modelport.sh --spec small, then register the same file again). The script copies HOME
twice and starts a shadow release on one copy. Talks only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from monitoring_paired import RESULT, wait_ready, wrk


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("home", type=Path)
    parser.add_argument("model")
    parser.add_argument("body", type=Path)
    parser.add_argument("--shadow", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--port", type=int, default=9320)
    args = parser.parse_args()
    modelport = str(Path(sys.executable).with_name("modelport"))
    work = Path(tempfile.mkdtemp(prefix="shadow-cost-"))
    homes = {"off": work / "off", "shadow": work / "shadow"}
    for home in homes.values():
        shutil.copytree(args.home, home, ignore=shutil.ignore_patterns("predictions", "run"))
    subprocess.run(
        [modelport, "release", "start", f"{args.model}@production", "--shadow", str(args.shadow)],
        env={**os.environ, "MODELPORT_HOME": str(homes["shadow"])},
        check=True,
    )
    results: dict[str, list[tuple[float, float]]] = {"off": [], "shadow": []}
    order = ["off", "shadow", "shadow", "off"]
    for round_ in range(args.rounds):
        name = order[round_ % 4]
        env = {**os.environ, "MODELPORT_HOME": str(homes[name]), "MODELPORT_ACCESS_LOG": "false"}
        process = subprocess.Popen(
            ["taskset", "-c", "0", modelport, "serve", "--port", str(args.port), "--insecure-dev"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_ready(args.port)
            wrk(args.port, args.model, args.body, 3).communicate()
            out, _ = wrk(args.port, args.model, args.body, args.seconds).communicate()
        finally:
            process.terminate()
            process.wait(timeout=30)
        found = RESULT.search(out)
        if found is None:
            raise SystemExit(f"wrk printed no result: {out}")
        rps, p99 = float(found[1]), int(found[3]) / 1000
        results[name].append((rps, p99))
        print(
            f"round {round_ + 1}: {name:6s} {rps:8,.0f} req/s  p99 {p99:6.1f} ms  non-2xx {found[4]}",
            flush=True,
        )
    shadow_status = subprocess.run(
        [modelport, "release", "status", f"{args.model}@production", "--json"],
        env={**os.environ, "MODELPORT_HOME": str(homes["shadow"])},
        capture_output=True,
        text=True,
        check=True,
    )
    print(shadow_status.stdout)
    off_rps = statistics.median(r for r, _ in results["off"])
    on_rps = statistics.median(r for r, _ in results["shadow"])
    off_p99 = statistics.median(p for _, p in results["off"])
    on_p99 = statistics.median(p for _, p in results["shadow"])
    print(f"median req/s: off {off_rps:,.0f}, shadow {on_rps:,.0f} (ratio {on_rps / off_rps:.3f})")
    print(f"median p99 ms: off {off_p99:.1f}, shadow {on_p99:.1f} (ratio {on_p99 / off_p99:.3f})")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
