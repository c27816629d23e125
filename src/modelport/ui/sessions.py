"""Console sessions and CSRF tokens: signed cookies, re-checked against the key ring on every request.

A session is a cookie holding ``{key id, secret fingerprint, expiry, nonce}`` and an HMAC-SHA256 tag
over it, keyed by a secret in ``HOME/run/console.key`` (0600, made by the first worker that needs it,
read by the others: every worker of one server accepts every worker's cookies). Nothing is stored on
the server while a session lasts, so it works across workers and replicas without a shared session
store; signing out records the session's id (an HMAC of its nonce) in the database until the cookie
would have expired (``KeyStore.end_session``), and every worker refuses it from its next key reload — a
quarter of a second — so a copied cookie dies with the sign-out. The cookie is HttpOnly,
SameSite=Strict, Secure over TLS, and the principal is never taken from it:

- the cookie names a key id; each request looks that id up in the worker's key ring (the keys the API
  authenticates with), so a revoked or expired key ends its sessions at once;
- the *fingerprint* binds the session to the secret that signed in (an HMAC of its digest): rotating a
  key ends the sessions of the old secret once its grace period is over.

CSRF: a synchronizer token derived from the session's nonce (HMAC, purpose ``csrf``), sent in a hidden
form field or the ``X-CSRF-Token`` header (htmx adds it from ``hx-headers`` on ``<body>``). The login
form, before any session, has its own token tied to a short-lived signed ``login`` cookie, so another
site cannot sign a browser in with the attacker's key (login CSRF).

OpenID sign-in (ui/oidc_login.py) uses two more cookies of the same kind: a *pending* one, for the ten
minutes a sign-in at the provider may take, holding the ``state``, ``nonce`` and PKCE verifier of that
sign-in only (the callback is refused unless its ``state`` matches: login CSRF again); and the session
itself, which holds the person's role and model patterns as mapped from the ID token at sign-in. There
is no key to look up on each request, so such a session ends at sign-out or its expiry — the ID
token's or ``console_session_hours``, whichever comes first — and a change of groups at the provider
takes effect at the next sign-in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

from modelport.monitoring.predictions import run_secret
from modelport.security.keys import ROLES, KeyRing, Principal, hash_secret, split_token

__all__ = ["Session", "Sessions", "console_secret"]

_LOGIN_SECONDS = 3600  # a login form left open for an hour must be reloaded
_PENDING_SECONDS = 600  # a sign-in at the OpenID provider must come back within ten minutes


def console_secret(home: Path) -> bytes:
    """The signing key in ``HOME/run/console.key``, created 0600 by the first caller."""
    return run_secret(home / "run" / "console.key")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in browser: whose key, until when, and its CSRF token."""

    principal: Principal
    expires: int
    csrf: str
    id: str = ""  # what a sign-out records (KeyStore.end_session): an HMAC of the nonce


class Sessions:
    """Issues and opens session and login cookies with one secret."""

    def __init__(self, secret: bytes, lifetime_seconds: float) -> None:
        self._secret = secret
        self.lifetime = int(lifetime_seconds)

    # -- signing --------------------------------------------------------------------------------

    def _tag(self, purpose: str, value: str) -> str:
        return hmac.new(self._secret, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()[:43]

    def _seal(self, payload: dict[str, object]) -> str:
        body = _b64(orjson.dumps(payload))
        return f"{body}.{self._tag('cookie', body)}"

    def _open(self, cookie: str | None) -> dict[str, object] | None:
        if not cookie or len(cookie) > 1024 or cookie.count(".") != 1:
            return None
        body, tag = cookie.split(".")
        if not hmac.compare_digest(tag, self._tag("cookie", body)):
            return None
        try:
            payload = orjson.loads(_unb64(body))
        except ValueError:
            return None
        if not isinstance(payload, dict) or not isinstance(payload.get("e"), int):
            return None
        if payload["e"] <= time.time():
            return None
        return payload

    def _fingerprint(self, digest: str) -> str:
        return self._tag("secret", digest)[:22]

    # -- login ----------------------------------------------------------------------------------

    def login_cookie(self) -> tuple[str, str]:
        """A fresh ``(cookie value, form token)`` pair for the sign-in form."""
        nonce = secrets.token_urlsafe(16)
        return self._seal({"l": nonce, "e": int(time.time()) + _LOGIN_SECONDS}), self._tag("login", nonce)

    def login_token_ok(self, cookie: str | None, token: str | None) -> bool:
        payload = self._open(cookie)
        nonce = payload.get("l") if payload else None
        return (
            isinstance(nonce, str)
            and token is not None
            and hmac.compare_digest(token.encode(), self._tag("login", nonce).encode())
        )

    # -- OpenID sign-in -------------------------------------------------------------------------

    def pending_cookie(self, state: str, nonce: str, verifier: str) -> str:
        """The cookie binding one sign-in at the provider to this browser."""
        return self._seal(
            {"p": {"s": state, "n": nonce, "v": verifier}, "e": int(time.time()) + _PENDING_SECONDS}
        )

    def pending(self, cookie: str | None, state: str | None) -> tuple[str, str] | None:
        """``(nonce, PKCE verifier)`` of the sign-in ``cookie`` started, if ``state`` is its state."""
        payload = self._open(cookie)
        found = payload.get("p") if payload else None
        if not isinstance(found, dict) or not state or not all(isinstance(found.get(k), str) for k in "snv"):
            return None
        if not hmac.compare_digest(state.encode(), str(found["s"]).encode()):
            return None
        return str(found["n"]), str(found["v"])

    def start_oidc(self, principal: Principal, id_token_expires: int) -> tuple[str, int]:
        """``(cookie value, lifetime in seconds)`` of a session for a person signed in at the provider:
        the principal as mapped now, until the ID token or the console lifetime ends, whichever first."""
        expires = min(int(id_token_expires), int(time.time()) + self.lifetime)
        person = {
            "k": principal.key_id,
            "r": principal.role,
            "m": list(principal.models),
            "s": principal.subject,
        }
        cookie = self._seal({"o": person, "e": expires, "n": secrets.token_urlsafe(16)})
        return cookie, max(0, expires - int(time.time()))

    # -- sessions -------------------------------------------------------------------------------

    def start(self, principal: Principal, token: str) -> str:
        """The cookie value of a session for the key that ``token`` authenticated as."""
        parts = split_token(token)
        digest = hash_secret(parts[1]) if parts else ""  # insecure-dev: any text signs in
        return self._seal(
            {
                "k": principal.key_id,
                "f": self._fingerprint(digest),
                "e": int(time.time()) + self.lifetime,
                "n": secrets.token_urlsafe(16),
            }
        )

    def resume(self, cookie: str | None, ring: KeyRing, insecure: Principal | None = None) -> Session | None:
        """The session of ``cookie`` if its tag, expiry and key still hold; else None.

        ``insecure``: the development principal of a server without keys (any signed cookie of it)."""
        payload = self._open(cookie)
        if payload is None or not isinstance(payload.get("n"), str):
            return None
        if self.session_id(str(payload["n"])) in ring.ended_sessions:  # signed out: refused everywhere
            return None
        if isinstance(payload.get("o"), dict):
            return self._person(payload)
        if not isinstance(payload.get("k"), str):
            return None
        expires, nonce = int(payload["e"]), str(payload["n"])  # type: ignore[call-overload]
        if insecure is not None:
            principal = insecure if payload["k"] == insecure.key_id else None
        else:
            principal = self._still_valid(str(payload["k"]), str(payload.get("f")), ring)
        if principal is None:
            return None
        return Session(principal, expires, self._tag("csrf", nonce), self.session_id(nonce))

    def session_id(self, nonce: str) -> str:
        """The id a sign-out records: derived from the nonce, so the table never holds a CSRF secret."""
        return self._tag("session", nonce)[:32]

    def _person(self, payload: dict[str, object]) -> Session | None:
        # Signed by us at sign-in, so its mapping is trusted until its expiry (checked by _open).
        person = payload["o"]
        assert isinstance(person, dict)
        key_id, role, models, subject = person.get("k"), person.get("r"), person.get("m"), person.get("s")
        if not (isinstance(key_id, str) and role in ROLES and isinstance(subject, str)):
            return None
        if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
            return None
        principal = Principal(key_id, str(role), tuple(models), subject=subject)
        nonce = str(payload["n"])
        return Session(principal, int(payload["e"]), self._tag("csrf", nonce), self.session_id(nonce))  # type: ignore[call-overload]

    def _still_valid(self, key_id: str, fingerprint: str, ring: KeyRing) -> Principal | None:
        found = ring.find(key_id)
        if found is None:  # revoked, expired or unknown: the session ends now
            return None
        record, principal = found
        if hmac.compare_digest(fingerprint, self._fingerprint(record.secret_hash)):
            return principal
        graced = (
            record.previous_hash is not None
            and record.previous_until is not None
            and datetime.now(UTC) < record.previous_until
        )
        if graced and hmac.compare_digest(fingerprint, self._fingerprint(str(record.previous_hash))):
            return principal
        return None

    @staticmethod
    def csrf_ok(session: Session, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), session.csrf.encode())
