"""API keys: tokens, roles, scopes, and the in-memory key ring a server authenticates against.

A token is ``mpk_<id>_<secret>``: a public 12-character id and a 256-bit random secret. Only the
secret's SHA-256 digest is stored; digests are compared in constant time. (A slow password hash would
cost milliseconds per request and protect nothing: a 256-bit random secret cannot be guessed.)
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from modelport.errors import Forbidden, InvalidInput, Unauthenticated

__all__ = [
    "PERMISSIONS",
    "ROLES",
    "KeyRecord",
    "KeyRing",
    "Principal",
    "hash_secret",
    "new_token",
    "parse_duration",
    "parse_quota",
    "parse_rate",
    "split_token",
]

ROLES = ("consumer", "publisher", "admin")
# What each role may do. "infer" and "read" are scoped by the key's model patterns.
PERMISSIONS: dict[str, frozenset[str]] = {
    "consumer": frozenset({"infer", "read"}),
    "publisher": frozenset({"infer", "read", "publish"}),
    "admin": frozenset({"infer", "read", "publish", "admin"}),
}
_PREFIX = "mpk"
_ID = re.compile(r"[a-z0-9]{12}")
_PATTERN = re.compile(r"[A-Za-z0-9_.*?\[\]-]{1,100}")
_LONGEST = timedelta(days=3653)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_RATE_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hour": 3600.0}


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token() -> tuple[str, str, str]:
    """A fresh ``(key id, secret, token)``."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    key_id = "".join(secrets.choice(alphabet) for _ in range(12))
    secret = secrets.token_urlsafe(32)
    return key_id, secret, f"{_PREFIX}_{key_id}_{secret}"


_GIVEN_SECRET = re.compile(r"[A-Za-z0-9_-]{32,100}")


def check_given_token(token: str) -> tuple[str, str]:
    """``(key id, secret)`` of a token an operator made (``init --admin-key-file``): the token format
    with a secret of at least 32 URL-safe characters (192 bits and more). The message never repeats
    the token."""
    parts = split_token(token.strip())
    if parts is None or not _GIVEN_SECRET.fullmatch(parts[1]):
        raise InvalidInput(
            "the admin key must be one token mpk_<12 lower-case letters or digits>_<a secret of 32 to "
            "100 URL-safe characters> (docs/deploy.md shows how to make one)"
        )
    return parts


def split_token(token: str) -> tuple[str, str] | None:
    """``(key id, secret)`` of a well-formed token, else ``None``."""
    parts = token.split("_", 2)
    if (
        len(parts) != 3
        or parts[0] != _PREFIX
        or not _ID.fullmatch(parts[1])
        or not 20 <= len(parts[2]) <= 100
    ):
        return None
    return parts[1], parts[2]


def parse_duration(text: str) -> timedelta:
    """``90d``, ``12h``, ``30m``, ``45s``, ``2w``."""
    match = re.fullmatch(r"\s*(\d{1,6})\s*([smhdw])\s*", text)
    if not match:
        raise InvalidInput(f"duration {text!r} must look like 90d, 12h, 30m, 45s or 2w")
    span = timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    if span > _LONGEST:
        raise InvalidInput(f"duration {text!r} is longer than ten years")
    return span


def parse_rate(text: str) -> float:
    """``50/s``, ``3000/min``, ``100/h`` → requests per second."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*/\s*([a-z]+)\s*", text)
    if not match or match.group(2) not in _RATE_UNITS or float(match.group(1)) <= 0:
        raise InvalidInput(f"rate {text!r} must look like 50/s, 3000/min or 100/h")
    rate: float = float(match.group(1)) / _RATE_UNITS[match.group(2)]
    if not rate <= 1_000_000:
        raise InvalidInput(f"rate {text!r} is above 1,000,000/s: leave the rate out for no limit")
    return rate


def parse_quota(text: str) -> int:
    """``1000000/month`` → requests per calendar month (UTC)."""
    match = re.fullmatch(r"\s*(\d{1,15})\s*/\s*month\s*", text)
    if not match or int(match.group(1)) <= 0:
        raise InvalidInput(f"quota {text!r} must look like 1000000/month")
    return int(match.group(1))


def check_patterns(patterns: list[str] | None) -> list[str]:
    """Model patterns for a key: ``None`` means every model (``*``); an empty list is refused, so
    emptying a key's scope can never widen it."""
    if patterns is None:
        return ["*"]
    if not isinstance(patterns, list) or not patterns or len(patterns) > 50:
        raise InvalidInput(
            "model patterns must be a list of 1 to 50 patterns (leave them out for every model)"
        )
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise InvalidInput("model patterns must be strings")
        if not _PATTERN.fullmatch(pattern):
            raise InvalidInput(
                f"model pattern {pattern!r} may hold letters, digits, . _ - and the wildcards * ? [ ]"
            )
    return patterns


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A key as stored (never its secret)."""

    id: str
    name: str
    role: str
    models: tuple[str, ...]
    secret_hash: str
    created_at: datetime
    created_by: str
    previous_hash: str | None = None
    previous_until: datetime | None = None
    rate: float | None = None
    quota: int | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None

    def status(self, now: datetime | None = None) -> str:
        now = now or datetime.now(UTC)
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def to_dict(self) -> dict[str, Any]:
        """Everything an operator may see: no digests."""
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "models": list(self.models),
            "rate_per_second": self.rate,
            "quota_per_month": self.quota,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "previous_secret_valid_until": self.previous_until.isoformat() if self.previous_until else None,
            "status": self.status(),
        }


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a key's id, role and model patterns — or, for an OpenID access token
    (security/oidc.py), the person or client it names (``subject``) and an id derived from it."""

    key_id: str
    role: str
    models: tuple[str, ...] = ("*",)
    rate: float | None = None
    quota: int | None = None
    _cache: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)
    subject: str | None = None

    @property
    def actor(self) -> str:
        """Who the audit log records: ``key:<id>`` or ``oidc:<subject>``."""
        return f"key:{self.key_id}" if self.subject is None else f"oidc:{self.subject}"

    def may(self, permission: str) -> bool:
        return permission in PERMISSIONS.get(self.role, frozenset())

    def require(self, permission: str) -> None:
        if not self.may(permission):
            raise Forbidden(f"key {self.key_id} ({self.role}) may not {permission}")

    def sees(self, model: str) -> bool:
        """Whether ``model`` is within the key's patterns (admins see everything)."""
        if self.role == "admin":
            return True
        seen = self._cache.get(model)
        if seen is None:
            seen = any(fnmatch.fnmatchcase(model, pattern) for pattern in self.models)
            if len(self._cache) < 4096:
                self._cache[model] = seen
        return seen


DEV_PRINCIPAL = Principal("insecure-dev", "admin")


class KeyRing:
    """The keys a worker authenticates against, replaced whole when the registry changes."""

    _UNAUTHENTICATED = "a valid API key is required (Authorization: Bearer <key> or X-API-Key)"

    def __init__(self, keys: list[KeyRecord] | None = None) -> None:
        self._ring: dict[str, tuple[KeyRecord, Principal]] = {}
        # console sessions signed out before their cookies expire (ui/sessions.py), read with the keys
        self.ended_sessions: frozenset[str] = frozenset()
        self.replace(keys or [])

    def replace(self, keys: list[KeyRecord]) -> None:
        # One assignment: a request on the event loop sees the old ring or the new, never half of each.
        self._ring = {
            key.id: (key, Principal(key.id, key.role, key.models, key.rate, key.quota)) for key in keys
        }

    def __len__(self) -> int:
        return len(self._ring)

    def find(self, key_id: str) -> tuple[KeyRecord, Principal] | None:
        """The active key with this id and its principal; None when it is unknown, revoked or expired
        (the console re-checks a session's key with this on every request: ui/sessions.py)."""
        entry = self._ring.get(key_id)
        if entry is None or entry[0].status() != "active":
            return None
        return entry

    def authenticate(self, token: str | None, now: datetime | None = None) -> Principal:
        """The principal for ``token``; :class:`Unauthenticated` with one message for every failure
        (unknown id, wrong secret, expired, revoked), so a caller learns nothing from it."""
        parts = split_token(token) if token else None
        entry = self._ring.get(parts[0]) if parts else None
        digest = hash_secret(parts[1]) if parts else ""
        if entry is None or parts is None:
            hmac.compare_digest(digest, "0" * 64)  # same work as a known id
            raise Unauthenticated(self._UNAUTHENTICATED)
        key, principal = entry
        if hmac.compare_digest(digest, key.secret_hash):
            # The clock is read only for keys that can expire (the ring holds no revoked key).
            if key.expires_at is None or key.expires_at > (now or datetime.now(UTC)):
                return principal
            raise Unauthenticated(self._UNAUTHENTICATED)
        now = now or datetime.now(UTC)
        previous = (
            key.previous_hash is not None
            and key.previous_until is not None
            and now < key.previous_until
            and hmac.compare_digest(digest, key.previous_hash)
        )
        if not previous or key.status(now) != "active":
            raise Unauthenticated(self._UNAUTHENTICATED)
        return principal
