"""Replicas for tests and benchmarks: N `modelport serve` processes (one worker each, API keys on) that
share one registry database, one artifact store and one Redis, each on a fixed port of 127.0.0.1 (so
that a replica stopped and started again comes back where the balancer looks for it).

Each replica has a home of its own: nothing is shared through the file system except the artifact
store's directory when it is a ``file://`` URL — as if the replicas ran on different hosts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from modelport.app import open_registry
from modelport.registry.service import Registry
from modelport.security.store import KeyStore
from modelport.settings import Settings

__all__ = ["Cluster", "Replica", "bearer"]

INFER = {
    "inputs": [
        {"name": "input", "datatype": "FP64", "shape": [1, 6], "data": [[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]]}
    ]
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Replica:
    name: str  # r0, r1 … (the balancer's server names)
    port: int
    home: Path
    process: subprocess.Popen[bytes] | None = None
    cpus: set[int] | None = None  # pinned to these CPUs (taskset), or free

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class Cluster:
    """Replicas on one database (``database_url``), one artifact store and one Redis."""

    root: Path
    database_url: str
    artifact_url: str
    redis_url: str | None
    drain_seconds: float = 1.5
    store_settings: dict[str, Any] = field(default_factory=dict)  # Settings fields: the S3 endpoint …
    extra_env: dict[str, str] = field(default_factory=dict)
    replicas: list[Replica] = field(default_factory=list)

    def settings(self, **fields: Any) -> Settings:
        return Settings(
            home=self.root / "admin",
            database_url=self.database_url,
            artifact_url=self.artifact_url,
            **self.store_settings,
            **fields,
        )

    def registry(self, *, create: bool = False) -> Registry:
        """The shared registry, opened here (as the CLI on an operator's machine would)."""
        return open_registry(self.settings(equivalence_rows=300), create=create)

    def make_key(self, role: str, **limits: object) -> str:
        registry = self.registry()
        try:
            created = KeyStore(registry.store).create(
                name=f"scaleout {role}",
                role=role,
                actor="local:test",
                **limits,  # type: ignore[arg-type]
            )
        finally:
            registry.close()
        assert created is not None
        return created[1]

    def env(self, replica: Replica) -> dict[str, str]:
        env = {
            **os.environ,
            "MODELPORT_HOME": str(replica.home),
            "MODELPORT_DATABASE_URL": self.database_url,
            "MODELPORT_ARTIFACT_URL": self.artifact_url,
            "MODELPORT_DRAIN_SECONDS": str(self.drain_seconds),
            # everyone behind a balancer shares its address: failed authentications are not counted here
            "MODELPORT_AUTH_FAILURE_BURST": "100000",
            **{f"MODELPORT_{name.upper()}": str(value) for name, value in self.store_settings.items()},
            **self.extra_env,
        }
        if self.redis_url:
            # Redis answers in microseconds, but a loaded test machine can miss the 0.1 s default, and
            # a missed answer turns the shared buckets off for 5 s (tests/security/test_dependencies.py)
            env |= {"MODELPORT_REDIS_URL": self.redis_url, "MODELPORT_REDIS_TIMEOUT_SECONDS": "2"}
        return env

    # -- processes ------------------------------------------------------------------------------

    def add(self, count: int, cpus: list[set[int] | None] | None = None) -> None:
        """Declare ``count`` more replicas (ports chosen now, kept across restarts); not started."""
        for _ in range(count):
            index = len(self.replicas)
            pinned = cpus[index] if cpus is not None and index < len(cpus) else None
            self.replicas.append(Replica(f"r{index}", _free_port(), self.root / f"r{index}", cpus=pinned))

    def start(self, replica: Replica, timeout: float = 60.0) -> None:
        """Start ``replica`` and wait until it reports ready."""
        assert not replica.running(), f"{replica.name} is running"
        replica.home.mkdir(parents=True, exist_ok=True)
        command = [str(Path(sys.executable).with_name("modelport")), "serve", "--port", str(replica.port)]
        if replica.cpus:
            command = ["taskset", "-c", ",".join(map(str, sorted(replica.cpus))), *command]
        with (replica.home / "serve.log").open("ab") as log:
            replica.process = subprocess.Popen(
                command, env=self.env(replica), stdout=subprocess.DEVNULL, stderr=log
            )
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1) as probe:
            while True:
                assert replica.process.poll() is None, f"{replica.name} exited: {self.log_tail(replica)}"
                try:
                    if probe.get(f"{replica.url}/v2/health/ready").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    replica.process.kill()
                    raise AssertionError(
                        f"{replica.name} not ready in {timeout:g} s: {self.log_tail(replica)}"
                    )
                time.sleep(0.05)

    def start_all(self) -> None:
        """Start every replica that is not running, side by side."""
        stopped = [replica for replica in self.replicas if not replica.running()]
        with ThreadPoolExecutor(max_workers=max(1, len(stopped))) as pool:
            for future in [pool.submit(self.start, replica) for replica in stopped]:
                future.result()

    def stop(self, replica: Replica, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Send ``sig`` to the replica's process and wait for it to end (its exit status, None if it was
        not running). After a SIGKILL, children it left behind (none with ONNX-only models; a scoring
        process otherwise) are killed too: they are this test's processes."""
        process = replica.process
        if process is None or process.poll() is not None:
            return None
        try:
            children = psutil.Process(process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        process.send_signal(sig)
        code = self.wait(replica, timeout)
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        return code

    @staticmethod
    def wait(replica: Replica, timeout: float = 30.0) -> int:
        """Wait for the replica's process to end (killed after ``timeout``); its exit status."""
        assert replica.process is not None
        try:
            return replica.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            replica.process.kill()
            return replica.process.wait()

    def stop_all(self) -> None:
        with ThreadPoolExecutor(max_workers=max(1, len(self.replicas))) as pool:
            list(pool.map(self.stop, self.replicas))

    @staticmethod
    def log_tail(replica: Replica, size: int = 2000) -> str:
        try:
            return (replica.home / "serve.log").read_text(errors="replace")[-size:]
        except OSError:
            return ""
