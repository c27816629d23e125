"""OpenID Connect access tokens as bearer credentials, beside API keys.

A bearer token that looks like a JWT (:func:`looks_like_jwt`) is verified against the configured
issuer: signature by a key of the issuer's JWKS (found through discovery), ``iss``, ``aud``, ``exp``
(and ``nbf``/``iat``) with a small leeway, and an algorithm from a pinned, asymmetric list — never
``none`` and never HS*, so neither an unsigned token nor one "signed" with the provider's public key
as an HMAC secret can pass. The caller's groups map to a modelport role and model patterns
(:class:`ClaimMapping`); groups that map to no role are refused, never made a silent consumer.

Keys are cached (:class:`SigningKeys`): a known key id costs no I/O. An unknown key id (a rotation)
refetches the JWKS, at most once per ``refetch_seconds``, so a caller cycling made-up key ids cannot
make the server hammer the provider; known keys are re-read every 15 minutes, so a key the provider
withdraws stops working. A provider that cannot be reached fails JWT callers with
:class:`IdentityProviderUnavailable` (503); API keys never depend on it.

PyJWT comes with the ``oidc`` extra and is imported when a verifier is built.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from modelport.errors import Forbidden, IdentityProviderUnavailable, InvalidInput, Unauthenticated
from modelport.optional import require
from modelport.security.keys import ROLES, Principal, check_patterns

__all__ = [
    "ClaimMapping",
    "PublicKey",
    "SigningKeys",
    "TokenVerifier",
    "check_issuer_url",
    "discover",
    "looks_like_jwt",
    "post_form",
]

log = logging.getLogger("modelport.security")

ASYMMETRIC = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
# The same answer for every refused token: which check failed would only help a forger.
REFUSED = "a valid API key or access token is required (Authorization: Bearer <token>)"
MAX_AGE = 900.0  # known keys are re-read this often: a withdrawn key stops working within 15 minutes
TIMEOUT = 5.0  # discovery and JWKS requests; a request that triggers a fetch waits at most this
MAX_DOCUMENT = 1 << 20
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
_SUBJECT = re.compile(r"[^\w@.+:-]")


def looks_like_jwt(token: str) -> bool:
    """Three base64url parts, the first a JSON object: never an ``mpk_`` key."""
    return len(token) <= 16_384 and _JWT.fullmatch(token) is not None


def check_issuer_url(url: str) -> str:
    """``url`` if it is https, or http to a loopback address (a provider the tests run); an issuer
    reached over plain http elsewhere could be impersonated by anyone on the path."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "https" and host:
        return url
    if parts.scheme == "http":
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if loopback:
            return url
    raise InvalidInput(f"the OpenID issuer must be an https URL (http only on loopback), not {url[:200]!r}")


@functools.cache
def _opener() -> Any:
    # Imported here: every server imports this module (security/gate.py), few ever fetch a JWKS.
    import urllib.request

    class NoRedirects(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None  # a redirect is an error: it could lead from https to somewhere else

    return urllib.request.build_opener(NoRedirects)


def fetch_json(url: str, timeout: float = TIMEOUT) -> dict[str, Any]:
    """A JSON object from ``url`` (blocking: run it on a thread)."""
    import urllib.request

    # https, or http to loopback: never file: or another scheme
    request = urllib.request.Request(check_issuer_url(url), headers={"Accept": "application/json"})  # noqa: S310
    with _opener().open(request, timeout=timeout) as answer:
        body = answer.read(MAX_DOCUMENT + 1)
    if len(body) > MAX_DOCUMENT:
        raise ValueError(f"{url} sent more than {MAX_DOCUMENT} bytes")
    document = json.loads(body)
    if not isinstance(document, dict):
        raise ValueError(f"{url} sent no JSON object")
    return document


def discover(issuer: str) -> dict[str, Any]:
    """The issuer's discovery document, refused unless it names ``issuer`` itself (blocking)."""
    document = fetch_json(check_issuer_url(issuer).rstrip("/") + "/.well-known/openid-configuration")
    if document.get("issuer") != issuer:
        raise ValueError(f"the discovery document names another issuer: {document.get('issuer')!r}")
    return document


def post_form(url: str, form: Mapping[str, str], timeout: float = TIMEOUT) -> dict[str, Any]:
    """POST ``form`` to ``url`` (a token endpoint) and read its JSON answer, error answers included
    (blocking). Same rules as :func:`fetch_json`: https or loopback http, no redirects, bounded size."""
    import urllib.error
    import urllib.request

    body = urllib.parse.urlencode(dict(form)).encode()
    request = urllib.request.Request(  # noqa: S310 -- the scheme is checked by check_issuer_url
        check_issuer_url(url),
        data=body,
        headers={"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"},
    )
    try:
        with _opener().open(request, timeout=timeout) as answer:
            text = answer.read(MAX_DOCUMENT + 1)
    except urllib.error.HTTPError as exc:  # 400 invalid_grant and the like: a JSON error object
        text = exc.read(MAX_DOCUMENT + 1)
    if len(text) > MAX_DOCUMENT:
        raise ValueError(f"{url} sent more than {MAX_DOCUMENT} bytes")
    document = json.loads(text)
    if not isinstance(document, dict):
        raise ValueError(f"{url} sent no JSON object")
    return document


@dataclass(frozen=True, slots=True)
class PublicKey:
    """One of the issuer's keys: the key object and the algorithm the JWKS declares for it (if any)."""

    key: Any
    alg: str | None

    def signs(self, alg: str) -> bool:
        """Whether a token signed with ``alg`` may be checked with this key: the declared algorithm,
        or, undeclared, one of the key type's (PyJWT refuses a key of the wrong type)."""
        return self.alg is None or self.alg == alg


class SigningKeys:
    """The issuer's public keys by key id, fetched through discovery and cached."""

    def __init__(
        self,
        issuer: str,
        *,
        refetch_seconds: float = 30.0,
        fetch: Callable[[str], dict[str, Any]] = fetch_json,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = check_issuer_url(issuer)
        self.refetch_seconds = refetch_seconds
        self.fetches = 0  # successful and failed attempts (tests read it)
        self._fetch, self._clock = fetch, clock
        self._keys: dict[str, PublicKey] = {}
        self._fetched_at = -float("inf")  # last success
        self._tried_at = -float("inf")  # last attempt
        self._lock: asyncio.Lock | None = None

    async def get(self, kid: str) -> PublicKey | None:
        """The key ``kid``, or ``None`` when the issuer does not publish it."""
        key = self._keys.get(kid)
        if key is not None and self._clock() - self._fetched_at < MAX_AGE:
            return key  # the hot path: no I/O, no lock
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # one fetch at a time; the requests that waited see its result
            key = self._keys.get(kid)
            now = self._clock()
            if key is not None and now - self._fetched_at < MAX_AGE:
                return key
            if now - self._tried_at < self.refetch_seconds:
                if not self._keys:
                    raise IdentityProviderUnavailable(_UNAVAILABLE)
                return key  # rate-limited: what we have (None for an unknown id)
            self._tried_at = now
            self.fetches += 1
            try:
                self._keys = await asyncio.to_thread(self._read)
            except Exception as exc:
                log.warning("cannot fetch the OpenID provider's keys from %s: %s", self.issuer, exc)
                if key is not None:
                    return key  # the provider is away: keep trusting the keys it last published
                if not self._keys:
                    raise IdentityProviderUnavailable(_UNAVAILABLE) from None
                return None
            self._fetched_at = self._clock()
            return self._keys.get(kid)

    def _read(self) -> dict[str, PublicKey]:
        jwt = require("jwt", "oidc", "accepting OpenID access tokens")
        discovery = self._fetch(self.issuer.rstrip("/") + "/.well-known/openid-configuration")
        if discovery.get("issuer") != self.issuer:
            raise ValueError(f"the discovery document names another issuer: {discovery.get('issuer')!r}")
        jwks_uri = discovery.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise ValueError("the discovery document has no jwks_uri")
        keys: dict[str, PublicKey] = {}
        for entry in self._fetch(jwks_uri).get("keys", []):
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue
            kid = entry.get("kid")
            if not isinstance(kid, str) or entry.get("kty") == "oct":  # never a shared secret
                continue
            try:
                declared = entry.get("alg")
                keys[kid] = PublicKey(jwt.PyJWK(entry).key, declared if isinstance(declared, str) else None)
            except jwt.PyJWTError:
                continue  # a key type this PyJWT cannot use: tokens signed with it are refused
        return keys


_UNAVAILABLE = "the identity provider's signing keys cannot be fetched: try again later (API keys still work)"


@dataclass(frozen=True)
class ClaimMapping:
    """From a verified token's claims to a :class:`Principal`: groups → role and model patterns."""

    roles: Mapping[str, str]
    scopes: Mapping[str, Sequence[str]] = field(default_factory=dict)
    role_claim: str = "groups"
    identity_claim: str = "sub"

    def __post_init__(self) -> None:
        for group, role in self.roles.items():
            if role not in ROLES:
                raise InvalidInput(f"group {group!r} maps to {role!r}: a role is one of {', '.join(ROLES)}")
        for patterns in self.scopes.values():
            check_patterns(list(patterns))

    def groups(self, claims: Mapping[str, Any]) -> set[str]:
        """The caller's groups: a list of strings or one space-separated string, at a claim name or a
        dotted path into objects (``realm_access.roles``)."""
        value: Any = claims
        for part in self.role_claim.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if isinstance(value, str):
            return set(value.split())
        if isinstance(value, list):
            return {item for item in value if isinstance(item, str)}
        return set()

    def principal(self, claims: Mapping[str, Any], issuer: str) -> Principal:
        groups = self.groups(claims)
        granted = {self.roles[group] for group in groups if group in self.roles}
        if not granted:
            raise Forbidden("the token's groups grant no modelport role")
        role = max(granted, key=ROLES.index)
        models: tuple[str, ...] = ("*",)
        if self.scopes:
            models = tuple(sorted({p for g in groups for p in self.scopes.get(g, ())}))
        sub = str(claims["sub"])
        name = claims.get(self.identity_claim)
        subject = _SUBJECT.sub("_", str(name if isinstance(name, str) and name else sub))[:100]
        # A stable 16-character id per issuer and subject: usage rows and rate buckets are kept per id,
        # and it cannot collide with a key's 12-character id.
        key_id = "oidc" + hashlib.sha256(f"{issuer}\0{sub}".encode()).hexdigest()[:12]
        return Principal(key_id, role, models, subject=subject)


class TokenVerifier:
    """Verifies access tokens of one issuer and maps them to principals."""

    def __init__(
        self,
        keys: SigningKeys,
        audience: str,
        mapping: ClaimMapping,
        *,
        algorithms: Sequence[str] = ("RS256", "ES256"),
        leeway: float = 30.0,
    ) -> None:
        unsafe = [alg for alg in algorithms if alg not in ASYMMETRIC]
        if unsafe or not algorithms:
            raise InvalidInput(
                f"OpenID token algorithms must be asymmetric ({', '.join(sorted(ASYMMETRIC))}); "
                f"refused: {', '.join(unsafe) or 'an empty list'}"
            )
        if not audience:
            raise InvalidInput("an OpenID issuer needs an audience (MODELPORT_OIDC_AUDIENCE)")
        self._jwt = require("jwt", "oidc", "accepting OpenID access tokens")
        self.keys, self.audience, self.mapping = keys, audience, mapping
        self.algorithms, self.leeway = frozenset(algorithms), leeway

    async def _claims(self, token: str, audience: str, required: list[str]) -> dict[str, Any]:
        """The claims of ``token`` once its header's algorithm is allowed, its key is known and its
        signature, issuer, ``audience`` and times check out; :class:`Unauthenticated` (always the
        same message) for any failed check."""
        jwt = self._jwt
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated(REFUSED) from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in self.algorithms or not isinstance(kid, str) or len(kid) > 200:
            raise Unauthenticated(REFUSED)
        key = await self.keys.get(kid)
        if key is None or not key.signs(alg):
            raise Unauthenticated(REFUSED)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=audience,
                issuer=self.keys.issuer,
                leeway=self.leeway,
                options={"require": required},
            )
        except jwt.PyJWTError:
            raise Unauthenticated(REFUSED) from None
        return claims

    async def authenticate(self, token: str) -> Principal:
        """The principal a valid token names; :class:`Unauthenticated` (always the same message) for
        any token that fails a check, :class:`Forbidden` for one whose groups grant no role."""
        claims = await self._claims(token, self.audience, ["exp", "iat", "iss", "aud", "sub"])
        return self.mapping.principal(claims, self.keys.issuer)

    async def id_token_claims(self, token: str, *, client_id: str, nonce: str) -> dict[str, Any]:
        """The claims of an ID token issued to ``client_id`` for the sign-in that sent ``nonce``: the
        same keys, algorithms and leeway as access tokens, but ``aud`` is the client (and ``azp``, when
        there are several audiences) and the ``nonce`` must match, so a token from another sign-in or
        for another client cannot start a session. :class:`Unauthenticated` for any failed check."""
        claims = await self._claims(token, client_id, ["exp", "iat", "iss", "aud", "sub", "nonce"])
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != client_id:
            raise Unauthenticated(REFUSED)
        if not hmac.compare_digest(str(claims["nonce"]).encode(), nonce.encode()):
            raise Unauthenticated(REFUSED)
        return claims
