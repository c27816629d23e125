"""Density: 1,000 registered small models in one worker under a Zipf load (issue 16), against MLServer
serving 100 models in its multi-model mode and MLflow's one server per model.

    .venv/bin/python bench/density.py build [--models 1000]
    .venv/bin/python bench/density.py modelport [--bound-mib 64] [--rate 100] [--seconds 30]
    .venv/bin/python bench/density.py mlserver [--models 100] [--rate 100] [--seconds 30]
    .venv/bin/python bench/density.py mlflow

The models are the peer harness's ``small`` (StandardScaler + LogisticRegression, 12 features, 10
classes; /work/shared/bench, ``setup.sh`` into ``$BENCH_HOME``, default ~/.cache/modelport-bench), each
with its own coefficients (scaled by 1 + 0.2·N(0,1), seeded by its number): ONNX files registered
directly for modelport (``build``, once, kept in ``$BENCH_HOME/density``), joblib files for MLServer.

``modelport``: a copy of the built home, a consumer key (keys on, every default secure), one worker
pinned to CPU 0, ``MODELPORT_MAX_LOADED_BYTES`` set to ``--bound-mib`` — a part of the 1,000 fits.
The client (CPU 1) first asks every model once, in order (1,000 cold loads), then runs an open-loop
Zipf load (s = 1.1 over the 1,000 models in a seeded random order of ranks) at ``--rate`` requests per
second for ``--seconds``, with latency counted from each request's scheduled time; meanwhile it sends
``--probes`` requests a second to models that the server's repository index (read every second)
shows as not loaded and that were not asked meanwhile, each a cold load under traffic; the first
``--warmup`` seconds of Zipf load are not measured (the first pass leaves the last models loaded, not
the popular ones). Reported: p50/p99 of the hot set (the 50 most requested models, never evicted),
of the probes (cold: record read, digest check, session, golden warm-up, answer), of all Zipf
requests; the server's resident memory at start, after the first pass and its peak under load,
against the bound and the measured sum (``modelport_loaded_model_bytes``), and the measured sizes.

``mlserver``: the same Zipf load over ``--models`` models in one MLServer (its default settings: one
inference worker process beside the HTTP process, every model loaded at start in both). ``mlflow``:
one ``mlflow models serve`` of one model: its resident memory (process tree) after its first answer,
times 1,000. Everything talks to 127.0.0.1 only; every run is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

BENCH_HOME = Path(os.environ.get("BENCH_HOME", Path.home() / ".cache/modelport-bench"))
DENSITY = BENCH_HOME / "density"
RESULTS = BENCH_HOME / "results" / "density.jsonl"
ZIPF_S = 1.1
HOT_SET = 50
PAGE = os.sysconf("SC_PAGE_SIZE")


# -- models -------------------------------------------------------------------------------------------


def scale(seed: int, size: int) -> Any:
    """The factors model ``seed``'s coefficients are multiplied by (the same for ONNX and joblib:
    ONNX's LinearClassifier keeps sklearn's ``coef_`` flattened row by row)."""
    import numpy as np

    return 1 + 0.2 * np.random.default_rng(seed).standard_normal(size)


def build(models: int) -> Path:
    """Register ``models`` variants of the harness's small ONNX model into a fresh home (once)."""
    import onnx
    import pandas as pd

    from modelport.app import open_registry
    from modelport.settings import Settings

    home = DENSITY / f"home-{models}"
    if home.exists():
        return home
    files = DENSITY / f"home-{models}-onnx"
    files.mkdir(parents=True, exist_ok=True)
    partial = home.with_name(home.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    source = onnx.load(BENCH_HOME / "models/small.onnx")
    sample = pd.read_csv(BENCH_HOME / "data/batch_1m.csv", nrows=200)
    registry = open_registry(Settings(home=partial), create=True)

    def register(number: int) -> None:
        model = onnx.ModelProto()
        model.CopyFrom(source)
        for node in model.graph.node:
            for attribute in node.attribute:
                if node.op_type == "LinearClassifier" and attribute.name == "coefficients":
                    values = list(attribute.floats) * scale(number, len(attribute.floats))
                    del attribute.floats[:]
                    attribute.floats.extend(values.tolist())
        path = files / f"m{number:04d}.onnx"
        path.write_bytes(model.SerializeToString())
        registry.register(path=path, name=f"m{number:04d}", sample=sample, alias="production")

    started = time.perf_counter()
    # Three at a time: each registration reads the file in a child process first (~0.6 s of CPU).
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        for done, _ in enumerate(pool.map(register, range(models)), 1):
            if done % 100 == 0:
                print(f"registered {done} in {time.perf_counter() - started:.0f} s", flush=True)
    registry.close()
    partial.rename(home)
    return home


# -- load ---------------------------------------------------------------------------------------------


def zipf_ranks(models: int, seed: int = 1) -> tuple[list[int], list[float]]:
    """Models in a seeded random order of popularity, and their cumulative Zipf weights."""
    order = list(range(models))
    random.Random(seed).shuffle(order)
    weights = [1 / (rank + 1) ** ZIPF_S for rank in range(models)]
    total = sum(weights)
    cumulative, running = [], 0.0
    for weight in weights:
        running += weight / total
        cumulative.append(running)
    return order, cumulative


class Client:
    """Keep-alive HTTP/1.1 connections to one server; a request's latency counts from its due time."""

    def __init__(self, port: int, connections: int, make: Any) -> None:
        self.port = port
        self.make = make  # model number -> request bytes
        self.connections = connections
        self.jobs: asyncio.Queue[tuple[float, int, str] | None] = asyncio.Queue()
        self.results: list[tuple[str, int, float, int]] = []  # kind, model, seconds, status

    async def run_connection(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            while (job := await self.jobs.get()) is not None:
                due, model, kind = job
                writer.write(self.make(model))
                await writer.drain()
                status, length = 0, 0
                while True:
                    line = await reader.readline()
                    if not line:
                        raise ConnectionError("the server closed the connection")
                    if not status:
                        status = int(line.split()[1])
                    elif line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                    if line in (b"\r\n", b"\n"):
                        break
                await reader.readexactly(length)
                self.results.append((kind, model, time.perf_counter() - due, status))
        finally:
            writer.close()

    async def one(self, model: int, kind: str) -> float:
        """One request on a connection of its own, waited for (the first pass)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        started = time.perf_counter()
        writer.write(self.make(model))
        await writer.drain()
        status = int((await reader.readline()).split()[1])
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await reader.readexactly(length)
        writer.close()
        seconds = time.perf_counter() - started
        self.results.append((kind, model, seconds, status))
        return seconds


async def zipf_load(
    client: Client,
    models: int,
    rate: float,
    seconds: float,
    probes: float = 0.0,
    cold: Any = None,
    asked: set[int] | None = None,
) -> None:
    """Open loop: a request every 1/rate s to a Zipf-drawn model; ``probes``/s more to ``cold()``."""
    order, cumulative = zipf_ranks(models)
    draw = random.Random(2)
    workers = [asyncio.create_task(client.run_connection()) for _ in range(client.connections)]
    start = time.perf_counter()
    total = int(rate * seconds)
    every = int(rate / probes) if probes else 0
    import bisect

    for index in range(total):
        due = start + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        rank = min(bisect.bisect_left(cumulative, draw.random()), models - 1)
        client.jobs.put_nowait((due, order[rank], "hot" if rank < HOT_SET else "zipf"))
        if asked is not None:
            asked.add(order[rank])
        if every and index % every == 0 and cold is not None:
            target = cold()
            if target is not None:
                client.jobs.put_nowait((due, target, "cold"))
    for _ in workers:
        client.jobs.put_nowait(None)
    await asyncio.gather(*workers)


def quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {"n": len(ordered), "p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": round(ordered[-1] * 1000, 1)}


# -- servers ------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (/proc)."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/statm") as statm:
                total += int(statm.read().split()[1]) * PAGE
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    pending.extend(int(child) for child in children.read().split())
        except (OSError, ValueError):
            continue
    return total


def wait_ready(url: str, process: subprocess.Popen[bytes], seconds: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if process.poll() is not None:
            raise SystemExit(f"the server exited ({process.returncode}) before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} not ready within {seconds:.0f} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def scrape(port: int, token: str) -> dict[str, Any]:
    """The loaded set and memory gauges from /metrics."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        text = answer.read().decode()
    loaded, values, loads, sizes = set(), {}, 0.0, []
    for line in text.splitlines():
        if line.startswith("modelport_model_load_seconds_count{"):
            loads += float(line.rsplit(" ", 1)[1])
        elif line.startswith("modelport_model_memory_bytes{"):
            name = line.split('model="', 1)[1].split('"', 1)[0]
            if float(line.rsplit(" ", 1)[1]) > 0:
                loaded.add(int(name[1:]))
                sizes.append(float(line.rsplit(" ", 1)[1]) / 1024)
        elif line and not line.startswith("#") and "{" not in line:
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    sizes.sort()
    memory = {
        q: round(sizes[int(f * (len(sizes) - 1))], 1) for q, f in (("p10", 0.1), ("p50", 0.5), ("p90", 0.9))
    }
    return {
        "loaded": loaded,
        "loads": loads,
        "memory_kib": memory if sizes else {},
        "bytes": len(text),
        **values,
    }


def loaded_set(port: int, token: str) -> set[int]:
    """The models loaded now, from the repository index (READY)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v2/repository/index",
        data=b"{}",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        entries = json.loads(answer.read())
    return {int(entry["name"][1:]) for entry in entries if entry["state"] == "READY"}


def run_modelport(args: argparse.Namespace) -> dict[str, Any]:
    from modelport.app import open_registry
    from modelport.security.store import KeyStore
    from modelport.settings import Settings

    built = build(args.models)
    work = Path(tempfile.mkdtemp(prefix="modelport-density-"))
    home = Path(shutil.copytree(built, work / "home"))
    registry = open_registry(Settings(home=home))
    created = KeyStore(registry.store).create(
        name="density", role="consumer", models=["m*"], actor="local:bench"
    )
    registry.close()
    assert created is not None
    token = created[1]
    port = free_port()
    bound = args.bound_mib << 20
    env = {
        **os.environ,
        "MODELPORT_HOME": str(home),
        "MODELPORT_MAX_LOADED_BYTES": str(bound),
        "MODELPORT_MAX_LOADED_MODELS": str(args.models),
    }
    log = (work / "server.log").open("wb")
    modelport = str(Path(sys.executable).with_name("modelport"))
    process = subprocess.Popen(
        ["taskset", "-c", "0", modelport, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    row = json.dumps(json.loads((BENCH_HOME / "data/row.json").read_text()))
    request_body = (
        '{"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 12], "data": ' + row + "}]}"
    ).encode()

    def make(model: int) -> bytes:
        return (
            f"POST /v2/models/m{model:04d}/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(request_body)}\r\n\r\n"
        ).encode() + request_body

    os.sched_setaffinity(0, {1})  # the client on CPU 1, the server on CPU 0
    try:
        ready = wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", process, 60)
        rss_start = tree_rss(process.pid)
        client = Client(port, args.connections, make)
        first = time.perf_counter()
        for model in range(args.models):
            asyncio.run(client.one(model, "first"))
        first_seconds = time.perf_counter() - first
        after_first = scrape(port, token)
        rss_first = tree_rss(process.pid)
        state: dict[str, Any] = {
            "loaded": after_first["loaded"],
            "asked": set(),  # models asked since the last scrape: maybe loaded meanwhile
            "peak": rss_first,
            "index_ms": [],
            "counts": [],
        }
        tail = [m for m in zipf_ranks(args.models)[0][args.models // 2 :]]
        pick = random.Random(3)

        def cold() -> int | None:
            candidates = [m for m in tail if m not in state["loaded"] and m not in state["asked"]]
            if not candidates:
                return None
            choice = pick.choice(candidates)
            state["loaded"].add(choice)  # not probed twice before the next scrape
            return choice

        async def watch(done: asyncio.Event) -> None:
            """Resident memory every half second; the loaded set every ``--index-seconds`` (from the
            repository index, not /metrics: a 1,000-model exposition takes the worker ~1 s to render)."""
            next_index = 0.0
            while not done.is_set():
                state["peak"] = max(state["peak"], tree_rss(process.pid))
                if time.perf_counter() >= next_index:
                    asked = set(state["asked"])
                    started = time.perf_counter()
                    state["loaded"] = await asyncio.to_thread(loaded_set, port, token)
                    state["index_ms"].append((time.perf_counter() - started) * 1000)
                    state["counts"].append(len(state["loaded"]))
                    next_index = started + args.index_seconds
                    state["asked"] -= asked
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), 0.5)

        async def loaded_run() -> None:
            done = asyncio.Event()
            watcher = asyncio.create_task(watch(done))
            await zipf_load(client, args.models, args.rate, args.seconds, args.probes, cold, state["asked"])
            done.set()
            await watcher

        # Warm-up: the first pass leaves the last models asked loaded, not the popular ones.
        warm = Client(port, args.connections, make)
        asyncio.run(zipf_load(warm, args.models, args.rate, args.warmup))
        before_run = scrape(port, token)
        asyncio.run(loaded_run())
        started = time.perf_counter()
        final = scrape(port, token)
        scrape_seconds = time.perf_counter() - started
    finally:
        stop(process)
        log.close()
    results = client.results
    errors = sum(1 for r in results if r[3] != 200)
    by_kind = {
        kind: [r[2] for r in results if r[0] == kind and r[3] == 200]
        for kind in ("first", "hot", "zipf", "cold")
    }
    return {
        "server": "modelport",
        "models": args.models,
        "bound_mib": args.bound_mib,
        "rate": args.rate,
        "seconds": args.seconds,
        "ready_s": round(ready, 1),
        "first_pass_s": round(first_seconds, 1),
        "first_pass": quantiles(by_kind["first"]),
        "hot_set": quantiles(by_kind["hot"]),
        "zipf_all": quantiles(by_kind["hot"] + by_kind["zipf"]),
        "cold_probes": quantiles(by_kind["cold"]),
        "errors": errors,
        "rss_start_mib": round(rss_start / 2**20, 1),
        "rss_after_first_pass_mib": round(rss_first / 2**20, 1),
        "rss_peak_mib": round(state["peak"] / 2**20, 1),
        "rss_growth_peak_mib": round((state["peak"] - rss_start) / 2**20, 1),
        "loads_during_warmup": before_run["loads"] - after_first["loads"],
        "loads_during_load_run": final["loads"] - before_run["loads"],
        "measured_per_model_kib_after_first_pass": after_first["memory_kib"],
        "measured_per_model_kib_under_load": final["memory_kib"],
        "loaded_models_min_max": [min(state["counts"]), max(state["counts"])],
        "index_ms_median": round(sorted(state["index_ms"])[len(state["index_ms"]) // 2], 1),
        "metrics_scrape_s": round(scrape_seconds, 2),
        "metrics_bytes": final["bytes"],
        "final_loaded": final.get("modelport_loaded_models"),
        "final_measured_mib": round(final.get("modelport_loaded_model_bytes", 0) / 2**20, 1),
    }


def mlserver_models(count: int) -> Path:
    """``count`` joblib variants of the small model, written by MLServer's own Python (its sklearn)."""
    folder = DENSITY / f"mlserver-{count}"
    if (folder / "done").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    script = f"""
import joblib
import numpy as np
from pathlib import Path
for n in range({count}):
    model = joblib.load({str(BENCH_HOME / "models/small.joblib")!r})
    coef = model[-1].coef_
    factors = 1 + 0.2 * np.random.default_rng(n).standard_normal(coef.size)
    model[-1].coef_ = coef * factors.reshape(coef.shape)
    target = Path({str(folder)!r}) / f"m{{n:04d}}"
    target.mkdir(exist_ok=True)
    joblib.dump(model, target / "model.joblib")
    (target / "model-settings.json").write_text(
        '{{"name": "m%04d", "implementation": "mlserver_sklearn.SKLearnModel", '
        '"parameters": {{"uri": "./model.joblib"}}}}' % n
    )
Path({str(folder)!r}, "done").write_text("ok")
"""
    subprocess.run([str(BENCH_HOME / "venv-mlserver/bin/python"), "-c", script], check=True)
    return folder


def run_mlserver(args: argparse.Namespace) -> dict[str, Any]:
    folder = mlserver_models(args.models)
    port = free_port()
    (folder / "settings.json").write_text(
        json.dumps(
            {
                "host": "127.0.0.1",
                "http_port": port,
                "grpc_port": free_port(),
                "metrics_port": free_port(),
                "debug": False,
            }
        )
    )
    log = (folder / "server.log").open("wb")
    started = time.monotonic()
    process = subprocess.Popen(
        ["taskset", "-c", "0", str(BENCH_HOME / "venv-mlserver/bin/mlserver"), "start", str(folder)],
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    row = json.loads((BENCH_HOME / "data/row.json").read_text())
    body = json.dumps(
        {
            "inputs": [{"name": "input-0", "shape": [1, 12], "datatype": "FP64", "data": row}],
            "outputs": [{"name": "predict_proba"}],
        }
    ).encode()

    def make(model: int) -> bytes:
        return (
            f"POST /v2/models/m{model:04d}/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    try:
        ready = wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", process, 600)
        # ready means the server is up; every model of the repository loads at start: wait for the last
        last = f"http://127.0.0.1:{port}/v2/models/m{args.models - 1:04d}/ready"
        wait_ready(last, process, 600)
        loaded_in = time.monotonic() - started
        rss_ready = tree_rss(process.pid)
        client = Client(port, args.connections, make)
        os.sched_setaffinity(0, {1})
        peak = [rss_ready]

        async def run() -> None:
            done = asyncio.Event()

            async def watch() -> None:
                while not done.is_set():
                    peak[0] = max(peak[0], tree_rss(process.pid))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(done.wait(), 0.5)

            watcher = asyncio.create_task(watch())
            await zipf_load(client, args.models, args.rate, args.seconds)
            done.set()
            await watcher

        asyncio.run(run())
    finally:
        stop(process)
        log.close()
    results = client.results
    hot = [r[2] for r in results if r[0] == "hot" and r[3] == 200]
    every = [r[2] for r in results if r[3] == 200]
    return {
        "server": "mlserver",
        "models": args.models,
        "rate": args.rate,
        "seconds": args.seconds,
        "ready_s": round(ready, 1),
        "all_models_loaded_s": round(loaded_in, 1),
        "hot_set": quantiles(hot),
        "zipf_all": quantiles(every),
        "errors": sum(1 for r in results if r[3] != 200),
        "rss_ready_mib": round(rss_ready / 2**20, 1),
        "rss_peak_mib": round(peak[0] / 2**20, 1),
    }


def run_mlflow(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    env = {**os.environ, "PATH": f"{BENCH_HOME / 'venv-mlflow/bin'}:{os.environ['PATH']}"}
    log = (DENSITY / "mlflow.log").open("wb")
    started = time.monotonic()
    process = subprocess.Popen(
        [
            "taskset",
            "-c",
            "0",
            str(BENCH_HOME / "venv-mlflow/bin/mlflow"),
            "models",
            "serve",
            "-m",
            str(BENCH_HOME / "models/mlflow-small"),
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            "1",
        ],
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    row = json.loads((BENCH_HOME / "data/row.json").read_text())
    body = json.dumps({"inputs": [row]}).encode()
    try:
        wait_ready(f"http://127.0.0.1:{port}/ping", process, 300)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 200
        first_answer = time.monotonic() - started
        time.sleep(1)
        rss = tree_rss(process.pid)
    finally:
        stop(process)
        log.close()
    return {
        "server": "mlflow",
        "models": 1,
        "first_answer_s": round(first_answer, 1),
        "rss_one_server_mib": round(rss / 2**20, 1),
        "rss_for_1000_servers_gib": round(rss * 1000 / 2**30, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["build", "modelport", "mlserver", "mlflow"])
    parser.add_argument("--models", type=int)
    parser.add_argument("--bound-mib", type=int, default=64)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--probes", type=float, default=5.0, help="cold probes per second")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds of Zipf load not measured")
    parser.add_argument("--index-seconds", type=float, default=1.0, help="how often the loaded set is read")
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    if args.what == "build":
        print(build(args.models or 1000))
        return 0
    if args.what == "modelport":
        args.models = args.models or 1000
        result = run_modelport(args)
    elif args.what == "mlserver":
        args.models = args.models or 100
        result = run_mlserver(args)
    else:
        result = run_mlflow(args)
    result["machine"] = f"{os.cpu_count()} cores, {os.uname().release}"
    result["at"] = time.strftime("%Y-%m-%d %H:%M:%S")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as out:
        out.write(json.dumps(result) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
