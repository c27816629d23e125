"""A keyed `modelport serve` (no --insecure-dev) over a registry with two models and one key per role,
and the same app in-process (``keyed_app``) for tests that need no real server."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest

from modelport.app import open_registry
from modelport.registry.service import Registry
from modelport.security.store import KeyStore
from modelport.settings import Settings
from tests.serving.conftest import (
    InProcess,
    Server,
    free_port,
    registered_home,
    serve_in_process,
    start_server,
    stop_server,
)

ROW = {"name": "input", "datatype": "FP64", "shape": [1, 6], "data": [[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]]}
INFER = {"inputs": [ROW]}


@dataclass
class Keys:
    admin: str
    publisher: str  # credit*
    consumer: str  # credit*
    other: str  # consumer of fraud only

    @staticmethod
    def id_of(token: str) -> str:
        return token.split("_")[1]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_key(home: Path, role: str, models: list[str] | None = None, **limits: object) -> str:
    registry = open_registry(Settings(home=home))
    try:
        created = KeyStore(registry.store).create(
            name=f"test {role}",
            role=role,
            models=models,
            actor="local:test",
            **limits,  # type: ignore[arg-type]
        )
    finally:
        registry.close()
    assert created is not None
    return created[1]


def open_home(home: Path) -> Registry:
    return open_registry(Settings(home=home))


@pytest.fixture(scope="module")
def keyed_home(tmp_path_factory: pytest.TempPathFactory, data: pd.DataFrame, sklearn_model: object) -> Path:
    """``credit`` v1 (production) and v2 (staging), ``fraud`` v1 (production): a copy per test module."""
    home = tmp_path_factory.mktemp("keyed") / "home"
    return registered_home("keyed", home, tmp_path_factory, data, sklearn_model)


@pytest.fixture(scope="module")
def keys(keyed_home: Path) -> Keys:
    return Keys(
        admin=make_key(keyed_home, "admin"),
        publisher=make_key(keyed_home, "publisher", ["credit*"]),
        consumer=make_key(keyed_home, "consumer", ["credit*"]),
        other=make_key(keyed_home, "consumer", ["fraud"]),
    )


@dataclass
class Keyed:
    server: Server
    grpc_port: int

    def client(self, token: str | None = None) -> httpx.Client:
        headers = bearer(token) if token else {}
        return httpx.Client(base_url=self.server.url, timeout=30, headers=headers)


# The route walks send hundreds of keyless requests from one address: let them all be answered
# (the brute-force limit has its own test with the defaults).
AUTH_FAILURE_BURST = 100_000


@pytest.fixture(scope="module")
def keyed_app(keyed_home: Path, keys: Keys) -> Iterator[InProcess]:
    """The app of ``keyed`` in this process, for tests of what it answers (no gRPC, no socket)."""
    settings = {"default_model": "credit@production", "auth_failure_burst": AUTH_FAILURE_BURST}
    with serve_in_process(keyed_home, insecure_dev=False, **settings) as app:
        yield app


@pytest.fixture(scope="module")
def keyed(keyed_home: Path, keys: Keys) -> Iterator[Keyed]:
    grpc_port = free_port()
    env = {"MODELPORT_AUTH_FAILURE_BURST": str(AUTH_FAILURE_BURST)}
    server = start_server(
        keyed_home,
        "--grpc-port",
        str(grpc_port),
        "--default-model",
        "credit@production",
        insecure_dev=False,
        env=env,
    )
    yield Keyed(server, grpc_port)
    stop_server(server)
