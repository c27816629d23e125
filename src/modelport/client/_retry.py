"""When the client sends a request again, and after how long. Pure: the clients do the sleeping.

What is retried, precisely:

- **429 and 503 answers, any method.** The server answers both before it changes anything (the rate
  and quota are checked at admission; a change under ``/api/v1`` commits before its answer or not at
  all, and an unavailable store means it did not commit), so sending again cannot apply a change twice.
- **Transport errors before the request left**: the connection could not be opened (refused, DNS,
  connect timeout, TLS handshake) or no pooled connection came free. No byte of the request was sent,
  so any method is retried.
- **Any other transport error** (a read timeout, a dropped connection, a malformed answer) only for
  ``GET`` and ``HEAD``: the request may have reached the server, and a ``POST``, ``PUT`` or ``DELETE``
  may have been applied. Those are raised to the caller, who knows whether repeating is safe.

Waits grow exponentially with "equal jitter" (half fixed, half random, so clients spread out), and a
``Retry-After`` the server sent is honoured (never waited less, up to 10 % more). The budget is both
a number of attempts and a total of time spent waiting: a wait that would pass it is not started, and
the last error is raised instead.
"""

from __future__ import annotations

import random
import ssl
from dataclasses import dataclass

import httpx

__all__ = ["Retries", "may_resend"]

_IDEMPOTENT = frozenset({"GET", "HEAD"})
# Raised before any byte of the request was written.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass(frozen=True, slots=True)
class Retries:
    """How a client retries (see the module docstring for what it retries).

    - ``attempts``: tries in all, the first included (1: never retry).
    - ``backoff``: the first wait in seconds; doubled at each retry, up to ``max_backoff``.
    - ``max_wait``: seconds a call may spend waiting between attempts, all waits together.
    """

    attempts: int = 4
    backoff: float = 0.5
    max_backoff: float = 30.0
    max_wait: float = 60.0
    statuses: frozenset[int] = frozenset({429, 503})

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts counts the first try too: at least 1")
        if min(self.backoff, self.max_backoff, self.max_wait) < 0:
            raise ValueError("waits cannot be negative")

    def wait(self, attempt: int, waited: float, retry_after: float | None = None) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None to give up. ``attempt`` counts from 1;
        ``waited`` is what this call has already waited; ``retry_after`` the server's hint."""
        if attempt >= self.attempts:
            return None
        step = min(self.max_backoff, self.backoff * 2.0 ** (attempt - 1))
        delay: float = step / 2 + random.uniform(0, step / 2)  # noqa: S311 (spreading clients, not secrets)
        if retry_after is not None:
            delay = max(delay, retry_after * random.uniform(1.0, 1.1))  # noqa: S311
        if waited + delay > self.max_wait:
            return None
        return delay


def may_resend(method: str, error: httpx.TransportError) -> bool:
    """Whether a request that failed with ``error`` may be sent again (module docstring)."""
    if isinstance(error, _NOT_SENT):
        cause: BaseException | None = error
        while cause is not None:  # a certificate the server will present again: retrying cannot help
            if isinstance(cause, ssl.SSLCertVerificationError):
                return False
            cause = cause.__cause__ or cause.__context__
        return True
    return method.upper() in _IDEMPOTENT and not isinstance(
        error, httpx.UnsupportedProtocol | httpx.LocalProtocolError | httpx.ProxyError
    )
