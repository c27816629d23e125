"""A real `modelport serve` process on 127.0.0.1 with real registered models."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import pandas as pd
import pytest

from modelport.app import open_registry
from modelport.settings import Settings
from tests.conftest import FEATURES


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    port: int
    home: Path
    process: subprocess.Popen[bytes]

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)


def start_server(
    home: Path,
    *args: str,
    env: dict[str, str] | None = None,
    ready_check: bool = True,
    insecure_dev: bool = True,
    scheme: str = "http",
    verify: ssl.SSLContext | bool = True,
    log_file: Path | None = None,
) -> Server:
    """Start `modelport serve`; wait for readiness (or, without ``ready_check``, for any answer).

    Protocol tests run the explicit development mode (``--insecure-dev``): what they test is the
    protocol. Everything about keys is tested in ``tests/security`` with ``insecure_dev=False``."""
    if insecure_dev:
        args = (*args, "--insecure-dev")
    port = free_port()
    # No drain period unless a test asks for one: stopping test servers stays fast.
    environment = {**os.environ, "MODELPORT_HOME": str(home), "MODELPORT_DRAIN_SECONDS": "0", **(env or {})}
    exe = str(Path(sys.executable).with_name("modelport"))
    stderr: int | IO[bytes] = subprocess.DEVNULL
    if log_file is not None:
        stderr = log_file.open("ab")
    process = subprocess.Popen(
        [exe, "serve", "--port", str(port), *args],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    if not isinstance(stderr, int):
        stderr.close()  # the child has its own copy
    url = f"{scheme}://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "server exited during start-up"
        try:
            status = httpx.get(f"{url}/v2/health/ready", timeout=1, verify=verify).status_code
            if status == 200 or not ready_check:
                return Server(url, port, home, process)
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("server did not become ready within 60 s")


def stop_server(server: Server) -> int:
    server.process.terminate()
    try:
        return server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        return server.process.wait()


@pytest.fixture(scope="module")
def served_home(tmp_path_factory: pytest.TempPathFactory, data: pd.DataFrame, sklearn_model: object) -> Path:
    from sklearn.linear_model import LogisticRegression

    home = tmp_path_factory.mktemp("served") / "home"
    registry = open_registry(Settings(home=home, equivalence_rows=300), create=True)
    try:
        registry.register(sklearn_model, name="credit", sample=data, target="label", alias="production")
        other = LogisticRegression(C=0.01, max_iter=500).fit(data[FEATURES], data["label"])
        registry.register(other, name="credit", sample=data, target="label", alias="staging")
    finally:
        registry.close()
    return home


@pytest.fixture(scope="module")
def server(served_home: Path) -> Iterator[Server]:
    running = start_server(served_home, "--default-model", "credit@production")
    yield running
    stop_server(running)
