"""A worker that cannot start makes `modelport serve` exit with status 1 and the reason, within a bounded
time, with one worker and with several — instead of starting workers again forever
(serving/supervisor.py).

The failures are real ones, brought about from the environment only:

- the generated gRPC code refuses the protobuf runtime at import (``VersionError``, as measured with a
  runtime older than the gencode): a ``sitecustomize`` on ``PYTHONPATH`` makes that import fail the
  same way in every process that tries it — only the workers do (the `serve` process never imports
  the gRPC code);
- the gRPC port is taken: the worker's start-up (its ASGI lifespan) raises.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.serving.conftest import free_port

BOUND = 90.0  # seconds: three worker starts on a loaded two-core machine take about 10-20
OLD_PROTOBUF_RUNTIME = '''
import sys


class _OldProtobufRuntime:
    """Fails the import of the generated gRPC code as a protobuf runtime older than the gencode does."""

    def find_spec(self, name, path=None, target=None):
        if name == "modelport.serving.protocol.inference_pb2":
            from google.protobuf.runtime_version import VersionError

            raise VersionError(
                "Detected incompatible Protobuf Gencode/Runtime versions when loading "
                "modelport/serving/protocol/inference.proto: gencode 7.36.2 runtime 6.31.1. "
                "Runtime version cannot be older than the linked gencode version."
            )
        return None


sys.meta_path.insert(0, _OldProtobufRuntime())
'''


@dataclass
class Ended:
    status: int
    stderr: str
    seconds: float


def serve_until_it_ends(home: Path, *args: str, env: dict[str, str] | None = None) -> Ended:
    """Run `modelport serve` to its end; kill its whole process group if it outlives :data:`BOUND`."""
    exe = str(Path(sys.executable).with_name("modelport"))
    environment = {**os.environ, "MODELPORT_HOME": str(home), "MODELPORT_DRAIN_SECONDS": "0", **(env or {})}
    started = time.monotonic()
    process = subprocess.Popen(
        [exe, "serve", "--port", str(free_port()), "--insecure-dev", *args],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its workers too: nothing may outlive the test
    )
    try:
        _, stderr = process.communicate(timeout=BOUND)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        _, stderr = process.communicate()
        pytest.fail(f"serve still running after {BOUND} s:\n{stderr.decode(errors='replace')[-3000:]}")
    ended = Ended(process.returncode, stderr.decode(errors="replace"), time.monotonic() - started)
    # multiprocessing's resource tracker ends a moment after the supervisor, when its pipe closes
    deadline = time.monotonic() + 10
    while (left := _group_members(process.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"processes outlived `modelport serve`: {left}"
    return ended


def _group_members(group: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text() if entry.isdigit() else ""
        except OSError:
            continue
        if stat and int(stat.rsplit(")", 1)[1].split()[3]) == group:
            members.append(int(entry))
    return members


@pytest.mark.parametrize("workers", [1, 2])
def test_a_worker_that_cannot_import_stops_serve_with_the_reason(
    served_home: Path, tmp_path: Path, workers: int
) -> None:
    (tmp_path / "sitecustomize.py").write_text(OLD_PROTOBUF_RUNTIME)
    ended = serve_until_it_ends(
        served_home,
        "--workers",
        str(workers),
        "--grpc-port",
        str(free_port()),
        env={"PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))},
    )
    assert ended.status == 1, ended.stderr
    lines = ended.stderr.strip().splitlines()
    assert lines[-1].startswith(
        "error: the server could not start: VersionError: Detected incompatible Protobuf Gencode/Runtime"
    ), ended.stderr
    assert "Traceback" not in ended.stderr
    if workers > 1:
        # started again twice, then given up: a bounded number of attempts
        assert lines[-1].endswith("(3 worker starts failed in a row)")
        assert sum("could not start (" in line for line in lines) == 2
    assert ended.seconds < BOUND


@pytest.mark.parametrize("workers", [1, 2])
def test_a_worker_whose_start_up_fails_stops_serve(served_home: Path, workers: int) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        grpc_port = taken.getsockname()[1]
        ended = serve_until_it_ends(served_home, "--workers", str(workers), "--grpc-port", str(grpc_port))
    assert ended.status == 1, ended.stderr
    assert f"Failed to bind to address 127.0.0.1:{grpc_port}" in ended.stderr  # uvicorn logged why
    last = ended.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the server could not start: "), ended.stderr
    assert "reason is logged above" in last
