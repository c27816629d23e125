"""A worker that cannot start makes `modelport serve` exit with status 1 and the reason, within a bounded
time, with one worker and with several — instead of starting workers again forever
(serving/supervisor.py).

The failures are real ones, brought about from the environment only:

- the generated gRPC code refuses the protobuf runtime at import (``VersionError``, as measured with a
  runtime older than the gencode): a ``sitecustomize`` on ``PYTHONPATH`` makes that import fail the
  same way in every process that tries it — only the workers do (the `serve` process never imports
  the gRPC code);
- the gRPC port is taken: the worker's start-up (its ASGI lifespan) raises.

The four `serve` runs (two failures, one and two workers) run at once, each on its own copy of the
registry, before the module's first test; each test checks its own.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
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
                "modelport/serving/protocol/inference.proto: gencode 6.30.0 runtime 5.29.5. "
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


@dataclass
class Runs:
    cannot_import: dict[int, Future[Ended]]  # by worker count
    start_up_fails: dict[int, tuple[Future[Ended], int]]  # by worker count: the run, the taken port


@pytest.fixture(scope="module")
def runs(served_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    base = tmp_path_factory.mktemp("fail-fast")
    (base / "site").mkdir()
    (base / "site" / "sitecustomize.py").write_text(OLD_PROTOBUF_RUNTIME)
    path = os.pathsep.join(filter(None, [str(base / "site"), os.environ.get("PYTHONPATH")]))

    def home(name: str) -> Path:
        return shutil.copytree(served_home, base / name)

    with ExitStack() as stack:
        taken = {}  # the gRPC ports to fail on, held until every run has ended (closed last)
        for workers in (1, 2):
            taken[workers] = stack.enter_context(socket.socket())
            taken[workers].bind(("127.0.0.1", 0))
            taken[workers].listen()
        pool = stack.enter_context(ThreadPoolExecutor(4))
        cannot_import = {
            workers: pool.submit(
                serve_until_it_ends,
                home(f"import-{workers}"),
                "--workers",
                str(workers),
                "--grpc-port",
                str(free_port()),
                env={"PYTHONPATH": path},
            )
            for workers in (1, 2)
        }
        start_up_fails = {}
        for workers, sock in taken.items():
            grpc_port = sock.getsockname()[1]
            run = pool.submit(
                serve_until_it_ends,
                home(f"start-up-{workers}"),
                "--workers",
                str(workers),
                "--grpc-port",
                str(grpc_port),
            )
            start_up_fails[workers] = (run, grpc_port)
        yield Runs(cannot_import, start_up_fails)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_worker_that_cannot_import_stops_serve_with_the_reason(runs: Runs, workers: int) -> None:
    ended = runs.cannot_import[workers].result()
    assert ended.status == 1, ended.stderr
    lines = ended.stderr.strip().splitlines()
    # the reason, and what to install about it (serving/protocol/__init__.py)
    assert lines[-1].startswith(
        "error: the server could not start: MissingExtra: gRPC serving (--grpc-port) needs "
        "protobuf>=6.30.0 and grpcio>=1.72.1, found protobuf "
    ), ended.stderr
    assert "(Detected incompatible Protobuf Gencode/Runtime versions" in lines[-1], ended.stderr
    assert "pip install --upgrade 'modelport[grpc]'" in lines[-1], ended.stderr
    assert "Traceback" not in ended.stderr
    if workers > 1:
        # started again twice, then given up: a bounded number of attempts
        assert lines[-1].endswith("(3 worker starts failed in a row)")
        assert sum("could not start (" in line for line in lines) == 2
    assert ended.seconds < BOUND


@pytest.mark.parametrize("workers", [1, 2])
def test_a_worker_whose_start_up_fails_stops_serve(runs: Runs, workers: int) -> None:
    run, grpc_port = runs.start_up_fails[workers]
    ended = run.result()
    assert ended.status == 1, ended.stderr
    assert f"Failed to bind to address 127.0.0.1:{grpc_port}" in ended.stderr  # uvicorn logged why
    last = ended.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the server could not start: "), ended.stderr
    assert "reason is logged above" in last
