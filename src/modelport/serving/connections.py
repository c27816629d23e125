"""Connection guards: what a client can hold on to before it has been authenticated.

uvicorn's httptools protocol buffers any amount of header data, starts no timer until a connection
has had its first answer, and takes any number of connections from one address. So a client with no
key could keep sockets and memory for as long as it liked. :class:`GuardedProtocol` is uvicorn's
protocol with these limits added, per connection:

- header bytes (request line + fields) over ``max_header_bytes``, or more than ``max_headers`` fields:
  **431**, checked while the bytes come in, so a 24 MB header block is never buffered whole;
- headers not complete within ``header_timeout_seconds`` of the connection opening, or of the first
  byte of the next request on a kept-alive connection: **408** (closed silently if nothing came) —
  found by one sweep per worker every quarter of the timeout (at most 1 s), not a timer per request;
- more than ``max_connections_per_address`` open connections from one address (IPv4 address, or IPv6
  /64) in this worker: **503** and the new connection is closed;
- when the answer was sent before the request body arrived (401, 413, a GET with a body), the rest of
  the body must arrive within ``body_timeout_seconds`` or the connection is closed.

Each refusal is JSON (``{"error": "..."}``) and closes the connection. How long a body may take while
it is being read is the REST adapter's business (``RestApp._read_body``): it is what reads it.

uvicorn is given a :class:`ConnectionGuard` as its ``http`` protocol. The guard is a plain object, so
it travels to ``--workers`` processes with the rest of uvicorn's (pickled) configuration, and each
worker counts its own connections.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass
from typing import Any

import httptools
import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

__all__ = ["ConnectionGuard", "ConnectionLimits", "GuardedProtocol", "address_key"]


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The limits a connection meets before any request on it reaches the application."""

    max_header_bytes: int = 64 << 10
    max_headers: int = 100
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 10.0
    max_connections_per_address: int = 256


def address_key(host: str | None) -> str | None:
    """What connections are counted under: the IPv4 address, or the /64 of an IPv6 address (one host
    usually holds a whole /64, so counting single v6 addresses would count nothing). ``None`` when the
    peer has no IP address (a Unix socket): such connections are not capped."""
    if not host:
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class ConnectionGuard:
    """The ``http`` protocol factory handed to uvicorn; holds one worker's open-connection counts."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.open: dict[str, int] = {}
        # Connections whose headers are being waited for are checked by one sweep a fraction of the
        # header timeout apart, not by a timer per request: arming and cancelling a timer costs ~2 µs,
        # on every request; the sweep costs nothing per request.
        self._watched: set[GuardedProtocol] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    def watch(self, protocol: GuardedProtocol) -> None:
        self._watched.add(protocol)
        if self._sweeper is None:
            self._schedule(protocol.loop)

    def unwatch(self, protocol: GuardedProtocol) -> None:
        self._watched.discard(protocol)

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        interval = min(1.0, self.limits.header_timeout_seconds / 4)
        self._sweeper = loop.call_later(interval, self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Time out the connections whose headers are late (at most a quarter of the timeout late)."""
        now = loop.time()
        limit = self.limits.header_timeout_seconds
        for protocol in list(self._watched):
            since = protocol.header_since
            if since is not None and now - since > limit:
                protocol.header_timeout()
        if self._watched:
            self._schedule(loop)
        else:
            self._sweeper = None

    def __call__(
        self,
        *,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> GuardedProtocol:
        return GuardedProtocol(config, server_state, app_state, _loop, guard=self)

    def admit(self, key: str | None) -> bool:
        if key is None:
            return True
        count = self.open.get(key, 0)
        if count >= self.limits.max_connections_per_address:
            return False
        self.open[key] = count + 1
        return True

    def release(self, key: str | None) -> None:
        if key is None:
            return
        count = self.open.get(key, 0) - 1
        if count > 0:
            self.open[key] = count
        else:
            self.open.pop(key, None)


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing at once; answered by ``data_received``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header limits, header timeout and per-address caps."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        guard: ConnectionGuard,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.guard = guard
        self.limits = guard.limits
        self._counted = False  # this connection holds one of its address's places
        self._key: str | None = None
        self._timer: asyncio.TimerHandle | None = None  # the rest-of-body timer (rare path)
        self.header_since: float | None = None  # when the headers being waited for began
        self._refused = False
        # The header phase: from the connection opening, or the end of the previous request, until
        # its headers are complete. Bytes received in it are counted against max_header_bytes.
        self._in_headers = True
        self._header_bytes = 0  # as received (bounds what the parser buffers)
        self._message_done = True

    # -- connection -----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._key = address_key(self.client[0] if self.client else None)
        if not self.guard.admit(self._key):
            self._refuse(503, "too many connections from your address: reuse or close some", retry=True)
            return
        self._counted = True
        # a connection that sends nothing is closed too (uvicorn times out only kept-alive ones)
        self.header_since = self.loop.time()
        self.guard.watch(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self.header_since = None
        self.guard.unwatch(self)
        if self._counted:
            self._counted = False
            self.guard.release(self._key)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # the answer is sent and the connection closing: the rest is not parsed
        self._unset_keepalive_if_required()
        while data:
            if self._in_headers:
                if self.header_since is None:  # the first byte of a request on a kept-alive connection
                    self.header_since = self.loop.time()
                budget = self.limits.max_header_bytes - self._header_bytes
                if budget <= 0:
                    self._refuse(431, self._too_large())
                    return
                # Never hand the parser more than the rest of the budget: it buffers an unfinished
                # header field whole, so the limit must bite before the bytes reach it.
                piece, data = (data, b"") if len(data) <= budget else (data[:budget], data[budget:])
                self._header_bytes += len(piece)
            else:
                piece, data = data, b""
            if not self._feed(piece):
                return

    def _feed(self, data: bytes) -> bool:
        """Parse ``data`` as uvicorn does; False when the connection is finished with."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            refused = exc.__context__
            if isinstance(refused, _Refused):
                self._refuse(refused.status, str(refused))
            else:
                self._refuse(400, "invalid HTTP request")
            return False
        except httptools.HttpParserError:
            self._refuse(400, "invalid HTTP request")  # JSON like every other answer, not uvicorn's text
            return False
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return False
        return not self._refused

    # -- parser callbacks -----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._message_done = False
        if self.header_since is None:  # a pipelined request that began inside the previous one's bytes
            self.header_since = self.loop.time()
        super().on_message_begin()

    # No per-header callback of our own (it would cost every header of every request a Python call):
    # the bytes a request's headers may take are bounded in ``data_received`` before the parser sees
    # them, so counting the fields once they are complete is enough.

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self.header_since = None
        if len(self.headers) > self.limits.max_headers:
            raise _Refused(431, f"more than {self.limits.max_headers} header fields")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._message_done = True
        self._cancel_timer()  # the rest-of-body timer, if the answer went out first
        self._in_headers = True
        self._header_bytes = 0

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self._message_done and not self.transport.is_closing():
            # Answered before the body arrived (401, 413, a GET with a body): the parser reads the rest
            # at the client's pace, with no other timer running. Give it a bounded time, then close.
            self._arm(self.limits.body_timeout_seconds, self._close)

    # -- timers and refusals --------------------------------------------------------------------

    def _arm(self, seconds: float, callback: Any) -> None:
        self._cancel_timer()
        self._timer = self.loop.call_later(seconds, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def header_timeout(self) -> None:
        """Called by the guard's sweep when this connection's headers are late."""
        if self.transport.is_closing():
            self.header_since = None
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request's headers while the one before is still being answered: the 408
            # would interleave with that answer. Wait for it; the request timeout bounds it.
            self.header_since = self.loop.time()
            return
        self.header_since = None
        if self._header_bytes == 0:
            self.transport.close()  # nothing asked: nothing to answer
            return
        seconds = self.limits.header_timeout_seconds
        self._refuse(408, f"the request headers did not arrive within {seconds:g} s")

    def _close(self) -> None:
        self._timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def _too_large(self) -> str:
        return f"the request headers are over the limit of {self.limits.max_header_bytes:,} bytes"

    def _refuse(self, status: int, message: str, *, retry: bool = False) -> None:
        """Answer ``status`` with a JSON error and close the connection."""
        self._refused = True
        self.header_since = None
        self._cancel_timer()
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # an answer is being written on this connection: another would corrupt it
            self.transport.close()
            return
        body = orjson.dumps({"error": message})
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(b"content-type: application/json\r\n")
        head.append(b"content-length: %d\r\nconnection: close\r\n" % len(body))
        if retry:
            head.append(b"retry-after: 1\r\n")
        head.append(b"\r\n")
        self.transport.write(b"".join(head) + body)
        self.transport.close()
