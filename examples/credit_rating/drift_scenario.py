"""A drift scenario with the example model: calm traffic, then leverage creeping up to twice its level.

    .venv/bin/python examples/credit_rating/drift_scenario.py [--window 4] [--out docs/img/drift.png]

Trains and registers the credit-rating example in a fresh home (examples/credit_rating/out/drift-home),
logs every request, serves it on 127.0.0.1, sends six windows of traffic — three from the training
distribution, then leverage ×1.25, ×1.5 and ×2 — and draws ``modelport drift`` over those windows. The
chart in docs/monitoring.md was made this way.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
MODELPORT = str(Path(sys.executable).with_name("modelport"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=4.0, help="seconds per window")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "drift.png")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from generate import FEATURES, make_dataset
    from train import build_pipeline

    import modelport

    home = HERE / "out" / "drift-home"
    shutil.rmtree(home, ignore_errors=True)
    settings = modelport.Settings(home=home)
    modelport.open_registry(settings, create=True).close()
    data = make_dataset(6000, seed=7)
    model = build_pipeline(n_estimators=30).fit(data[FEATURES], data["rating"])
    modelport.register(model, name="credit-rating", sample=data, target="rating", settings=settings)
    env = {**os.environ, "MODELPORT_HOME": str(home), "MODELPORT_PREDICTION_LOG_FLUSH_SECONDS": "0.5"}
    subprocess.run([MODELPORT, "log-policy", "credit-rating", "--sample", "1"], env=env, check=True)
    port = free_port()
    server = subprocess.Popen(
        [MODELPORT, "serve", "--port", str(port), "--insecure-dev"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/v2/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        start = time.time()
        with httpx.Client() as client:
            for window, factor in enumerate([1.0, 1.0, 1.0, 1.25, 1.5, 2.0]):
                rows = make_dataset(1000, seed=100 + window)
                rows["leverage"] *= factor
                matrix = rows[FEATURES].to_numpy()
                for part in range(5):
                    chunk = matrix[part * 200 : (part + 1) * 200]
                    body = {
                        "inputs": [
                            {
                                "name": "input",
                                "datatype": "FP64",
                                "shape": list(chunk.shape),
                                "data": chunk.tolist(),
                            }
                        ]
                    }
                    client.post(f"{url}/v2/models/credit-rating/infer", json=body).raise_for_status()
                time.sleep(max(0.0, start + (window + 1) * args.window - time.time()))
    finally:
        server.terminate()
        server.wait(30)
    until = datetime.fromtimestamp(start + 6 * args.window, UTC).isoformat()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    command = ["drift", "credit-rating", "--window", f"{args.window:g}s", "--windows", "6", "--until", until]
    chart = ["--png", str(args.out), "--html", str(args.out.with_suffix(".html"))]
    subprocess.run([MODELPORT, *command, *chart], env=env, check=True)
    print(f"chart: {args.out}")


if __name__ == "__main__":
    main()
