"""HAProxy (Debian's ``/usr/sbin/haproxy``) in front of replicas, on 127.0.0.1, for tests and benchmarks.

:func:`start_balancer` writes a configuration into a directory of its own, starts HAProxy in the
foreground (``-db``: no daemon, so the process it returns *is* the balancer) and waits until every
replica is marked up; :meth:`Balancer.stop` ends that process by its PID. The balancer's view of each
replica (UP, DOWN …) is read from its stats socket, how each request ended from its log
(``MODELPORT_TEST_KEEP_BALANCER=1`` keeps the directory, configuration and log, for a look afterwards).

The configuration is the one docs/deploy.md recommends:

- a health check on ``/v2/health/ready`` every 100 ms, two failures mark a replica down: a SIGTERMed
  replica answers 503 there at once and keeps serving for ``MODELPORT_DRAIN_SECONDS``, so the balancer
  stops sending before the replica closes its socket;
- ``retry_on``: which failed attempts HAProxy sends again, to another replica (``option redispatch``).
  ``FULL_RETRY`` also retries a request the replica took and never answered (it died): safe here
  because a scoring call is pure — sending it twice changes nothing but the usage count.
  ``CONNECT_RETRY`` is HAProxy's default (only attempts that never reached a replica); ``NO_RETRY``
  turns retries off, to measure what a client sees without them.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CONNECT_RETRY", "FULL_RETRY", "NO_RETRY", "Balancer", "haproxy", "start_balancer"]

FULL_RETRY = "conn-failure empty-response junk-response"
# Only scoring calls are resent after a replica took them (deploy/haproxy/haproxy.cfg says why).
SCORING_ONLY = "http-request disable-l7-retry if !{ path_end /infer } !{ path_end /invocations }"
CONNECT_RETRY = "conn-failure"
NO_RETRY = "none"


# the end of an `option httplog` line: status, bytes, two captured cookies, the termination state
_TERMINATION = re.compile(r" -?\d+ \d+ \S+ \S+ (\S\S)\S\S ")


def haproxy() -> str | None:
    """The HAProxy binary (``make tools`` installs it), or None."""
    return shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else None
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config(port: int, backends: list[int], socket_path: Path, retry_on: str) -> str:
    """The HAProxy configuration: one frontend on ``port``, round robin over ``backends`` (ports)."""
    retries = "retries 0"
    if retry_on != NO_RETRY:
        # An L7 retry resends the request HAProxy kept: it must hold the whole body before it sends any
        # of it (http-buffer-request), or a request a replica took cannot be sent again.
        retries = (
            f"retries 3\n    option redispatch 1\n    option http-buffer-request\n    retry-on {retry_on}"
            f"\n    {SCORING_ONLY}"
        )
    servers = "\n".join(f"    server r{i} 127.0.0.1:{p}" for i, p in enumerate(backends))
    return f"""\
global
    maxconn 4096
    log stdout format raw local0 info
    stats socket {socket_path} mode 600 level admin

defaults
    mode http
    log global
    option httplog
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout check 2s

frontend front
    bind 127.0.0.1:{port}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk
    http-check send meth GET uri /v2/health/ready ver HTTP/1.1 hdr Host 127.0.0.1
    http-check expect status 200
    {retries}
    default-server check inter 100ms fastinter 100ms downinter 100ms fall 2 rise 1
{servers}
"""


@dataclass
class Balancer:
    url: str
    port: int
    directory: Path
    process: subprocess.Popen[bytes]
    retry_on: str

    def states(self) -> dict[str, str]:
        """Each replica's status as the balancer sees it: ``{"r0": "UP", "r1": "DOWN", ...}``."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.directory / "stats.sock"))
            sock.sendall(b"show stat\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        text = b"".join(chunks).decode().lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {
            row["svname"]: row["status"].split()[0]
            for row in rows
            if row["pxname"] == "replicas" and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def wait_for(self, expected: dict[str, str], timeout: float = 20.0) -> None:
        """Until the balancer reports these states (e.g. ``{"r2": "UP"}``)."""
        deadline = time.monotonic() + timeout
        while True:
            states = self.states()
            if all(states.get(name) == status for name, status in expected.items()):
                return
            assert time.monotonic() < deadline, f"balancer states {states}, expected {expected}"
            time.sleep(0.02)

    def terminations(self) -> Counter[str]:
        """How the logged requests ended, by HAProxy's two-letter termination state: ``--`` normally,
        ``SD`` when the replica died after it had begun its response (no balancer can send that request
        again: part of an answer has gone to the client)."""
        log = (self.directory / "haproxy.log").read_text(errors="replace")
        return Counter(match[1] for match in _TERMINATION.finditer(log))

    def stop(self) -> None:
        """End HAProxy by its PID (SIGTERM: immediate stop) and remove its directory (unless kept)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if not os.environ.get("MODELPORT_TEST_KEEP_BALANCER"):
            shutil.rmtree(self.directory, ignore_errors=True)


def start_balancer(backends: list[int], *, retry_on: str = FULL_RETRY, wait_up: bool = True) -> Balancer:
    """HAProxy on a free port of 127.0.0.1 over the replicas listening on ``backends``; with ``wait_up``,
    returns once every replica is marked up."""
    binary = haproxy()
    assert binary is not None, "HAProxy is not installed (make tools)"
    # A short directory: the stats socket's path must fit a Unix socket address (108 bytes).
    directory = Path(tempfile.mkdtemp(prefix="mp-lb-"))
    port = _free_port()
    path = directory / "haproxy.cfg"
    path.write_text(config(port, backends, directory / "stats.sock", retry_on))
    check = subprocess.run([binary, "-c", "-q", "-f", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    with (directory / "haproxy.log").open("wb") as log:
        process = subprocess.Popen(
            [binary, "-db", "-f", str(path)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    balancer = Balancer(f"http://127.0.0.1:{port}", port, directory, process, retry_on)
    deadline = time.monotonic() + 10
    while not (directory / "stats.sock").exists():
        if process.poll() is not None or time.monotonic() > deadline:
            balancer.stop()
            raise AssertionError(f"HAProxy did not start: {(directory / 'haproxy.log').read_text()[-2000:]}")
        time.sleep(0.02)
    if wait_up:
        balancer.wait_for({f"r{i}": "UP" for i in range(len(backends))})
    return balancer
