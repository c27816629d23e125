"""The console's screenshots in docs/console.md, re-made from the example registry.

    .venv/bin/python docs/img/console_screenshots.py

Registers the example credit-rating model in a temporary home (examples/credit_rating/train.py: v1
with 60 trees under ``production``, v2 with 30 under ``staging``), creates an admin key and a consumer
key, logs every request (``modelport log-policy credit-rating --sample 1``), starts a real ``modelport
serve`` on loopback with short windows (4 s drift windows, 1 s flushes), starts a canary of v2 at 20 %
on ``production``, sends six windows of traffic — three from the training distribution, then leverage
×1.25, ×1.5 and ×2 (examples/credit_rating/drift_scenario.py's scenario) — and the ground truth of
every row, signs in with the admin key in Debian's Chromium (Playwright; its own browser download is
never used) and saves the viewport, 1280×800, of each page to ``docs/img/console-<page>.png``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))  # tests/: the server helpers and Chromium's flags
sys.path.insert(0, str(ROOT / "examples" / "credit_rating"))

PAGES = {
    "models": "/ui/models",
    "model": "/ui/models/credit-rating",
    "version": "/ui/models/credit-rating/versions/2",
    "compare": "/ui/compare?model=credit-rating&v=1&v=2",
    "card": "/ui/models/credit-rating/versions/2/card",
    "release": "/ui/models/credit-rating/aliases/production/release",
    "monitoring": "/ui/models/credit-rating/monitoring?windows=9",
    "audit": "/ui/audit",
    "approvals": "/ui/approvals",
    "access": "/ui/access",
}
WINDOW = 4.0  # seconds per drift window
ENV = {
    "MODELPORT_DRIFT_WINDOW_SECONDS": str(WINDOW),
    "MODELPORT_DRIFT_MIN_ROWS": "50",
    "MODELPORT_PREDICTION_LOG_FLUSH_SECONDS": "0.5",
    "MODELPORT_RELEASE_FLUSH_SECONDS": "1",
    "MODELPORT_MONITOR_INTERVAL": "2",
}


def traffic(url: str, admin: str, consumer: str, ready: threading.Event, stop: threading.Event) -> None:
    """A canary, then windows of requests — three calm, then leverage ×1.25, ×1.5 and ×2, which goes on
    until ``stop`` — with the truth of every row. ``ready`` is set once the monitor has evaluated the
    six scripted windows."""
    from generate import FEATURES, make_dataset

    started = time.time()
    with httpx.Client(base_url=url, timeout=30) as client:
        release = client.put(
            "/api/v1/models/credit-rating/aliases/production/release",
            json={"canary": 2, "weight": "20"},
            headers={"Authorization": f"Bearer {admin}"},
        )
        release.raise_for_status()
        calls = {"Authorization": f"Bearer {consumer}"}
        window = 0
        while not stop.is_set():
            factor = [1.0, 1.0, 1.0, 1.25, 1.5][window] if window < 5 else 2.0
            rows = make_dataset(400, seed=100 + window)
            rows["leverage"] *= factor
            matrix = rows[FEATURES].to_numpy()
            labels = []
            for part in range(20):  # 20 requests of 20 rows: both arms of the canary get some
                chunk = matrix[part * 20 : (part + 1) * 20]
                tensor = {
                    "name": "input",
                    "datatype": "FP64",
                    "shape": list(chunk.shape),
                    "data": chunk.tolist(),
                }
                answer = client.post(
                    "/v2/models/credit-rating/infer", json={"inputs": [tensor]}, headers=calls
                )
                answer.raise_for_status()
                request_id = answer.headers["x-request-id"]
                truth = rows["rating"].iloc[part * 20 : (part + 1) * 20]
                labels += [{"request_id": request_id, "row": i, "label": str(t)} for i, t in enumerate(truth)]
            client.post(
                "/api/v1/feedback", json={"model": "credit-rating", "labels": labels}, headers=calls
            ).raise_for_status()
            window += 1
            if window == 6 + 2:  # six windows and two monitor evaluations (every 2 s, windows of 4 s)
                ready.set()
            stop.wait(max(0.0, started + window * WINDOW - time.time()))


def main() -> None:
    from playwright.sync_api import sync_playwright
    from train import train_and_register

    from modelport.app import open_registry
    from modelport.security.store import KeyStore
    from modelport.settings import Settings
    from tests.serving.conftest import start_server, stop_server
    from tests.ui.browser import ARGS, CHROMIUM

    work = Path(tempfile.mkdtemp())
    settings = Settings(home=work / "home")
    registry = open_registry(settings, create=True)
    try:
        keys = KeyStore(registry.store)
        created = keys.create(name="docs", role="admin", models=None, actor="local:docs")
        application = keys.create(name="loan-app", role="consumer", models=["credit-*"], actor="local:docs")
        assert created is not None and application is not None
    finally:
        registry.close()
    train_and_register(2_000, "production", 60, out=work, settings=settings)
    train_and_register(2_000, "staging", 30, out=work, settings=settings)
    modelport = str(Path(sys.executable).with_name("modelport"))
    home_env = {**os.environ, "MODELPORT_HOME": str(work / "home")}
    subprocess.run([modelport, "log-policy", "credit-rating", "--sample", "1"], env=home_env, check=True)
    server = start_server(work / "home", insecure_dev=False, env=ENV)
    try:
        ready, stop = threading.Event(), threading.Event()
        sender = threading.Thread(target=traffic, args=(server.url, created[1], application[1], ready, stop))
        sender.start()
        ready.wait(120)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{server.url}/ui/login")
            page.fill("input[name=key]", created[1])
            page.click("button[type=submit]")
            page.wait_for_url("**/ui/models")
            for name, path in PAGES.items():
                page.goto(server.url + path, wait_until="networkidle")
                target = OUT / f"console-{name}.png"
                page.screenshot(path=str(target))
                print(f"{target.relative_to(ROOT)}: {target.stat().st_size / 1024:.0f} KiB")
            browser.close()
    finally:
        if "stop" in locals():
            stop.set()
            sender.join(60)
        stop_server(server)


if __name__ == "__main__":
    main()
