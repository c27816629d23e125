"""The console's screenshots in docs/console.md, re-made from the example registry.

    .venv/bin/python docs/img/console_screenshots.py

Registers the example credit-rating model in a temporary home (examples/credit_rating/train.py: v1
with 60 trees under ``production``, v2 with 30 under ``staging``), creates an admin key, starts a real
``modelport serve`` on loopback, signs in with the key in Debian's Chromium (Playwright; its own
browser download is never used) and saves the viewport, 1280×800, of each page to
``docs/img/console-<page>.png``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))  # tests/: the server helpers and Chromium's flags
sys.path.insert(0, str(ROOT / "examples" / "credit_rating"))

PAGES = {
    "models": "/ui/models",
    "model": "/ui/models/credit-rating",
    "version": "/ui/models/credit-rating/versions/2",
    "compare": "/ui/compare?model=credit-rating&v=1&v=2",
    "audit": "/ui/audit",
    "approvals": "/ui/approvals",
}


def main() -> None:
    from playwright.sync_api import sync_playwright
    from train import train_and_register

    from modelport.app import open_registry
    from modelport.security.store import KeyStore
    from modelport.settings import Settings
    from tests.serving.conftest import start_server, stop_server
    from tests.ui.test_browser import ARGS, CHROMIUM

    work = Path(tempfile.mkdtemp())
    settings = Settings(home=work / "home")
    registry = open_registry(settings, create=True)
    try:
        created = KeyStore(registry.store).create(name="docs", role="admin", models=None, actor="local:docs")
        assert created is not None
    finally:
        registry.close()
    train_and_register(2_000, "production", 60, out=work, settings=settings)
    train_and_register(2_000, "staging", 30, out=work, settings=settings)
    server = start_server(work / "home", insecure_dev=False)
    try:
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
        stop_server(server)


if __name__ == "__main__":
    main()
