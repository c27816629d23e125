"""A regression guard for the hot path that cannot be flaky: it counts the Python function calls of one
inference request through the ASGI application, in-process (cProfile's call counts do not depend on the
machine's speed or load), for V2 JSON, V2 binary and MLflow, and fails when a count grows more than 10 %
over its recorded budget (``call_budget.json`` beside this file).

The request is what users run: a key is required, metrics and the access log are on, the model logs
every prediction. After a deliberate change to the hot path, record new budgets with
``MODELPORT_RECORD_CALL_BUDGET=1 pytest tests/serving/test_call_budget.py`` and say why in the commit.
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import os
import pstats
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from modelport.app import create_app, open_registry
from modelport.monitoring.predictions import LogPolicy
from modelport.security.store import KeyStore
from modelport.serving.rest import RestApp
from modelport.settings import Settings
from tests.conftest import FEATURES

BUDGET_FILE = Path(__file__).with_name("call_budget.json")
SLACK = 1.10
ROW = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]


class _Cycle:
    """One request's ASGI receive, shaped like uvicorn's (whose ``more_body`` tells that the whole body
    has arrived, the path every small request takes)."""

    more_body = False

    def __init__(self, body: bytes) -> None:
        self.body = body

    async def receive(self) -> dict[str, Any]:
        return {"type": "http.request", "body": self.body, "more_body": False}


def _requests(token: str) -> dict[str, tuple[str, list[tuple[bytes, bytes]], bytes]]:
    auth = (b"authorization", f"Bearer {token}".encode())
    host = (b"host", b"127.0.0.1:8080")
    binary = np.array([ROW], dtype=np.float64).tobytes()
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP64",
                    "shape": [1, 6],
                    "parameters": {"binary_data_size": len(binary)},
                }
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        }
    )
    return {
        "v2-json": (
            "/v2/models/credit/infer",
            [host, auth, (b"content-type", b"application/json")],
            orjson.dumps({"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 6], "data": [ROW]}]}),
        ),
        "v2-binary": (
            "/v2/models/credit/infer",
            [
                host,
                auth,
                (b"content-type", b"application/octet-stream"),
                (b"inference-header-content-length", str(len(header)).encode()),
            ],
            header + binary,
        ),
        "mlflow": (
            "/endpoints/credit/invocations",
            [host, auth, (b"content-type", b"application/json")],
            orjson.dumps({"dataframe_split": {"columns": FEATURES, "data": [ROW]}}),
        ),
    }


def _call(app: RestApp, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> int:
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [*headers, (b"content-length", str(len(body)).encode())],
        "query_string": b"",
        "client": ("127.0.0.1", 50000),
    }
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.get_event_loop().run_until_complete(app(scope, _Cycle(body).receive, send))
    return int(sent[0]["status"])


def _count(app: RestApp, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> int:
    profile = cProfile.Profile()
    profile.enable()
    status = _call(app, path, headers, body)
    profile.disable()
    assert status == 200
    return int(pstats.Stats(profile).total_calls)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def served(served_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RestApp, str]]:
    home = tmp_path_factory.mktemp("budget") / "home"
    shutil.copytree(served_home, home)
    registry = open_registry(Settings(home=home))
    try:
        registry.store.monitoring.set_log_policy(
            "credit", LogPolicy(sample_rate=1.0).to_dict(), actor="local:test"
        )
        created = KeyStore(registry.store).create(
            name="budget", role="consumer", models=["credit*"], actor="local:test"
        )
    finally:
        registry.close()
    assert created is not None
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    app = create_app(Settings(home=home))  # the defaults: keys, metrics, access log
    yield app, created[1]
    app.plane.pool.registry.close()
    loop.close()
    asyncio.set_event_loop(None)


def measure(app: RestApp, token: str) -> dict[str, int]:
    """Calls per request of each protocol: the fewest of three profiled requests, after warm-up."""
    counts = {}
    for protocol, (path, headers, body) in _requests(token).items():
        for _ in range(3):  # loads, warms and fills every lazy cache first
            assert _call(app, path, headers, body) == 200
        counts[protocol] = min(_count(app, path, headers, body) for _ in range(3))
    return counts


def over_budget(counts: dict[str, int], budget: dict[str, int]) -> list[str]:
    return [
        f"{protocol}: {counts[protocol]} calls, budget {budget[protocol]} (+{SLACK - 1:.0%} allowed)"
        for protocol in counts
        if counts[protocol] > budget[protocol] * SLACK
    ]


def test_one_request_stays_within_its_call_budget(served: tuple[RestApp, str]) -> None:
    app, token = served
    counts = measure(app, token)
    if os.environ.get("MODELPORT_RECORD_CALL_BUDGET") == "1":
        BUDGET_FILE.write_text(json.dumps(counts, indent=2, sort_keys=True) + "\n")
    budget = json.loads(BUDGET_FILE.read_text())
    print(f"calls per request: {counts}")
    assert set(budget) == set(counts)
    assert not over_budget(counts, budget), over_budget(counts, budget)
    assert measure(app, token) == counts  # the counts are deterministic: the guard cannot flake


def test_the_guard_fails_when_the_hot_path_grows(
    served: tuple[RestApp, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deliberate extra cost — 600 more calls in one function every request passes through — is
    caught on every protocol."""
    import modelport.serving.rest as rest

    real: Callable[..., Any] = rest.make_request_id  # type: ignore[attr-defined]

    def slower(sent: str | None) -> str:
        for _ in range(300):
            abs(1)  # one builtin call each
            _nothing()
        return str(real(sent))

    monkeypatch.setattr(rest, "make_request_id", slower)
    app, token = served
    budget = json.loads(BUDGET_FILE.read_text())
    assert len(over_budget(measure(app, token), budget)) == 3


def _nothing() -> None:
    return None
