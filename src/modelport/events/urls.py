"""Where a webhook may point (docs/webhooks.md, "Where a webhook may point"): the SSRF guard.

A URL is checked at subscription and again before every attempt, because DNS may answer differently
by then. :func:`check_url` resolves the host once and returns the addresses it checked; the delivery
connects to one of *those* (the Host header and TLS SNI still name the host), so a DNS answer that
changes between the check and the connection (rebinding) cannot send it elsewhere.

Refused unless an operator opened them: loopback, link-local (169.254.0.0/16 with the cloud metadata
address, fe80::/10), private (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7), unspecified,
multicast, reserved, and the IPv4-mapped / NAT64 IPv6 forms of any of them. Every resolved address must
pass, not just one: a name answering with a public and a private address is refused.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

from modelport.errors import InvalidInput
from modelport.settings import Settings

__all__ = ["Target", "UrlPolicy", "check_url"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_URL_MAX = 2000
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    """The operator's openings (``MODELPORT_WEBHOOK_*``); the defaults are the strict rules."""

    allow_http: bool = False
    allow_private: bool = False
    hosts: tuple[str, ...] = ()
    cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> UrlPolicy:
        try:
            cidrs = tuple(ipaddress.ip_network(c, strict=False) for c in settings.webhook_allow_cidrs)
        except ValueError as exc:
            raise InvalidInput(f"MODELPORT_WEBHOOK_ALLOW_CIDRS: {exc}") from None
        return cls(
            allow_http=settings.webhook_allow_http,
            allow_private=settings.webhook_allow_private,
            hosts=tuple(h.lower() for h in settings.webhook_allow),
            cidrs=cidrs,
        )


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL: where to connect (``addresses``, all of them allowed) and what to ask for."""

    scheme: str
    host: str
    port: int
    path: str  # with the query string
    addresses: tuple[str, ...]

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def _forbidden(address: Address) -> str | None:
    """Why ``address`` may not be reached without an opening, or ``None`` when it is public."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return _forbidden(address.ipv4_mapped)
        if address in _NAT64:
            return _forbidden(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (cloud metadata lives there)"
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private or not address.is_global:
        return "a private or reserved address"
    return None


def _allowed(address: Address, policy: UrlPolicy) -> bool:
    plain = (
        address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped else address
    )
    return any(plain in network for network in policy.cidrs if plain.version == network.version)


def _resolve(host: str, port: int) -> list[Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise InvalidInput(f"the webhook host {host!r} does not resolve") from None
    addresses: list[Address] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise InvalidInput(f"the webhook host {host!r} does not resolve")
    return addresses


def check_url(url: str, policy: UrlPolicy) -> Target:
    """The checked target of ``url``, or :class:`InvalidInput` saying which rule it breaks."""
    if not isinstance(url, str) or not url or len(url) > _URL_MAX or any(ord(c) <= 32 for c in url):
        raise InvalidInput(f"the webhook URL must be 1–{_URL_MAX} characters without spaces")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidInput("the webhook URL is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise InvalidInput("the webhook URL must be https://")
    if scheme == "http" and not policy.allow_http:
        raise InvalidInput("the webhook URL must be https:// (plain http is allowed only in development)")
    if parts.username is not None or parts.password is not None:
        raise InvalidInput("the webhook URL must not carry credentials: the signature authenticates us")
    if parts.fragment:
        raise InvalidInput("the webhook URL must not have a #fragment")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise InvalidInput("the webhook URL names no host")
    if policy.hosts and not any(fnmatchcase(host, pattern) for pattern in policy.hosts):
        raise InvalidInput(f"the webhook host {host!r} is not in MODELPORT_WEBHOOK_ALLOW")
    port = port or (443 if scheme == "https" else 80)
    addresses = _resolve(host, port)
    for address in addresses:
        reason = _forbidden(address)
        if reason and not policy.allow_private and not _allowed(address, policy):
            raise InvalidInput(
                f"the webhook host {host!r} resolves to {address}, {reason}: refused "
                "(MODELPORT_WEBHOOK_ALLOW_PRIVATE or _ALLOW_CIDRS open it)"
            )
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(scheme, host, port, path, tuple(str(a) for a in addresses))
