"""Microseconds per inference request through the ASGI app, in-process (no HTTP server), for V2 JSON,
V2 binary and MLflow — the requests of tests/serving/test_call_budget.py, with a consumer key, default
metrics and access log.

    .venv/bin/python bench/hotpath.py HOME [PROTOCOL ...] [--requests 2000]

HOME is a registered home with a model named ``credit`` (6 numeric features); it is copied, never
changed. Best of five runs. Timings are machine- and load-dependent: compare runs made back to back.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modelport.app import create_app, open_registry
from modelport.security.store import KeyStore
from modelport.settings import Settings
from tests.serving.test_call_budget import _call, _requests


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("home", type=Path)
    parser.add_argument("protocols", nargs="*", default=["v2-json", "v2-binary", "mlflow"])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp()) / "home"
    shutil.copytree(args.home, home)
    registry = open_registry(Settings(home=home))
    created = KeyStore(registry.store).create(
        name="hotpath", role="consumer", models=["credit*"], actor="local:bench"
    )
    registry.close()
    assert created is not None
    asyncio.set_event_loop(asyncio.new_event_loop())
    app = create_app(Settings(home=home))
    for protocol in args.protocols:
        path, headers, body = _requests(created[1])[protocol]
        for _ in range(300):
            _call(app, path, headers, body)
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(args.requests):
                _call(app, path, headers, body)
            best = min(best, (time.perf_counter() - started) / args.requests)
        print(f"{protocol:10} {best * 1e6:8.1f} µs/request")


if __name__ == "__main__":
    main()
