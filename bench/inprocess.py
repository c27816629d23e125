"""In-process latency of a registered version: its ONNX twin against its native runtime.

    .venv/bin/python bench/inprocess.py [REF] [--home DIR]

Defaults to ``credit-rating@production`` in ``./.modelport`` (run ``make demo`` first). Measures one
row per call and a 10,000-row batch, on one thread, through modelport's own runtime layer (the code
serving will use), and prints a Markdown table. Timings vary on shared machines: compare the ratio.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import pandas as pd

from modelport.app import open_registry
from modelport.registry.service import LoadedVersion
from modelport.settings import Settings
from modelport.signature import Signature


def _per_call(loaded: LoadedVersion, frame: pd.DataFrame, repeats: int) -> list[float]:
    batch = loaded.signature.batch(frame)
    loaded.runtime.predict(batch)  # warm
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        loaded.runtime.predict(batch)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("ref", nargs="?", default="credit-rating@production")
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("MODELPORT_HOME", ".modelport")))
    args = parser.parse_args()
    registry = open_registry(Settings(home=args.home))
    version = registry.get(args.ref)
    rows = Signature.from_dict(version.signature).random_rows(10_000, seed=1)
    print(f"{version.ref} on {platform.processor() or platform.machine()}, {os.cpu_count()} cores\n")
    print("| runtime | 1 row: median µs | 1 row: p99 µs | 10k rows: ms | rows/s (batch) |")
    print("|---|---|---|---|---|")
    for role in ("onnx", "native"):
        if version.artifact(role) is None:
            continue
        loaded = registry.load(version, role=role)
        single = sorted(_per_call(loaded, rows.head(1), 2_000))
        batch = statistics.median(_per_call(loaded, rows, 5))
        print(
            f"| {loaded.runtime.format} | {statistics.median(single) * 1e6:,.0f} | "
            f"{single[int(len(single) * 0.99)] * 1e6:,.0f} | {batch * 1e3:,.1f} | {len(rows) / batch:,.0f} |"
        )
        loaded.close()
    registry.close()


if __name__ == "__main__":
    main()
