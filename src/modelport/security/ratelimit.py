"""Token buckets and monthly quota counters shared by every worker of a server — or, through Redis, by
every replica.

A bucket holds up to ``burst`` tokens and refills at ``rate`` per second; a request takes one token or
is refused with the time until one is there (``Retry-After``). A quota counter holds the requests a
key was admitted this month; a request is admitted while it is below the quota and then counted (a
:class:`Charge`). The counter starts from — and never falls below — ``base``, the month's total the
database held when the worker last read it: a counter that was lost (a restarted Redis, an evicted
key, a crowded file) is seeded again from the usage records and forgets at most the usage not yet
written to them (about a second). A key's token and its quota are settled in one step, so a refused
request spends neither: over the quota, no token is taken; over the rate, nothing is counted.

- :class:`FileBuckets` keeps the buckets and counters in a small memory-mapped file (under
  ``MODELPORT_HOME/run/``) that the workers of one server share; each update holds an exclusive
  ``flock`` for a few microseconds. Times are ``CLOCK_MONOTONIC``, which Linux shares between processes.
- :class:`RedisBuckets` runs the same arithmetic atomically inside Redis (Lua scripts using Redis's own
  clock), so replicas on several hosts share one budget per key: one round trip per request, rate and
  quota together.

Written by hand because the update must be atomic across processes and cost microseconds on the hot
path; the libraries of this field keep buckets per process or need a network round trip.
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import mmap
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from modelport.optional import require

__all__ = ["SPENT", "Bucket", "Buckets", "Charge", "FileBuckets", "LocalBuckets", "RedisBuckets"]

SPENT = math.inf
"""What :meth:`Buckets.charge` answers when the quota is used up (no wait ends it this month)."""


@dataclass(frozen=True, slots=True)
class Bucket:
    """A key's token bucket, taken from together with its quota (:meth:`Buckets.charge`)."""

    key: str
    rate: float
    burst: float


@dataclass(frozen=True, slots=True)
class Charge:
    """One request counted against a monthly quota."""

    counter: str
    """The key id and the month (UTC): ``abcdefghijkl:2026-05``."""
    quota: int
    base: int
    """The month's requests in the usage records as this worker last read them: the floor of the count."""
    expires_at: float
    """Unix time after which the counter may be forgotten (a day after the month ends)."""


class Buckets(Protocol):
    async def take(self, key: str, rate: float, burst: float) -> float:
        """Take one token: 0.0 if granted, else the seconds until one is available."""
        ...

    async def charge(self, charge: Charge, bucket: Bucket | None = None) -> float:
        """Count one request against a quota and take a token from ``bucket`` in one step: 0.0 when
        both are granted, :data:`SPENT` when the quota is used up (no token taken), else the seconds
        until the bucket has a token (nothing counted)."""
        ...


def _digest(key: str) -> bytes:
    return hashlib.blake2b(key.encode(), digest_size=8).digest()


def _refill(tokens: float, updated: float, now: float, rate: float, burst: float) -> float:
    return min(burst, tokens + max(0.0, now - updated) * rate)


class LocalBuckets:
    """Buckets and counters of one process (tests, and ``--workers 1`` without a home directory)."""

    def __init__(self) -> None:
        self._state: dict[str, tuple[float, float]] = {}
        self._counters: dict[str, tuple[int, float]] = {}  # counter -> (used, expires at)

    async def take(self, key: str, rate: float, burst: float) -> float:
        return self._take(key, rate, burst)

    async def charge(self, charge: Charge, bucket: Bucket | None = None) -> float:
        stored = self._counters.get(charge.counter)
        used = max(stored[0] if stored is not None else 0, charge.base)
        if used >= charge.quota:
            return SPENT
        if bucket is not None and (wait := self._take(bucket.key, bucket.rate, bucket.burst)) > 0:
            return wait
        if stored is None:  # a new counter (a new key or month): forget the past months' ones
            now = time.time()
            self._counters = {k: v for k, v in self._counters.items() if v[1] > now}
        self._counters[charge.counter] = (used + 1, charge.expires_at)
        return 0.0

    def _take(self, key: str, rate: float, burst: float) -> float:
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
    for another key: the table never fills up with the buckets of past clients. A quota counter uses a
    slot the same way — ``(counter digest, requests, updated, expires at)`` — and is free once its
    month has passed; when every probed slot is taken the one closest to free is reused, which is a
    bucket before any counter of this month (a counter lost that way is seeded again from ``base``)."""

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
        digest = _digest(key)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            return self._take(digest, time.monotonic(), rate, burst)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    async def charge(self, charge: Charge, bucket: Bucket | None = None) -> float:
        return self.charge_now(charge, bucket)

    def charge_now(self, charge: Charge, bucket: Bucket | None = None) -> float:
        digest = _digest("quota:" + charge.counter)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            now = time.monotonic()
            found, stored, _updated, _expires = self._SLOT.unpack_from(
                self._map, self._slot(digest, now) * self._SLOT.size
            )
            used = max(int(stored) if found == digest else 0, charge.base)
            if used >= charge.quota:
                return SPENT
            if bucket is not None:
                wait = self._take(_digest(bucket.key), now, bucket.rate, bucket.burst)
                if wait > 0:
                    return wait
            # Looked up again: the bucket may just have taken the free slot found above.
            index = self._slot(digest, now)
            expires = now + (charge.expires_at - time.time())  # the wall-clock month end, as monotonic
            self._SLOT.pack_into(self._map, index * self._SLOT.size, digest, float(used + 1), now, expires)
            return 0.0
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _take(self, digest: bytes, now: float, rate: float, burst: float) -> float:
        """The bucket arithmetic, under the caller's lock."""
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

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)


# The bucket arithmetic, shared by both scripts; Redis's clock, so hosts need not agree on the time.
_BUCKET_LUA = """
local function take(key, rate, burst)
  local now = redis.call('TIME')
  local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
  local state = redis.call('HMGET', key, 'tokens', 'updated')
  local tokens = tonumber(state[1])
  local updated = tonumber(state[2])
  if tokens == nil or updated == nil then tokens = burst; updated = t end
  tokens = math.min(burst, tokens + math.max(0, t - updated) * rate)
  local wait = 0
  if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
  redis.call('HSET', key, 'tokens', tostring(tokens), 'updated', tostring(t))
  redis.call('EXPIRE', key, math.ceil(burst / rate) + 60)
  return wait
end
"""

_TAKE_LUA = (
    _BUCKET_LUA
    + """
return tostring(take(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])))
"""
)

# KEYS: the quota counter [, the key's bucket]; ARGV: quota, base, expires at (Unix s) [, rate, burst].
# A counter that is missing (or not a number) counts from base; it is only ever set, never
# incremented blindly, so it cannot fall below what the database already holds.
_CHARGE_LUA = (
    _BUCKET_LUA
    + """
local used = math.max(tonumber(redis.call('GET', KEYS[1])) or 0, tonumber(ARGV[2]))
if used >= tonumber(ARGV[1]) then return 'inf' end
if KEYS[2] then
  local wait = take(KEYS[2], tonumber(ARGV[4]), tonumber(ARGV[5]))
  if wait > 0 then return tostring(wait) end
end
redis.call('SET', KEYS[1], string.format('%d', used + 1))
redis.call('EXPIREAT', KEYS[1], ARGV[3])
return '0'
"""
)


class RedisBuckets:
    """The same buckets and counters in Redis, for replicas (``MODELPORT_REDIS_URL``): buckets under
    ``modelport:bucket:``, counters under ``modelport:quota:<key id>:<YYYY-MM>``."""

    def __init__(
        self,
        url: str,
        prefix: str = "modelport:bucket:",
        timeout: float = 0.1,
        quota_prefix: str = "modelport:quota:",
    ) -> None:
        """``timeout``: longest wait for Redis per request (connect or answer); past it the gate falls
        back to this server's buckets and counters (security/gate.py)."""
        aioredis = require("redis.asyncio", "redis", "MODELPORT_REDIS_URL (rate limits shared in Redis)")
        self._client: Any = aioredis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry_on_timeout=False
        )
        self._take = self._client.register_script(_TAKE_LUA)
        self._charge = self._client.register_script(_CHARGE_LUA)
        self._prefix = prefix
        self._quota_prefix = quota_prefix

    async def take(self, key: str, rate: float, burst: float) -> float:
        wait = await self._take(keys=[self._prefix + key], args=[repr(rate), repr(burst)])
        return float(wait)

    async def charge(self, charge: Charge, bucket: Bucket | None = None) -> float:
        keys = [self._quota_prefix + charge.counter]
        args = [str(charge.quota), str(charge.base), str(math.ceil(charge.expires_at))]
        if bucket is not None:
            keys.append(self._prefix + bucket.key)
            args += [repr(bucket.rate), repr(bucket.burst)]
        return float(await self._charge(keys=keys, args=args))

    async def close(self) -> None:
        await self._client.aclose()
