"""Sending events: signing, one pinned HTTP POST per attempt, backoff and dead letters.

:class:`Dispatcher` runs in the background of every server worker (``Worker.run_duties`` kicks it each
poll; it works on a thread of its own, never on the event loop) and can be driven directly by tests:
:meth:`Dispatcher.tick` enqueues new events, then claims and attempts the due deliveries. Claims are
leases in the database (events/store.py), so any number of workers and replicas share the work and
each delivery is attempted by one of them at a time.

An attempt re-checks the URL (events/urls.py), connects to an address that check returned (the Host
header and TLS SNI name the host), sends the signed body, reads the status and at most
``_READ_BYTES`` of the answer, and follows no redirect: only a 2xx counts as delivered.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import random
import secrets
import socket
import ssl
import threading
import time
import weakref
from datetime import UTC, datetime

from modelport.errors import InvalidInput, ModelportError
from modelport.events.store import Attempt, Delivery, Subscription, WebhookStore
from modelport.events.urls import Target, UrlPolicy, check_url
from modelport.registry.audit import AuditRecord
from modelport.registry.service import Registry
from modelport.settings import Settings

__all__ = ["Dispatcher", "body_of", "dispatcher_for", "sign"]

log = logging.getLogger("modelport.events")

_READ_BYTES = 4096
_BATCH = 20


def body_of(record: AuditRecord) -> bytes:
    """The event as it is sent: the audit record, ``id`` being its sequence number."""
    event = {
        "id": record.seq,
        "at": record.at.isoformat(),
        "actor": record.actor,
        "action": record.action,
        "target": record.target,
        "before": record.before,
        "after": record.after,
        "hash": record.hash,
        "prev_hash": record.prev_hash,
    }
    return json.dumps(event, sort_keys=True, separators=(",", ":"), default=str).encode()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Modelport-Signature`` value: ``t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to the address the URL check approved, whatever DNS says now."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """As :class:`_PinnedHTTP`, with TLS verified against the host name (SNI and certificate)."""

    def __init__(self, host: str, port: int, address: str, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._address = address
        self._tls = context

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


def _post(target: Target, headers: dict[str, str], body: bytes, timeout: float) -> int:
    """POST to the first approved address; the status code (no redirect is followed)."""
    address = target.addresses[0]
    connection: http.client.HTTPConnection
    if target.scheme == "https":
        connection = _PinnedHTTPS(target.host, target.port, address, timeout, ssl.create_default_context())
    else:
        connection = _PinnedHTTP(target.host, target.port, address, timeout)
    try:
        connection.request("POST", target.path, body=body, headers={"Host": target.host_header} | headers)
        response = connection.getresponse()
        response.read(_READ_BYTES)  # a few KB at most: the answer's body means nothing to us
        return response.status
    finally:
        connection.close()


class Dispatcher:
    """Enqueues events and attempts due deliveries for one registry (one per worker process)."""

    def __init__(self, registry: Registry, settings: Settings | None = None) -> None:
        self.settings = settings or registry.settings
        self.store = WebhookStore(registry.store)
        self.owner = f"{socket.gethostname()[:30]}:{secrets.token_hex(6)}"
        self._thread: threading.Thread | None = None
        self._last = 0.0

    @property
    def policy(self) -> UrlPolicy:
        return UrlPolicy.from_settings(self.settings)

    def kick(self) -> None:
        """Start one :meth:`tick` on a background thread when it is time and none is running (called
        by the worker's poller every 0.25 s; returns at once)."""
        now = time.monotonic()
        if now - self._last < self.settings.webhook_poll_seconds:
            return
        if self._thread is not None and self._thread.is_alive():
            return
        self._last = now
        self._thread = threading.Thread(target=self._tick_logged, name="modelport-webhooks", daemon=True)
        self._thread.start()

    def _tick_logged(self) -> None:
        try:
            self.tick()
        except Exception as exc:  # the database is away, …: try again at the next poll
            log.warning("webhook dispatch failed (%s)", type(exc).__name__)

    def tick(self) -> int:
        """Enqueue new events, then attempt every due delivery this dispatcher can claim. Returns the
        number of attempts made."""
        self.store.enqueue()
        attempts = 0
        for delivery_id in self.store.due(_BATCH):
            claimed = self.store.claim(delivery_id, self.owner, self.settings.webhook_lease_seconds)
            if claimed is None:
                continue  # another worker has it
            self.attempt(*claimed)
            attempts += 1
        return attempts

    def attempt(self, delivery: Delivery, subscription: Subscription, record: AuditRecord) -> bool:
        """One attempt of a claimed delivery, recorded; True when delivered."""
        started, at = time.perf_counter(), datetime.now(UTC)
        status: int | None = None
        error: str | None = None
        try:
            if not subscription.enabled:
                raise InvalidInput("the webhook is disabled")
            target = check_url(subscription.url, self.policy)  # again: DNS may have changed
            body = body_of(record)
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "modelport-webhooks",
                "X-Modelport-Event": record.action,
                "X-Modelport-Delivery": delivery.id,
                "X-Modelport-Signature": sign(subscription.secret, int(time.time()), body),
            }
            status = _post(target, headers, body, self.settings.webhook_timeout_seconds)
            if not 200 <= status < 300:
                error = "redirect refused" if 300 <= status < 400 else f"HTTP {status}"
        except InvalidInput:
            error = "AddressRefused"
        except (OSError, http.client.HTTPException, ModelportError) as exc:
            error = type(exc).__name__
        seconds = time.perf_counter() - started
        delivered = error is None
        failures = delivery.attempts + 1
        dead = not delivered and failures >= self.settings.webhook_max_attempts
        if not delivered:
            log.info(
                "webhook %s delivery %s attempt %d failed: %s", subscription.id, delivery.id, failures, error
            )
        self.store.finish(
            delivery.id,
            self.owner,
            Attempt(at, status, error[:100] if error else None, seconds),
            delivered=delivered,
            dead=dead,
            retry_in=0.0 if delivered or dead else self.backoff(failures),
        )
        return delivered

    def backoff(self, failures: int) -> float:
        """Seconds before the next attempt after ``failures`` failed ones: the configured step (the
        last repeats) plus up to 20 % jitter, so receivers coming back are not hit all at once."""
        steps = self.settings.webhook_backoff_seconds or [10.0]
        base = steps[min(failures, len(steps)) - 1]
        return base + random.uniform(0, base * 0.2)  # noqa: S311 — jitter, not a secret


_DISPATCHERS: weakref.WeakKeyDictionary[Registry, Dispatcher] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def dispatcher_for(registry: Registry) -> Dispatcher:
    """This process's dispatcher for ``registry`` (made on first use): what the worker kicks."""
    with _LOCK:
        dispatcher = _DISPATCHERS.get(registry)
        if dispatcher is None:
            dispatcher = _DISPATCHERS[registry] = Dispatcher(registry)
        return dispatcher
