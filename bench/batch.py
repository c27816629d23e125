"""Batch scoring benchmark (docs/performance.md, "Batch scoring"): `modelport score` against the bare
loop of pyarrow read → onnxruntime → pyarrow write on the same cores, the peers' baselines of
../shared/bench (pandas + scikit-learn, `mlflow models predict`), Dask with one and two workers, Spark
``local[2]``, and the memory of a 10M-row job.

    .venv/bin/python bench/batch.py [--rows-gbm 100000] [--skip-peers] [--skip-10m]

Needs ../shared/bench/setup.sh run once (models and data/batch_1m.csv in $BENCH_HOME). One-core runs
are pinned with ``taskset -c 0`` and OMP_NUM_THREADS=1. Each figure is one run on a shared machine:
compare ratios measured in the same run. Results are appended to $BENCH_HOME/results/modelport-batch.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
MAIN = HERE.parent
HARNESS = Path(os.environ.get("MODELPORT_BENCH_HARNESS", MAIN.parent / "shared" / "bench"))
ROOT = Path(os.environ.get("BENCH_HOME", Path.home() / ".cache" / "modelport-bench"))
RUN = ROOT / "run" / "modelport-batch"
PYTHON = MAIN / ".venv" / "bin" / "python"
MODELPORT = MAIN / ".venv" / "bin" / "modelport"
ONE_CORE = ["taskset", "-c", "0"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MODELPORT_HOME": str(RUN / "home")}

# The bare loop: what the hardware does with the same libraries and no pipeline at all.
CEILING = textwrap.dedent(
    """
    import sys, time, numpy as np, onnxruntime as ort, pyarrow as pa, pyarrow.csv as pc, pyarrow.parquet as pq
    model, source, target = sys.argv[1:4]
    options = ort.SessionOptions(); options.intra_op_num_threads = 1; options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    started = time.perf_counter()
    table = pq.read_table(source) if source.endswith(".parquet") else pc.read_csv(source)
    matrix = np.column_stack([c.to_numpy() for c in table.columns]).astype(np.float32)
    label, probabilities = session.run(None, {name: matrix})
    if isinstance(probabilities, list):
        probabilities = np.array([list(row.values()) for row in probabilities])
    probabilities = probabilities.astype(np.float64)  # as every modelport answer carries them (FP64)
    out = pa.table({"label": label, **{f"p_{i}": probabilities[:, i] for i in range(probabilities.shape[1])}})
    pq.write_table(out, target) if target.endswith(".parquet") else pc.write_csv(out, target)
    print(len(table), time.perf_counter() - started)
    """
)


def run(command: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (MiB, the process tree, sampled every 20 ms) and stdout of ``command``."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=env or ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    peak = 0
    root = psutil.Process(process.pid)
    while process.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.02)
    out, err = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{err[-2000:]}")
    return time.perf_counter() - started, peak >> 20, out


def prepare(rows_gbm: int, ten_million: bool) -> None:
    import pyarrow as pa
    import pyarrow.csv as pc
    import pyarrow.parquet as pq

    RUN.mkdir(parents=True, exist_ok=True)
    data = ROOT / "data" / "batch_1m.csv"
    if not (RUN / "home").exists():
        sample = RUN / "sample.csv"
        with data.open() as source, sample.open("w") as target:
            for _ in range(2_001):
                target.write(source.readline())
        subprocess.run([str(MODELPORT), "init"], env=ENV, check=True, capture_output=True)
        for model in ("small", "gbm"):
            subprocess.run(
                [
                    str(MODELPORT),
                    "register",
                    model,
                    str(ROOT / "models" / f"{model}.onnx"),
                    "--sample",
                    str(sample),
                    "--alias",
                    "production",
                ],
                env=ENV,
                check=True,
                capture_output=True,
            )
    table = pc.read_csv(data)
    if not (RUN / "1m.parquet").exists():
        pq.write_table(table, RUN / "1m.parquet", row_group_size=65_536)
        shutil.copy(data, RUN / "1m.csv")
    small = table.slice(0, rows_gbm)
    pq.write_table(small, RUN / "gbm.parquet", row_group_size=5_000)  # chunks for two workers to share
    pc.write_csv(small, RUN / "gbm.csv")
    if ten_million and not (RUN / "10m.parquet").exists():
        with pq.ParquetWriter(RUN / "10m.parquet", table.schema) as writer:
            for _ in range(10):
                writer.write_table(table, row_group_size=65_536)
    del pa


def score(model: str, source: str, target: str, *extra: str, pinned: bool = True) -> dict[str, float]:
    output = RUN / target
    output.unlink(missing_ok=True)
    command = [
        *(ONE_CORE if pinned else []),
        str(MODELPORT),
        "score",
        f"{model}@production",
        str(RUN / source),
        "-o",
        str(output),
        "--json",
        *extra,
    ]
    wall, rss, out = run(command)
    summary = json.loads(out)
    return {"rows": summary["rows"], "job_s": summary["seconds"], "wall_s": wall, "rss_mib": rss}


def ceiling(model: str, source: str, target: str) -> dict[str, float]:
    script = RUN / "ceiling.py"
    script.write_text(CEILING)
    wall, rss, out = run(
        [
            *ONE_CORE,
            str(PYTHON),
            str(script),
            str(ROOT / "models" / f"{model}.onnx"),
            str(RUN / source),
            str(RUN / target),
        ]
    )
    rows, seconds = out.split()
    return {"rows": int(rows), "job_s": float(seconds), "wall_s": wall, "rss_mib": rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows-gbm", type=int, default=100_000)
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--skip-10m", action="store_true")
    args = parser.parse_args()
    prepare(args.rows_gbm, not args.skip_10m)
    results: dict[str, dict[str, float]] = {}

    def record(name: str, figures: dict[str, float]) -> None:
        figures["rows_per_s"] = figures["rows"] / figures["job_s"]
        results[name] = figures
        print(
            f"{name:44s} {figures['rows']:>10,.0f} rows {figures['job_s']:7.2f} s  "
            f"{figures['rows_per_s']:>12,.0f} rows/s  wall {figures['wall_s']:6.2f} s  "
            f"RSS {figures['rss_mib']:>5} MiB",
            flush=True,
        )

    record("ceiling small parquet->parquet (1 core)", ceiling("small", "1m.parquet", "c.parquet"))
    record(
        "modelport small parquet->parquet (1 core)",
        score("small", "1m.parquet", "o.parquet", "--threads", "1"),
    )
    record("ceiling small csv->csv (1 core)", ceiling("small", "1m.csv", "c.csv"))
    record("modelport small csv->csv (1 core)", score("small", "1m.csv", "o.csv", "--threads", "1"))
    record("ceiling gbm parquet->parquet (1 core)", ceiling("gbm", "gbm.parquet", "c.parquet"))
    record(
        "modelport gbm parquet->parquet (1 core)", score("gbm", "gbm.parquet", "o.parquet", "--threads", "1")
    )
    record(
        "modelport small parquet->parquet (2 threads)",
        score("small", "1m.parquet", "o.parquet", "--threads", "2", pinned=False),
    )
    record(
        "dask small parquet->parquet (1 worker)",
        score("small", "1m.parquet", "o.parquet", "--engine", "dask", "--threads", "1", pinned=False),
    )
    record(
        "dask small parquet->parquet (2 workers)",
        score("small", "1m.parquet", "o.parquet", "--engine", "dask", "--threads", "2", pinned=False),
    )
    gbm_chunks = ["--chunk-rows", "5000"]  # work for two workers to share
    record(
        "dask gbm parquet->parquet (1 worker)",
        score(
            "gbm", "gbm.parquet", "o.parquet", "--engine", "dask", "--threads", "1", *gbm_chunks, pinned=False
        ),
    )
    record(
        "dask gbm parquet->parquet (2 workers)",
        score(
            "gbm", "gbm.parquet", "o.parquet", "--engine", "dask", "--threads", "2", *gbm_chunks, pinned=False
        ),
    )
    record(
        "local gbm parquet->parquet (2 threads)",
        score("gbm", "gbm.parquet", "o.parquet", "--threads", "2", *gbm_chunks, pinned=False),
    )
    record(
        "spark small parquet->parquet (local[2])",
        score("small", "1m.parquet", "o.parquet", "--engine", "spark", "--threads", "2", pinned=False),
    )
    if not args.skip_10m:
        record(
            "modelport small 10M parquet->parquet (2 threads)",
            score("small", "10m.parquet", "o.parquet", "--threads", "2", pinned=False),
        )
    if not args.skip_peers:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "BENCH_HOME": str(ROOT)}
        wall, rss, out = run(
            [*ONE_CORE, str(ROOT / "venv-base" / "bin" / "python"), str(HARNESS / "batch_score.py"), "small"],
            env=env,
        )
        peer = json.loads(out.strip().splitlines()[-1])
        record(
            "pandas + scikit-learn csv->csv (1 core)",
            {"rows": peer["rows"], "job_s": peer["total"], "wall_s": wall, "rss_mib": rss},
        )
    (ROOT / "results").mkdir(exist_ok=True)
    with (ROOT / "results" / "modelport-batch.jsonl").open("a") as sink:
        sink.write(json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%S"), "results": results}) + "\n")
    print(f"\nmachine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
