"""Slow and hostile clients against a real `modelport serve`, over raw sockets: nothing a client without
a key can hold is unbounded (headers, bodies, time, connections), duplicated credentials are refused,
``--insecure-dev`` refuses what a browser sends cross-site, and an expired TLS certificate is reported.

The module's four servers start together (each on its own copy of the registry) before its first test:
their start-ups overlap each other, never a test's timings."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
import trustme

from modelport.cli.main import certificate_warning
from tests.security.conftest import make_key
from tests.serving.conftest import Server, free_port, new_connection_each, start_server, stop_server

TIMEOUT = 0.5  # header and body timeouts of the `slow` server, seconds (never early, at most T/4 late)
SLACK = 2.5  # how late a timeout may fire on a loaded test machine
CAP = 4  # connections per address of the `keyed` server


@dataclass
class Keyed:
    server: Server
    grpc_port: int
    key: str


@dataclass
class Servers:
    slow: Server  # header and body timeouts of TIMEOUT
    keyed: Keyed  # keys checked, CAP connections per address, gRPC
    workers: Server  # two workers, header timeout of TIMEOUT
    tls: Server  # TLS with an expired certificate
    tls_log: Path  # its standard error


@pytest.fixture(scope="module")
def servers(served_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    base = tmp_path_factory.mktemp("slow-clients")
    homes = {name: shutil.copytree(served_home, base / name) for name in ("slow", "keyed", "workers", "tls")}
    key = make_key(homes["keyed"], "admin")
    grpc_port = free_port()
    now = dt.datetime.now(dt.UTC)
    cert, cert_key = _cert(base, "expired", now - dt.timedelta(days=400), now - dt.timedelta(days=2))
    log = base / "serve.log"
    timeouts = {
        "MODELPORT_HEADER_TIMEOUT_SECONDS": str(TIMEOUT),
        "MODELPORT_BODY_TIMEOUT_SECONDS": str(TIMEOUT),
    }
    with ThreadPoolExecutor(4) as pool:
        starts = {
            "slow": pool.submit(start_server, homes["slow"], env=timeouts),
            "keyed": pool.submit(
                start_server,
                homes["keyed"],
                "--grpc-port",
                str(grpc_port),
                env={"MODELPORT_MAX_CONNECTIONS_PER_ADDRESS": str(CAP)},
                insecure_dev=False,
            ),
            "workers": pool.submit(
                start_server,
                homes["workers"],
                "--workers",
                "2",
                env={"MODELPORT_HEADER_TIMEOUT_SECONDS": str(TIMEOUT)},
            ),
            "tls": pool.submit(
                start_server,
                homes["tls"],
                "--tls-cert",
                str(cert),
                "--tls-key",
                str(cert_key),
                scheme="https",
                verify=False,
                log_file=log,
            ),
        }
    try:
        running = {name: start.result() for name, start in starts.items()}
        yield Servers(
            running["slow"], Keyed(running["keyed"], grpc_port, key), running["workers"], running["tls"], log
        )
    finally:
        for start in starts.values():
            if start.exception() is None:
                stop_server(start.result())


@pytest.fixture(scope="module")
def slow(servers: Servers) -> Server:
    return servers.slow


@pytest.fixture(scope="module")
def keyed(servers: Servers) -> Keyed:
    return servers.keyed


# -- raw HTTP/1.1 helpers ------------------------------------------------------------------------------


def connect(port: int, timeout: float = 10) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> str:
        assert self.headers.get("content-type") == "application/json"
        message = json.loads(self.body)["error"]
        assert isinstance(message, str)
        return message


def read_answer(sock: socket.socket, timeout: float = 10) -> Answer | None:
    """One response from ``sock``, or None when the server closed (or reset) without one."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        headers = {name: value.strip() for name, value in headers.items()}
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    except ConnectionResetError:
        return None
    return Answer(int(lines[0].split()[1]), headers, body)


def closed(sock: socket.socket, timeout: float = 10) -> bool:
    """True when the server closes ``sock`` within ``timeout`` (whatever it sent first is skipped)."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return False


def live_seconds(server: Server) -> float:
    """Seconds a liveness probe takes on a fresh connection."""
    started = time.monotonic()
    response = httpx.get(f"{server.url}/v2/health/live", timeout=5)
    assert response.status_code == 200
    return time.monotonic() - started


def get(path: str, *headers: str) -> bytes:
    extra = "".join(f"{h}\r\n" for h in headers)
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode()


# -- bodies, headers, slowloris ------------------------------------------------------------------------


def test_a_stalled_body_gets_408_while_others_are_served(slow: Server) -> None:
    with connect(slow.port) as sock:
        sock.sendall(
            b"POST /v2/models/credit/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n" + b'{"inputs":'
        )
        started = time.monotonic()
        while time.monotonic() - started < TIMEOUT * 0.8:  # the worker answers others meanwhile
            assert live_seconds(slow) < 0.5
        answer = read_answer(sock, timeout=TIMEOUT + SLACK)
        waited = time.monotonic() - started
        assert answer is not None and answer.status == 408, answer
        assert "did not arrive in time" in answer.error()
        assert answer.headers["connection"] == "close"
        assert TIMEOUT * 0.8 < waited < TIMEOUT + SLACK
        assert closed(sock, timeout=SLACK)
    assert live_seconds(slow) < 0.5


def test_slowloris_connections_are_all_cut_off(slow: Server) -> None:
    count = 150
    sockets = [connect(slow.port) for _ in range(count)]
    started = time.monotonic()
    try:
        for sock in sockets:
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            sock.setblocking(False)
        open_ = set(range(count))
        answers: dict[int, bytes] = {}
        deadline = started + TIMEOUT + SLACK
        while open_ and time.monotonic() < deadline:
            for index in list(open_):  # one more header line each, never the blank line
                sock = sockets[index]
                try:
                    chunk = sock.recv(65536)
                except BlockingIOError:
                    chunk = None
                except ConnectionResetError:
                    chunk = b""
                if chunk == b"":
                    open_.discard(index)
                    continue
                if chunk:
                    answers[index] = answers.get(index, b"") + chunk
                with contextlib.suppress(BlockingIOError, BrokenPipeError, ConnectionResetError):
                    sock.send(b"X-Slow: 1\r\n")
            if time.monotonic() - started < TIMEOUT * 0.8:
                assert not answers, "cut off before the header timeout"
            assert live_seconds(slow) < 0.5  # the server answers probes meanwhile
            time.sleep(0.2)
        assert not open_, f"{len(open_)} slow connections still open after {TIMEOUT + SLACK} s"
        assert answers, "no 408 seen"
        assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers.values())
    finally:
        for sock in sockets:
            sock.close()
    assert live_seconds(slow) < 0.5


def test_kept_alive_connections_are_timed_too(slow: Server) -> None:
    # the second request's headers are timed from its first byte
    with connect(slow.port) as sock:
        sock.sendall(get("/v2/health/live"))
        answer = read_answer(sock)
        assert answer is not None and answer.status == 200
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        answer = read_answer(sock, timeout=TIMEOUT + SLACK)
        assert answer is not None and answer.status == 408, answer
        assert "headers did not arrive" in answer.error()
        assert TIMEOUT * 0.8 < time.monotonic() - started < TIMEOUT + SLACK
    # answered before its body came (a probe reads no body): the rest must still come in time
    with connect(slow.port) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\nabc")
        answer = read_answer(sock)
        assert answer is not None and answer.status == 200
        started = time.monotonic()
        assert closed(sock, timeout=TIMEOUT + SLACK)
        assert time.monotonic() - started > TIMEOUT * 0.5


def test_a_silent_connection_is_closed(slow: Server) -> None:
    with connect(slow.port) as sock:
        started = time.monotonic()
        assert closed(sock, timeout=TIMEOUT + SLACK)
        assert time.monotonic() - started > TIMEOUT * 0.8


def test_24_mb_of_headers_get_431_before_they_are_read(slow: Server) -> None:
    total = 24 << 20
    sent = 0

    def send_headers(sock: socket.socket) -> None:
        nonlocal sent
        block = b"a" * (1 << 20)
        try:
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
            while sent < total:
                sock.sendall(block)
                sent += len(block)
            sock.sendall(b"\r\n\r\n")
        except OSError:
            pass  # the server closed the connection: what this test wants

    with connect(slow.port) as sock:
        sender = threading.Thread(target=send_headers, args=(sock,), daemon=True)
        sender.start()
        answer = read_answer(sock, timeout=10)
        sender.join(timeout=10)
        assert not sender.is_alive()
        # The server stopped reading after its limit: the client could not even hand it all to TCP
        # (it gets a reset), yet the 431 sent before that reset is read.
        assert sent < total
        assert answer is not None and answer.status == 431, answer
        assert "over the limit" in answer.error()
    assert live_seconds(slow) < 0.5


def test_header_limits_answer_431(slow: Server) -> None:
    many = tuple(f"X-H{i}: {i}" for i in range(1000))
    for request in (get("/v2/health/live", *many), get("/v2/health/live", "X-Big: " + "a" * (70 << 10))):
        with connect(slow.port) as sock:
            sock.sendall(request)
            answer = read_answer(sock)
            assert answer is not None and answer.status == 431, answer
            assert "header" in answer.error()
            assert answer.headers["connection"] == "close"
            assert closed(sock)
    with connect(slow.port) as sock:  # not HTTP at all: JSON too, not uvicorn's plain text
        sock.sendall(b"\x16\x03\x01 hello\r\n\r\n")
        answer = read_answer(sock)
        assert answer is not None and answer.status == 400 and "invalid HTTP" in answer.error()
    # just under the limits is served
    fine = tuple(f"X-H{i}: {i}" for i in range(90))
    with connect(slow.port) as sock:
        sock.sendall(get("/v2/health/live", *fine, "X-Big: " + "a" * (60 << 10)))
        answer = read_answer(sock)
        assert answer is not None and answer.status == 200
    assert live_seconds(slow) < 0.5


def test_limits_hold_in_every_worker(servers: Servers) -> None:
    """With --workers the guard reaches each worker process inside uvicorn's pickled configuration."""
    server = servers.workers
    many = get("/v2/health/live", *(f"X-H{i}: {i}" for i in range(200)))
    for _ in range(10):  # fresh connections, accepted by either worker
        with connect(server.port) as sock:
            sock.sendall(many)
            answer = read_answer(sock)
            assert answer is not None and answer.status == 431, answer
    with connect(server.port) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\n")
        answer = read_answer(sock, timeout=TIMEOUT + SLACK)
        assert answer is not None and answer.status == 408, answer


# -- connections per address ---------------------------------------------------------------------------


def test_connections_per_address_are_capped(keyed: Keyed) -> None:
    held: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 15
        while len(held) < CAP:  # earlier connections may still be closing on the server: retry
            assert time.monotonic() < deadline, "the cap was never free"
            sock = connect(keyed.server.port)
            sock.sendall(get("/v2/health/live"))
            answer = read_answer(sock)
            if answer is not None and answer.status == 200:
                held.append(sock)
            else:
                sock.close()
                time.sleep(0.1)
        with connect(keyed.server.port) as extra:
            answer = read_answer(extra)
            if answer is not None:
                assert answer.status == 503 and "too many connections" in answer.error()
            assert closed(extra)
        for sock in held:  # the first ones still work
            sock.sendall(get("/v2/health/live"))
            answer = read_answer(sock)
            assert answer is not None and answer.status == 200
        held.pop().close()
        deadline = time.monotonic() + 10
        while True:  # a place is free again once the server has seen the close
            with connect(keyed.server.port) as sock:
                sock.sendall(get("/v2/health/live"))
                answer = read_answer(sock)
                if answer is not None and answer.status == 200:
                    break
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        for sock in held:
            sock.close()


# -- credentials ---------------------------------------------------------------------------------------


def test_duplicated_credentials_are_refused_over_rest(keyed: Keyed) -> None:
    good, junk = f"Bearer {keyed.key}", "Bearer mp_junk_0000"
    cases: list[tuple[list[tuple[str, str]], int]] = [
        ([("Authorization", good)], 200),
        ([("Authorization", good), ("Authorization", junk)], 400),
        ([("Authorization", junk), ("Authorization", good)], 400),
        ([("X-API-Key", keyed.key), ("X-API-Key", keyed.key)], 400),
        ([("Authorization", good), ("X-API-Key", "mp_other_0000")], 400),
        ([("Authorization", junk), ("X-API-Key", keyed.key)], 400),
        ([("Authorization", good), ("X-API-Key", keyed.key)], 200),  # the same key twice is one key
    ]
    # a fresh connection each: the per-address cap test shares this server
    with new_connection_each(timeout=10) as http:
        for headers, status in cases:
            response = http.get(f"{keyed.server.url}/v2/models/credit", headers=headers)
            assert response.status_code == status, (headers, response.text)
            if status == 400:
                assert "error" in response.json()


def test_duplicated_credentials_are_refused_over_grpc(keyed: Keyed) -> None:
    # tritonclient's stubs, not modelport's: both register the same "inference" protos, and the tests
    # of this process use tritonclient's
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    good = ("authorization", f"Bearer {keyed.key}")
    with grpc.insecure_channel(f"127.0.0.1:{keyed.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerMetadata(pb.ServerMetadataRequest(), metadata=(good,), timeout=10).name
        for metadata in (
            (good, ("authorization", "Bearer mp_junk_0000")),
            (("authorization", "Bearer mp_junk_0000"), good),
            (("x-api-key", keyed.key), ("x-api-key", keyed.key)),
            (good, ("x-api-key", "mp_other_0000")),
        ):
            with pytest.raises(grpc.RpcError) as raised:
                stub.ServerMetadata(pb.ServerMetadataRequest(), metadata=metadata, timeout=10)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, metadata


# -- --insecure-dev and browsers -----------------------------------------------------------------------


def test_insecure_dev_refuses_cross_site_state_changes(slow: Server) -> None:
    http = new_connection_each(timeout=30)  # a fresh connection for each request, as with httpx.post

    def state() -> str:
        index = http.post(f"{slow.url}/v2/repository/index").json()
        return str(next(row["state"] for row in index if row["name"] == "credit"))

    unload = f"{slow.url}/v2/repository/models/credit/unload"
    with http:
        assert http.post(f"{slow.url}/v2/repository/models/credit/load").status_code == 200
        assert state() == "READY"
        for headers in (
            {"Origin": "https://evil.example"},
            {"Origin": "null"},
            {"Origin": "http://127.0.0.1.evil.example"},
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site", "Origin": f"http://localhost:{slow.port + 1}"},
        ):
            response = http.post(unload, headers=headers)
            assert response.status_code == 403, headers
            assert "cross-site" in response.json()["error"]
            assert state() == "READY"  # the model was not unloaded
        # reading is not a state change; a page on the server's own origin and a plain client may
        # change it
        own = {"Origin": f"http://127.0.0.1:{slow.port}", "Sec-Fetch-Site": "same-origin"}
        assert http.get(f"{slow.url}/v2/models/credit", headers={"Origin": "https://evil.example"}).is_success
        assert http.post(unload, headers=own).status_code == 200
        assert state() == "UNAVAILABLE"
        assert http.post(f"{slow.url}/v2/repository/models/credit/load").status_code == 200
        assert http.post(unload).status_code == 200
        assert state() == "UNAVAILABLE"


# -- TLS certificate validity --------------------------------------------------------------------------


def _cert(directory: Path, name: str, not_before: dt.datetime, not_after: dt.datetime) -> tuple[Path, Path]:
    issued = trustme.CA().issue_cert("127.0.0.1", not_before=not_before, not_after=not_after)
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    return cert, key


def test_certificate_warning(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    day = dt.timedelta(days=1)
    expired, _ = _cert(tmp_path, "expired", now - 400 * day, now - day)
    early, _ = _cert(tmp_path, "early", now + day, now + 400 * day)
    soon, _ = _cert(tmp_path, "soon", now - day, now + 3 * day)
    fine, _ = _cert(tmp_path, "fine", now - day, now + 90 * day)
    assert "EXPIRED" in (certificate_warning(expired) or "")
    assert "NOT YET VALID" in (certificate_warning(early) or "")
    assert "expires in 3.0 days" in (certificate_warning(soon) or "")
    assert certificate_warning(fine) is None
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    assert "could not read" in (certificate_warning(garbage) or "")


def test_serve_warns_of_an_expired_certificate(servers: Servers) -> None:
    # `servers` started it with a certificate that expired two days ago; it serves, over TLS
    assert servers.tls.url.startswith("https://") and servers.tls.process.poll() is None
    text = servers.tls_log.read_text()
    assert "WARNING: TLS certificate" in text and "EXPIRED" in text, text
