"""Token buckets shared by every worker of a server — or, through Redis, by every replica.

A bucket holds up to ``burst`` tokens and refills at ``rate`` per second; a request takes one token or
is refused with the time until one is there (``Retry-After``).

- :class:`FileBuckets` keeps the buckets in a small memory-mapped file (under ``MODELPORT_HOME/run/``)
  that the workers of one server share; each update holds an exclusive ``flock`` for a few
  microseconds. Times are ``CLOCK_MONOTONIC``, which Linux shares between processes.
- :class:`RedisBuckets` runs the same arithmetic atomically inside Redis (a Lua script using Redis's own
  clock), so replicas on several hosts share one budget per key.

Written by hand because the update must be atomic across processes and cost microseconds on the hot
path; the libraries of this field keep buckets per process or need a network round trip.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
import time
from pathlib import Path
from typing import Any, Protocol

__all__ = ["Buckets", "FileBuckets", "LocalBuckets", "RedisBuckets"]


class Buckets(Protocol):
    async def take(self, key: str, rate: float, burst: float) -> float:
        """Take one token: 0.0 if granted, else the seconds until one is available."""
        ...


def _refill(tokens: float, updated: float, now: float, rate: float, burst: float) -> float:
    return min(burst, tokens + max(0.0, now - updated) * rate)


class LocalBuckets:
    """Buckets of one process (tests, and ``--workers 1`` without a home directory)."""

    def __init__(self) -> None:
        self._state: dict[str, tuple[float, float]] = {}

    async def take(self, key: str, rate: float, burst: float) -> float:
        now = time.monotonic()
        tokens, updated = self._state.get(key, (burst, now))
        tokens = _refill(tokens, updated, now, rate, burst)
        if tokens >= 1.0:
            self._state[key] = (tokens - 1.0, now)
            return 0.0
        self._state[key] = (tokens, now)
        return (1.0 - tokens) / rate


class FileBuckets:
    """Open-addressed table of ``(key digest, tokens, updated, full again at)`` slots in a shared file.

    A slot whose bucket has refilled completely holds nothing a fresh bucket would not, so it is free
    for another key: the table never fills up with the buckets of past clients."""

    _SLOT = struct.Struct("<8sddd")
    _SLOTS = 8192
    _PROBES = 32

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        size = self._SLOT.size * self._SLOTS
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            if os.fstat(self._fd).st_size != size:  # new, or from another layout: start empty
                os.ftruncate(self._fd, 0)
                os.ftruncate(self._fd, size)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._map = mmap.mmap(self._fd, size)

    def _slot(self, digest: bytes, now: float) -> int:
        start = int.from_bytes(digest, "little") % self._SLOTS
        free = None
        oldest, oldest_full = start, float("inf")
        for probe in range(self._PROBES):
            index = (start + probe) % self._SLOTS
            found, _tokens, _updated, full_at = self._SLOT.unpack_from(self._map, index * self._SLOT.size)
            if found == digest:
                return index
            if free is None and (found == b"\0" * 8 or full_at <= now):
                free = index
            if full_at < oldest_full:
                oldest, oldest_full = index, full_at
        # Every probed bucket is still refilling: take the one closest to full (it loses least).
        return free if free is not None else oldest

    async def take(self, key: str, rate: float, burst: float) -> float:
        return self.take_now(key, rate, burst)

    def take_now(self, key: str, rate: float, burst: float) -> float:
        digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            now = time.monotonic()
            index = self._slot(digest, now)
            offset = index * self._SLOT.size
            found, tokens, updated, _full_at = self._SLOT.unpack_from(self._map, offset)
            tokens = burst if found != digest else _refill(tokens, updated, now, rate, burst)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / rate
            self._SLOT.pack_into(self._map, offset, digest, tokens, now, now + (burst - tokens) / rate)
            return wait
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)


_LUA = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(state[1])
local updated = tonumber(state[2])
if tokens == nil then tokens = burst; updated = t end
tokens = math.min(burst, tokens + math.max(0, t - updated) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(t))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
return tostring(wait)
"""


class RedisBuckets:
    """The same buckets in Redis, for replicas (``MODELPORT_REDIS_URL``)."""

    def __init__(self, url: str, prefix: str = "modelport:bucket:", timeout: float = 0.1) -> None:
        """``timeout``: longest wait for Redis per request (connect or answer); past it the gate falls
        back to this server's buckets (security/gate.py)."""
        import redis.asyncio as aioredis

        self._client: Any = aioredis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry_on_timeout=False
        )
        self._script = self._client.register_script(_LUA)
        self._prefix = prefix

    async def take(self, key: str, rate: float, burst: float) -> float:
        wait = await self._script(keys=[self._prefix + key], args=[repr(rate), repr(burst)])
        return float(wait)

    async def close(self) -> None:
        await self._client.aclose()
