"""Console sign-in at an OpenID provider: authorization code with PKCE (S256), a confidential or public
client, the ID token checked with the access-token verifier's keys (security/oidc.py).

The flow (docs/console.md), HTTP-free here; ui/routes.py turns it into redirects and cookies:

1. :meth:`OidcLogin.begin` draws ``state``, ``nonce`` and a PKCE verifier and builds the provider's
   authorization URL; the three travel in a signed, short-lived *pending* cookie (ui/sessions.py), never
   in server memory, so any worker can finish a sign-in another worker started;
2. the callback's ``state`` must equal the cookie's (a callback this browser did not start — login CSRF
   — is refused), then :meth:`OidcLogin.finish` exchanges the code with the verifier at the token
   endpoint, server to server, and checks the ID token: signature, ``iss``, ``aud`` = the client id,
   ``exp``, and the ``nonce`` of this sign-in;
3. the groups in the ID token map to a role and model patterns with the same :class:`ClaimMapping` as
   access tokens; groups that map to no role are refused (403), and no session starts.

The redirect URL is a setting, never built from the request: a Host header is the client's to choose,
and a callback on a host the attacker names would hand them the code.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from modelport.errors import IdentityProviderUnavailable, Unauthenticated
from modelport.security.keys import Principal
from modelport.security.oidc import REFUSED, TokenVerifier, discover, post_form

__all__ = ["Begun", "OidcLogin"]


@dataclass(frozen=True, slots=True)
class Begun:
    """A sign-in sent to the provider: where to send the browser, and what the callback must match."""

    url: str
    state: str
    nonce: str
    verifier: str


@dataclass
class OidcLogin:
    """One console client at the provider that ``verifier`` trusts."""

    verifier: TokenVerifier
    client_id: str
    client_secret: str | None
    redirect_url: str
    display_name: str = "single sign-on"
    _metadata: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def issuer(self) -> str:
        return self.verifier.keys.issuer

    async def metadata(self) -> dict[str, Any]:
        """The provider's discovery document, read once (its endpoints do not move while we run)."""
        if self._metadata is None:
            try:
                document = await asyncio.to_thread(discover, self.issuer)
            except Exception as exc:
                raise IdentityProviderUnavailable(
                    "the identity provider cannot be reached: try again later, or sign in with an API key"
                ) from exc
            for name in ("authorization_endpoint", "token_endpoint"):
                if not isinstance(document.get(name), str):
                    raise IdentityProviderUnavailable(f"the identity provider publishes no {name}")
            self._metadata = document
        return self._metadata

    async def begin(self) -> Begun:
        metadata = await self.metadata()
        state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        query = urllib.parse.urlencode(
            {
                "response_type": "code",
                "client_id": self.client_id,
                "redirect_uri": self.redirect_url,
                "scope": "openid profile groups",
                "state": state,
                "nonce": nonce,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        endpoint = str(metadata["authorization_endpoint"])
        return Begun(f"{endpoint}{'&' if '?' in endpoint else '?'}{query}", state, nonce, verifier)

    async def finish(self, code: str, nonce: str, verifier: str) -> tuple[Principal, int]:
        """The person the code signs in and the ID token's expiry. :class:`Unauthenticated` when the
        code or the ID token is refused, :class:`~modelport.errors.Forbidden` when their groups grant
        no role."""
        metadata = await self.metadata()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_url,
            "client_id": self.client_id,
            "code_verifier": verifier,
        }
        if self.client_secret is not None:
            form["client_secret"] = self.client_secret
        try:
            answer = await asyncio.to_thread(post_form, str(metadata["token_endpoint"]), form)
        except Exception as exc:
            raise IdentityProviderUnavailable(
                "the identity provider's token endpoint cannot be reached"
            ) from exc
        token = answer.get("id_token")
        if not isinstance(token, str):  # invalid_grant: a used, expired or foreign code, a wrong verifier
            raise Unauthenticated(REFUSED)
        claims = await self.verifier.id_token_claims(token, client_id=self.client_id, nonce=nonce)
        principal = self.verifier.mapping.principal(claims, self.issuer)
        return principal, int(claims["exp"])

    async def logout_url(self) -> str | None:
        """Where to end the person's session at the provider too (RP-initiated logout), if it says."""
        try:
            endpoint = (await self.metadata()).get("end_session_endpoint")
        except IdentityProviderUnavailable:
            return None
        if not isinstance(endpoint, str):
            return None
        back = urllib.parse.urljoin(self.redirect_url, "/ui/")
        query = urllib.parse.urlencode({"client_id": self.client_id, "post_logout_redirect_uri": back})
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"
