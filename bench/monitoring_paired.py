"""The cost of monitoring as a ratio measured at one moment: several servers of the same home, each with
its own monitoring configuration, all pinned to CPU 0 and each loaded by its own wrk (c=64) on CPU 1,
at the same time. The scheduler splits the core between the servers, so the ratio of their throughputs
is the inverse ratio of their CPU time per request — measured together, so the machine's drift from
one minute to the next (±20 % on this shared machine) cancels. Ports rotate every round.

    .venv/bin/python bench/monitoring_paired.py HOME MODEL BODY_FILE [--rounds 5] [--seconds 15]

HOME is a registry with MODEL registered (bench/servers/modelport.sh --spec small makes one); set the
model's sampling first (`modelport log-policy MODEL --sample 0.1`). Prints one line per round and the
median ratio (range) of each configuration to "off". Talks only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CONFIGS = {
    "off": {
        "MODELPORT_METRICS": "false",
        "MODELPORT_ACCESS_LOG": "false",
        "MODELPORT_PREDICTION_LOG": "false",
    },
    "metrics": {
        "MODELPORT_METRICS": "true",
        "MODELPORT_ACCESS_LOG": "false",
        "MODELPORT_PREDICTION_LOG": "false",
    },
    "metrics+sampled": {
        "MODELPORT_METRICS": "true",
        "MODELPORT_ACCESS_LOG": "false",
        "MODELPORT_PREDICTION_LOG": "true",
    },
    "all-on": {
        "MODELPORT_METRICS": "true",
        "MODELPORT_ACCESS_LOG": "true",
        "MODELPORT_PREDICTION_LOG": "true",
    },
}
RESULT = re.compile(r"RESULT rps=([\d.]+) p50_us=(\d+) p99_us=(\d+) non2xx=(\d+)")
HERE = Path(__file__).resolve().parent


def wait_ready(port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the server on port {port} did not get ready")
        time.sleep(0.1)


def wrk(port: int, model: str, body: Path, seconds: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            "taskset",
            "-c",
            "1",
            "wrk",
            "-t1",
            "-c64",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(HERE / "keyed.lua"),
            f"http://127.0.0.1:{port}/v2/models/{model}/infer",
        ],
        env={**os.environ, "WRK_BODY_FILE": str(body)},
        stdout=subprocess.PIPE,
        text=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("home", type=Path)
    parser.add_argument("model")
    parser.add_argument("body", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--configs", default="off,metrics+sampled,all-on")
    parser.add_argument("--port", type=int, default=9300)
    args = parser.parse_args()
    names = args.configs.split(",")
    modelport = str(Path(sys.executable).with_name("modelport"))
    shutil.rmtree(args.home / "predictions", ignore_errors=True)  # each run starts with an empty log
    ratios: dict[str, list[float]] = {name: [] for name in names if name != "off"}
    p99s: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(args.rounds):
        servers = []
        for index, name in enumerate(names):
            port = args.port + (index + round_) % len(names)
            env = {**os.environ, **CONFIGS[name], "MODELPORT_HOME": str(args.home)}
            process = subprocess.Popen(
                ["taskset", "-c", "0", modelport, "serve", "--port", str(port), "--insecure-dev"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,  # the access log's lines: written, then thrown away
            )
            servers.append((name, port, process))
        try:
            for _, port, _ in servers:
                wait_ready(port)
            for load in [wrk(port, args.model, args.body, 3) for _, port, _ in servers]:
                load.communicate()  # warm-up, all at once
            loads = [wrk(port, args.model, args.body, args.seconds) for _, port, _ in servers]
            results = {}
            for (name, _, _), load in zip(servers, loads, strict=True):
                out, _ = load.communicate()
                found = RESULT.search(out)
                if found is None:
                    raise SystemExit(f"wrk printed no result for {name}: {out}")
                results[name] = (float(found[1]), int(found[3]) / 1000, int(found[4]))
        finally:
            for _, _, process in servers:
                process.terminate()
            for _, _, process in servers:
                process.wait(timeout=30)
        base = results["off"][0]
        line = []
        for name in names:
            rps, p99, bad = results[name]
            p99s[name].append(p99)
            if name != "off":
                ratios[name].append(rps / base)
            line.append(f"{name} {rps:,.0f} req/s p99 {p99:.1f} ms{' non-2xx ' + str(bad) if bad else ''}")
        print(f"round {round_ + 1}: " + " | ".join(line), flush=True)
    for name, values in ratios.items():
        median, p99, p99_off = (statistics.median(v) for v in (values, p99s[name], p99s["off"]))
        print(
            f"{name} / off: median {median:.3f} (range {min(values):.3f}-{max(values):.3f});"
            f" p99 median {p99:.1f} ms vs off {p99_off:.1f} ms"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
