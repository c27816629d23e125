"""The gate every request passes: who is calling, may they, are they within their rate and quota — and
what they used. Protocol-free: REST and gRPC adapters hand it a token and an address.

Keys are held in memory (:class:`KeyRing`) and reloaded when the registry's generation counter moves
(the server's poller calls :meth:`Gate.reload`); usage is counted in memory and added to the database
by :meth:`Gate.flush` about once a second, off the request path.

A monthly quota is charged when an inference request is admitted, on a counter shared like the rate
buckets (security/ratelimit.py: Redis across replicas, a file across one server's workers), so a
burst spread over workers and replicas gets one quota, not one each. The usage records stay the
record (what is billed); the counter is the admission, and never counts below them.
"""

from __future__ import annotations

import calendar
import ipaddress
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from typing import Any

from modelport.errors import ModelNotFound, RateLimited, Unauthenticated
from modelport.security.keys import DEV_PRINCIPAL, KeyRing, Principal
from modelport.security.oidc import TokenVerifier, looks_like_jwt
from modelport.security.ratelimit import SPENT, Bucket, Buckets, Charge, LocalBuckets
from modelport.security.store import KeyStore, UsageRow

__all__ = ["Gate"]

log = logging.getLogger("modelport.security")


def _network(address: str | None) -> str:
    """The unit failed authentications are counted per: the IPv4 address, or the IPv6 /64 (one
    host owns a whole /64, so counting single IPv6 addresses would count nothing)."""
    if not address:
        return "?"
    if ":" not in address:
        return address
    try:
        return str(ipaddress.IPv6Network(f"{address}/64", strict=False))
    except ValueError:
        return address


def _seconds_to_next_month(now: datetime) -> float:
    days = calendar.monthrange(now.year, now.month)[1]
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (first.replace(day=days) - now).total_seconds() + 86400


def _month_of(day: date) -> tuple[str, float]:
    """The month's label in a quota counter's name, and when the counter may be forgotten: a day
    after the month ends (a replica whose clock is a little behind still finds it)."""
    days = calendar.monthrange(day.year, day.month)[1]
    ends = datetime(day.year, day.month, days, tzinfo=UTC).timestamp() + 86400
    return f"{day.year:04d}-{day.month:02d}", ends + 86400


class Gate:
    """Authentication, authorisation inputs, rate limits, quotas and usage for one worker."""

    def __init__(
        self,
        keys: KeyStore | None,
        buckets: Buckets | None = None,
        *,
        insecure: bool = False,
        fallback: Buckets | None = None,
        failure_rate: float = 5.0,
        failure_burst: float = 20.0,
        clock: Callable[[], float] = time.time,
        oidc: TokenVerifier | None = None,
    ) -> None:
        """``failure_rate``/``failure_burst``: failed authentications allowed per client address.
        ``clock``: Unix time, which decides the day usage is counted in and the month a quota is
        (tests turn the month over with it). ``oidc``: also accept the access tokens of an OpenID
        provider (security/oidc.py)."""
        if keys is None and not insecure:
            raise ValueError("a gate without a key store must be explicitly insecure")
        self.keys = keys
        self.insecure = insecure
        self.buckets: Buckets = buckets if buckets is not None else LocalBuckets()
        self._fallback = fallback
        self.breaker_seconds = 5.0
        self._shared_down_until = 0.0
        self.failure_rate, self.failure_burst = failure_rate, failure_burst
        self._clock = clock
        self.oidc = oidc
        self.ring = KeyRing()
        # The usage records' requests per key this month, and which month that is: one tuple, so a
        # request never pairs one month's totals with another month (reload runs on a thread).
        self._totals: tuple[tuple[int, int], dict[str, int]] = ((0, 0), {})
        # (key id, model, day) -> [requests, rows, errors, bytes in, bytes out], since the last flush
        self._pending: defaultdict[tuple[str, str, date], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
        self._unflushed_requests: defaultdict[str, int] = defaultdict(int)
        self._day_number, self._day = -1, date.min
        self._month_label, self._month_expires = "", 0.0
        if keys is not None:
            self.reload()

    # -- keys -----------------------------------------------------------------------------------

    def reload(self) -> None:
        """Re-read the keys (called when the registry's generation moves) and the month's totals."""
        if self.keys is None:
            return
        self.ring.replace(self.keys.list_keys(include_revoked=False))
        self.ring.ended_sessions = self.keys.ended_sessions()
        self._refresh_month()

    def _refresh_month(self) -> None:
        if self.keys is None:
            return
        # The month is taken before the read: totals read just after midnight on the first are
        # labelled with the old month, so they are never taken for the new month's (see _charge).
        now = self._now()
        self._totals = ((now.year, now.month), self.keys.requests_this_month())

    async def authenticate(self, token: str | None, address: str | None) -> Principal:
        if self.insecure:
            return DEV_PRINCIPAL
        try:
            if self.oidc is not None and token is not None and looks_like_jwt(token):
                return await self.oidc.authenticate(token)
            return self.ring.authenticate(token)
        except Unauthenticated:
            wait = await self._take(f"addr:{_network(address)}", self.failure_rate, self.failure_burst)
            if wait > 0:
                raise RateLimited(
                    "too many failed authentications from this address", retry_after=wait
                ) from None
            raise

    async def may_record_denial(self, principal: Principal) -> bool:
        """Whether a denied privileged attempt by this key is written to the audit log: ten at once,
        then one a second per key (every attempt is still refused; the log cannot be flooded)."""
        return await self._take(f"deny:{principal.key_id}", 1.0, 10.0) == 0.0

    async def admit(
        self,
        token: str | None,
        address: str | None,
        permission: str,
        model: str | None = None,
        *,
        on_denied: Callable[[Principal], Awaitable[None]] | None = None,
    ) -> Principal:
        """The one admission of every protocol, always in this order:

        1. who — the key (:class:`Unauthenticated`; failed attempts limited per client address);
        2. how much — the key's rate and monthly quota (:class:`RateLimited`), before any decision
           about it, so that probing roles or model names is limited too;
        3. what — the key's role allows ``permission`` (:class:`Forbidden`; a denied ``publish`` or
           ``admin`` attempt is handed to ``on_denied`` for the audit log, ten at once then one a
           second per key);
        4. which — ``model`` is inside the key's patterns; outside them it answers exactly like a
           model that does not exist (:class:`ModelNotFound`)."""
        principal = await self.authenticate(token, address)
        await self.limit(principal, permission)
        if not principal.may(permission):
            privileged = permission in ("publish", "admin")
            if on_denied is not None and privileged and await self.may_record_denial(principal):
                await on_denied(principal)
            principal.require(permission)
        if model is not None and not principal.sees(model):
            raise ModelNotFound(f"no model named {model[:100]!r}")
        return principal

    async def limit(self, principal: Principal, permission: str = "infer") -> None:
        """Refuse with :class:`RateLimited` when the key is over its rate or its monthly quota.

        Inference — what the usage records count — is charged to the quota's shared counter here, at
        admission, together with the rate (one step, one Redis round trip). Other requests of a key
        with a quota are not charged; they are refused once this worker sees the quota used up."""
        key_id, quota, rate = principal.key_id, principal.quota, principal.rate
        if quota is not None and permission == "infer":
            charge = self._charge(key_id, quota)
            bucket = None if rate is None else Bucket(f"key:{key_id}", rate, max(1.0, rate))
            wait = await self._shared(lambda buckets: buckets.charge(charge, bucket))
        elif quota is not None and self._used(key_id) >= quota:
            wait = SPENT
        elif rate is not None:
            wait = await self._take(f"key:{key_id}", rate, max(1.0, rate))
        else:
            return
        if wait == SPENT:
            raise RateLimited(
                f"key {key_id} has used its quota of {quota:,} requests this month",
                retry_after=_seconds_to_next_month(self._now()),
            )
        if wait > 0:
            raise RateLimited(f"key {key_id} is over its rate of {rate:g} requests/s", retry_after=wait)

    def _charge(self, key_id: str, quota: int) -> Charge:
        """One inference request of ``key_id`` against this month's counter, whose floor is the
        usage records' total."""
        recorded = self._recorded(key_id)  # first: it moves the month's label on the first of the month
        return Charge(f"{key_id}:{self._month_label}", quota, recorded, self._month_expires)

    def _used(self, key_id: str) -> int:
        """This worker's own view of the key's requests this month: the usage records plus its
        requests not yet written to them."""
        return self._recorded(key_id) + self._unflushed_requests.get(key_id, 0)

    def _recorded(self, key_id: str) -> int:
        """The key's requests this month in the usage records, as last read — none if that read was
        of another month (just after the month turned: last month's total is not this month's)."""
        day = self._today()
        month, totals = self._totals
        return totals.get(key_id, 0) if month == (day.year, day.month) else 0

    async def _take(self, bucket: str, rate: float, burst: float) -> float:
        return await self._shared(lambda buckets: buckets.take(bucket, rate, burst))

    async def _shared(self, ask: Callable[[Buckets], Awaitable[float]]) -> float:
        """Ask the shared buckets and counters — or, while they are away, this server's own.

        A circuit breaker: after a failure (unreachable, or slower than its timeout) the shared store
        is not asked again for ``breaker_seconds``, so a hung Redis costs one request its timeout per
        period instead of every request a second. Rates and quotas hold per server meanwhile: a quota
        counter of this server's, which starts from the usage records' total."""
        if self._fallback is not None and time.monotonic() < self._shared_down_until:
            return await ask(self._fallback)
        try:
            return await ask(self.buckets)
        except Exception as exc:  # Redis unreachable or hung: keep limiting, per server
            if self._fallback is None:
                raise
            self._shared_down_until = time.monotonic() + self.breaker_seconds
            log.warning(
                "shared rate limiter unavailable (%s); limiting per server for %g s",
                type(exc).__name__,
                self.breaker_seconds,
            )
            return await ask(self._fallback)

    # -- usage ----------------------------------------------------------------------------------

    def count(
        self, principal: Principal, model: str, *, rows: int, error: bool, bytes_in: int, bytes_out: int
    ) -> None:
        if self.insecure:
            return
        counts = self._pending[(principal.key_id, model, self._today())]
        counts[0] += 1
        counts[1] += rows
        counts[2] += int(error)
        counts[3] += bytes_in
        counts[4] += bytes_out
        self._unflushed_requests[principal.key_id] += 1

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def _today(self) -> date:
        """The UTC date, recomputed only when the day number changes (cheap on every request)."""
        day = int(self._clock() // 86400)
        if day != self._day_number:
            today = datetime.fromtimestamp(day * 86400, UTC).date()
            self._month_label, self._month_expires = _month_of(today)
            self._day_number, self._day = day, today
        return self._day

    def take_pending(self) -> tuple[list[UsageRow], dict[str, int]]:
        """Hand over the counts gathered since the last call (on the event loop's thread, so no
        request's increment can fall between the read and the reset)."""
        pending, self._pending = self._pending, defaultdict(lambda: [0, 0, 0, 0, 0])
        unflushed = dict(self._unflushed_requests)
        rows = [UsageRow(key, model, day, *counts) for (key, model, day), counts in pending.items()]
        return rows, unflushed

    def write_usage(self, rows: list[UsageRow]) -> None:
        """Add counts to the database and re-read the month's totals (off the event loop)."""
        if self.keys is None:
            return
        if rows:
            self.keys.add_usage(rows)
        now = self._now()
        if rows or (now.year, now.month) != self._totals[0]:
            self._refresh_month()

    def written(self, unflushed: dict[str, int]) -> None:
        """After a successful write: those requests are now in the month's totals."""
        for key, n in unflushed.items():
            left = self._unflushed_requests[key] - n
            if left > 0:
                self._unflushed_requests[key] = left
            else:
                self._unflushed_requests.pop(key, None)

    def restore(self, rows: list[UsageRow]) -> None:
        """After a failed write: keep the counts for the next attempt rather than lose them."""
        for row in rows:
            counts = self._pending[(row.key_id, row.model, row.day)]
            for index, value in enumerate((row.requests, row.rows, row.errors, row.bytes_in, row.bytes_out)):
                counts[index] += value

    def flush(self) -> None:
        """Take, write and settle in one go (for callers that own the only thread: shutdown, tests)."""
        rows, unflushed = self.take_pending()
        try:
            self.write_usage(rows)
        except Exception:
            self.restore(rows)
            raise
        self.written(unflushed)

    def describe(self) -> dict[str, Any]:
        return {"insecure": self.insecure, "keys": len(self.ring), "oidc": self.oidc is not None}
