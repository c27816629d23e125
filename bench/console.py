"""The console at registry scale (issue 17): server time of every page, and time to visible content in
a browser, over a generated registry of 1,000 models and 100,000 versions.

    .venv/bin/python bench/console.py [--home DIR] [--requests 30] [--no-browser]

1. Registers the example credit-rating model twice (examples/credit_rating/train.py: 60 and 30
   trees, so the compare page has parameters and metrics that differ) and creates an admin key.
2. Adds 999 models and the rest of the 100,000 versions in bulk: ``big`` has 10,000 versions,
   ``mid`` 100, the others about 90 each; each model has ``production`` on its newest version and
   ``staging`` on the one before. The rows are copies of credit-rating v1 (one shared blob; the
   golden cases cut to 5 rows to keep the file ~0.5 GB smaller) inserted with ``executemany`` through
   the registry's own SQLAlchemy tables: ``RegistryStore.add_version`` runs one audited transaction per
   version (~5 ms each, ~8 minutes for 100,000), and how fast rows were written is not what is
   measured. This bulk path exists in this benchmark only, never in product code. 2,000 audit
   records are appended through ``RegistryStore.append_audit`` (the audit page's rows).
3. Server time: p95 over ``--requests`` requests per page, in-process through the console's ASGI app
   (tests/serving/conftest.py ``serve_in_process``: no socket; the figure includes httpx's in-process
   hop, ~1 ms). Then every one of the 1,000 models gets request and latency series (counted straight
   into the metrics, as a worker counts a request: loading 1,000 models to serve them is not what is
   measured) and the Models page is measured again, with the time of one live snapshot of them
   (ui/live.py: read at most every 2 s, whatever the number of page views).
4. Browser: a real ``modelport serve`` on loopback and Debian's Chromium driven by Playwright; time
   from navigation to ``domcontentloaded`` and to the main table's first row being visible, p95 over
   10 loads of Models and Model.

Timings depend on the machine and its load: docs/performance.md records the command and machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select

from modelport.app import open_registry
from modelport.registry.names import ModelRef
from modelport.registry.schema import aliases, artifacts, model_versions, models
from modelport.security.store import KeyStore
from modelport.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/ (the in-process app, sign-in) and the example's train.py
sys.path.insert(0, str(ROOT / "examples" / "credit_rating"))

MODELS = 1_000
VERSIONS = 100_000
BIG, MID = 10_000, 100
CHROMIUM = Path("/usr/bin/chromium")


def build(home: Path) -> str:
    """The registry; returns an admin key."""
    from train import train_and_register

    settings = Settings(home=home)
    registry = open_registry(settings, create=True)
    try:
        created = KeyStore(registry.store).create(
            name="bench", role="admin", models=None, actor="local:bench"
        )
        assert created is not None
        out = Path(tempfile.mkdtemp())
        train_and_register(2_000, "production", 60, out=out, settings=settings)
        train_and_register(2_000, "staging", 30, out=out, settings=settings)
        _bulk(registry.store.db.engine, registry.get(ModelRef("credit-rating", version=1)))
        for i in range(2_000):
            registry.store.append_audit(
                "local:bench", "alias.set", f"m-{i % 997:04d}@production", after={"version": i % 90 + 1}
            )
    finally:
        registry.close()
    return created[1]


def _bulk(engine: Any, source: Any) -> None:
    counts = {"big": BIG, "mid": MID}
    others = MODELS - 1 - len(counts)  # credit-rating is one of the 1,000
    left = VERSIONS - 2 - BIG - MID
    for i in range(others):
        counts[f"m-{i:04d}"] = left // others + (1 if i < left % others else 0)
    golden = dict(source.golden)
    golden["rows"] = golden.get("rows", [])[:5]
    outputs = golden.get("outputs", {})
    golden["outputs"] = {k: v[:5] if isinstance(v, list) else v for k, v in outputs.items()}
    row = {
        "status": source.status,
        "serving_format": source.serving_format,
        "signature": source.signature,
        "golden": golden,
        "environment": source.environment,
        "lineage": source.lineage,
        "conversion": source.conversion,
        "description": "",
        "tags": {},
    }
    start = datetime.now(UTC) - timedelta(days=365)
    with engine.begin() as conn:
        next_model = int(conn.execute(select(func.max(models.c.id))).scalar_one()) + 1
        next_version = int(conn.execute(select(func.max(model_versions.c.id))).scalar_one()) + 1
        model_rows: list[dict[str, Any]] = []
        version_rows: list[dict[str, Any]] = []
        artifact_rows: list[dict[str, Any]] = []
        alias_rows: list[dict[str, Any]] = []
        for offset, (name, count) in enumerate(counts.items()):
            model_id = next_model + offset
            model_rows.append(
                {
                    "id": model_id,
                    "name": name,
                    "description": f"generated model {name}",
                    "latest_version": count,
                    "created_at": start,
                    "on_violation": "flag",
                }
            )
            for number in range(1, count + 1):
                version_id = next_version
                next_version += 1
                version_rows.append(
                    {
                        **row,
                        "id": version_id,
                        "uuid": str(uuid.uuid4()),
                        "model_id": model_id,
                        "number": number,
                        "creator": f"bench-{number % 7}",
                        "created_at": start + timedelta(minutes=number),
                    }
                )
                artifact_rows.extend(
                    {
                        "version_id": version_id,
                        "role": a.role,
                        "format": a.format,
                        "digest": a.digest,
                        "size": a.size,
                        "details": a.details,
                    }
                    for a in source.artifacts
                )
                if number >= count - 1:
                    alias = "production" if number == count else "staging"
                    alias_rows.append(
                        {
                            "model_id": model_id,
                            "name": alias,
                            "version_id": version_id,
                            "updated_at": start,
                            "updated_by": "local:bench",
                        }
                    )
        conn.execute(insert(models), model_rows)
        for table, rows in ((model_versions, version_rows), (artifacts, artifact_rows)):
            for at in range(0, len(rows), 5_000):
                conn.execute(insert(table), rows[at : at + 5_000])
        conn.execute(insert(aliases), alias_rows)


PAGES = [
    ("Models (1,000)", "/ui/models"),
    ("Model, 100 versions", "/ui/models/mid"),
    ("Model, 10,000 versions", "/ui/models/big"),
    ("Model, 10,000, older page", "/ui/models/big?before=5000"),
    ("Version", "/ui/models/credit-rating/versions/1"),
    ("Compare, 2 versions", "/ui/compare?model=credit-rating&v=1&v=2"),
    ("Compare, 10 versions", "/ui/compare?model=big&" + "&".join(f"v={n}" for n in range(9991, 10001))),
    ("Model card", "/ui/models/credit-rating/versions/1/card"),
    ("Release (10,000 versions)", "/ui/models/big/aliases/production/release"),
    ("Audit", "/ui/audit"),
    ("Approvals", "/ui/approvals"),
    ("Access", "/ui/access"),
    ("Monitoring, not logging", "/ui/models/mid/monitoring"),
]
LOGGED_ROWS = 20_000  # rows of credit-rating's traffic in its prediction log, for the Monitoring page


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[-1]


def server_times(home: Path, token: str, requests: int) -> dict[str, tuple[float, float]]:
    from tests.serving.conftest import serve_in_process
    from tests.ui.test_console import sign_in

    results = {}
    log_traffic(home)
    settings = {"prediction_log_flush_seconds": 0.5}
    with serve_in_process(home, insecure_dev=False, **settings) as app, sign_in(app, token) as client:
        send_logged_traffic(app, token)
        pages = [*PAGES, (f"Monitoring, {LOGGED_ROWS:,} logged rows", "/ui/models/credit-rating/monitoring")]
        for label, path in pages:
            client.get(path)  # warm: templates compiled, connections opened
            samples = []
            for _ in range(requests):
                started = time.perf_counter()
                response = client.get(path)
                samples.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, (path, response.status_code, response.text[:300])
            results[label] = (statistics.median(samples), p95(samples))
        names = [m.name for m in registry_models(home)]
        seed_traffic(names)
        label = "Models (1,000), every model with traffic"
        for _ in range(2):  # two readings of the metrics: rates over a window, not since start
            client.get("/ui/models")
            time.sleep(2.1)
        samples = []
        for _ in range(requests):
            seed_traffic(names[:100])
            started = time.perf_counter()
            response = client.get("/ui/models")
            samples.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200
        results[label] = (statistics.median(samples), p95(samples))
        results["One live snapshot of 1,000 models"] = snapshot_times()
    return results


def log_traffic(home: Path) -> None:
    """``modelport log-policy credit-rating --sample 1``."""
    from modelport.monitoring.predictions import LogPolicy

    registry = open_registry(Settings(home=home))
    try:
        policy = LogPolicy(1.0).to_dict()
        registry.store.monitoring.set_log_policy("credit-rating", policy, actor="local:bench")
    finally:
        registry.close()


def send_logged_traffic(app: Any, token: str) -> None:
    """LOGGED_ROWS rows of the example's firms through the V2 API, then wait until the log has them."""
    from generate import FEATURES, make_dataset

    rows = make_dataset(LOGGED_ROWS, seed=11)[FEATURES].to_numpy()
    with app.client(token) as api:
        for at in range(0, LOGGED_ROWS, 500):
            chunk = rows[at : at + 500]
            tensor = {"name": "input", "datatype": "FP64", "shape": list(chunk.shape), "data": chunk.tolist()}
            api.post("/v2/models/credit-rating/infer", json={"inputs": [tensor]}).raise_for_status()
        deadline = time.monotonic() + 60
        while True:
            report = api.get("/api/v1/models/credit-rating/drift").json()
            logged = sum(w["rows"] for v in report["versions"] for w in v["windows"])
            if logged >= LOGGED_ROWS or time.monotonic() > deadline:
                break
            time.sleep(0.2)  # polling the log's flush (every 0.5 s here)


def registry_models(home: Path) -> list[Any]:
    registry = open_registry(Settings(home=home))
    try:
        return registry.models()
    finally:
        registry.close()


def seed_traffic(names: list[str]) -> None:
    """Requests counted for ``names`` as the worker counts them (metrics.py ``LOCAL``): two versions,
    two protocols, an ok and an invalid outcome each, latencies spread over the buckets."""
    from modelport.monitoring.metrics import LOCAL

    for index, name in enumerate(names):
        for version in ("1", "2"):
            for protocol in ("rest", "grpc"):
                LOCAL.request(name, version, "production", protocol, "ok", 0.002 + (index % 50) / 1000)
                LOCAL.request(name, version, "", protocol, "invalid", 0.0004)
    LOCAL.flush()


def snapshot_times(count: int = 20) -> tuple[float, float]:
    from modelport.monitoring.metrics import request_families
    from modelport.ui.live import snapshot

    samples = []
    for _ in range(count):
        started = time.perf_counter()
        taken = snapshot(request_families(), 0.0)
        samples.append((time.perf_counter() - started) * 1000)
    assert len(taken.models) >= MODELS
    return statistics.median(samples), p95(samples)


def browser_times(home: Path, token: str, loads: int = 10) -> dict[str, tuple[float, float]]:
    from playwright.sync_api import sync_playwright

    from tests.serving.conftest import start_server, stop_server
    from tests.ui.browser import ARGS

    server = start_server(home, insecure_dev=False)
    results = {}
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{server.url}/ui/login")
            page.fill("input[name=key]", token)
            page.click("button[type=submit]")
            page.wait_for_url("**/ui/models")
            for label, path, rows in (
                ("Models (1,000)", "/ui/models", "#model-rows tr"),
                ("Model, 10,000 versions", "/ui/models/big", "#versions tbody tr"),
            ):
                loaded, visible = [], []
                for _ in range(loads + 1):
                    started = time.perf_counter()
                    page.goto(server.url + path, wait_until="domcontentloaded")
                    loaded.append((time.perf_counter() - started) * 1000)
                    page.locator(rows).first.wait_for(state="visible")
                    visible.append((time.perf_counter() - started) * 1000)
                results[label] = (p95(loaded[1:]), p95(visible[1:]))  # the first load warms the server
            browser.close()
    finally:
        stop_server(server)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="reuse (or build, if absent) the registry here")
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp()) / "home"
    key_file = home.parent / f"{home.name}.bench-key"
    if not (home.exists() and key_file.exists()):
        shutil.rmtree(home, ignore_errors=True)
        started = time.perf_counter()
        token = build(home)
        key_file.write_text(token)
        print(
            f"built {MODELS:,} models / {VERSIONS:,} versions "
            f"in {time.perf_counter() - started:.0f} s at {home}"
        )
    token = key_file.read_text()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {platform.platform()}"
    )
    print(f"\n| Page | median ms | p95 ms (server, {args.requests} requests) |\n|---|---:|---:|")
    for label, (median, high) in server_times(home, token, args.requests).items():
        print(f"| {label} | {median:.1f} | {high:.1f} |")
    if not args.no_browser and CHROMIUM.exists():
        print("\n| Page (Chromium) | domcontentloaded p95 ms | table visible p95 ms |\n|---|---:|---:|")
        for label, (loaded, visible) in browser_times(home, token).items():
            print(f"| {label} | {loaded:.0f} | {visible:.0f} |")


if __name__ == "__main__":
    main()
