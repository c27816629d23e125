"""Structured logs: one JSON object per line on standard error.

Every event carries a time, a level, the logger and a message; request events add the request id
(taken from ``X-Request-ID`` when the client sends a sane one, else made here, and echoed in the
answer), the key id (never the key), model, version, status and latency. Secrets never reach a log:
only key ids are held outside the gate, and error messages are the ones clients see.
"""

from __future__ import annotations

import logging
import os
import random
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["ACCESS", "ACCESS_LOG", "AccessLog", "JsonFormatter", "configure", "request_id"]

ACCESS = logging.getLogger("modelport.access")
_SANE_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            event.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            event["error"] = record.exc_info[0].__name__  # the type only: no traceback, no paths
        return orjson.dumps(event, default=str).decode()


class AccessLog:
    """The per-request lines, written without the logging machinery: a line is an orjson dump added to
    a buffer, and the buffer goes to standard error in one write when it passes 64 KiB or when the
    worker's poller ticks (four times a second) — a LogRecord and a write per request cost a third of
    the throughput (docs/performance.md). Same JSON shape as the other log lines."""

    def __init__(self, fd: int = 2, limit: int = 64 << 10) -> None:
        self.fd = fd
        self.limit = limit
        self.enabled = False
        self._buffer = bytearray()
        self._second = -1
        self._head = b""

    def write(self, fields: dict[str, Any]) -> None:
        """Add one line: ``fields`` (a non-empty dict) after the time, level and logger. The time's
        text up to the second is made once a second (formatting a datetime per line was a third of a
        line's cost) and the fixed keys are bytes, not merged into ``fields``."""
        now = time.time()
        second = int(now)
        if second != self._second:
            stamp = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second, self._head = second, b'{"ts":"' + stamp.encode() + b"."
        millis = min(int((now - second) * 1000), 999)
        self._buffer += self._head
        self._buffer += b'%03d+00:00","level":"info","logger":"modelport.access",' % millis
        self._buffer += orjson.dumps(fields)[1:]
        self._buffer += b"\n"
        if len(self._buffer) >= self.limit:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        data, self._buffer = bytes(self._buffer), bytearray()
        try:
            view = memoryview(data)
            while view:
                written = os.write(self.fd, view)
                view = view[written:]
        except OSError:
            return  # standard error is gone: drop the lines rather than fail requests


ACCESS_LOG = AccessLog()


class JsonHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """modelport's own handler (JSON lines on standard error), told apart from anyone else's."""


def configure(*, access_log: bool = True, level: str = "INFO") -> None:
    """JSON lines on standard error for every ``modelport.*`` logger (idempotent)."""
    root = logging.getLogger("modelport")
    if not any(isinstance(h, JsonHandler) for h in root.handlers):
        handler = JsonHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
    # With MODELPORT_TRACING, OpenTelemetry's own warnings (a collector away, a full queue) as JSON
    # lines too. Naming the logger imports nothing.
    sdk = logging.getLogger("opentelemetry")
    sdk.handlers = [h for h in root.handlers if isinstance(h, JsonHandler)]
    sdk.propagate = False
    ACCESS.disabled = not access_log
    ACCESS_LOG.enabled = access_log


def request_id(sent: str | None) -> str:
    """The client's ``X-Request-ID`` if it is sane (≤ 128 safe characters), else a new one."""
    if sent is not None and _SANE_ID.fullmatch(sent):
        return sent
    # A correlation id, not a secret: the process's own generator (reseeded in every forked child)
    # spares every request a system call.
    return f"{random.getrandbits(64):016x}"
