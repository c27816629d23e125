"""A real HTTP receiver on 127.0.0.1 and a registry whose webhook settings make backoff tiny."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from modelport.app import open_registry
from modelport.registry.service import Registry
from modelport.settings import Settings

# Tests need loopback and plain http; the backoff is a few milliseconds.
FAST = {
    "webhook_allow_http": True,
    "webhook_allow_private": True,
    "webhook_backoff_seconds": [0.01],
    "webhook_max_attempts": 3,
    "webhook_poll_seconds": 0.05,
}


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str
    received: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # answered in turn; then 200
    location: str = ""  # for 3xx answers
    lock: threading.Lock = field(default_factory=threading.Lock)

    def events(self) -> list[Received]:
        with self.lock:
            return list(self.received)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            with state.lock:
                state.received.append(
                    Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                status = state.statuses.pop(0) if state.statuses else 200
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", state.location)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def events_registry(tmp_path: Path) -> Iterator[Registry]:
    registry = open_registry(Settings(home=tmp_path / "home", **FAST), create=True)  # type: ignore[arg-type]
    yield registry
    registry.close()
