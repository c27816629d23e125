"""The SSRF guard: where a webhook may point, at subscription and at each delivery."""

from __future__ import annotations

import pytest

from modelport.errors import InvalidInput
from modelport.events.urls import UrlPolicy, check_url

STRICT = UrlPolicy()


@pytest.mark.parametrize(
    "url, reason",
    [
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://127.0.0.1/hook", "loopback"),
        ("https://[::1]/hook", "loopback"),
        ("https://10.0.0.1/hook", "private"),
        ("https://172.16.3.4/hook", "private"),
        ("https://192.168.1.1/hook", "private"),
        ("https://[::ffff:127.0.0.1]/hook", "loopback"),
        ("https://[::ffff:169.254.169.254]/hook", "link-local"),
        ("https://[fe80::1]/hook", "link-local"),
        ("https://[fc00::1]/hook", "private"),
        ("https://0.0.0.0/hook", "unspecified"),
        ("https://224.0.0.1/hook", "multicast"),
        ("https://localhost/hook", "loopback"),
        ("http://93.184.216.34/hook", "https://"),
        ("https://user:pw@93.184.216.34/hook", "credentials"),
        ("ftp://93.184.216.34/hook", "https://"),
        ("https:///hook", "no host"),
    ],
)
def test_dangerous_urls_are_refused(url: str, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        check_url(url, STRICT)


def test_a_public_address_passes_and_is_pinned() -> None:
    target = check_url("https://93.184.216.34:8443/hook?x=1", STRICT)
    assert target.addresses == ("93.184.216.34",)
    assert target.path == "/hook?x=1" and target.host_header == "93.184.216.34:8443"


def test_operators_can_open_private_ranges_and_restrict_hosts() -> None:
    assert check_url("http://127.0.0.1:9/x", UrlPolicy(allow_http=True, allow_private=True)).port == 9
    import ipaddress

    cidr = UrlPolicy(cidrs=(ipaddress.ip_network("10.20.0.0/16"),))
    assert check_url("https://10.20.1.2/x", cidr).addresses == ("10.20.1.2",)
    with pytest.raises(InvalidInput, match="private"):
        check_url("https://10.21.1.2/x", cidr)
    hosts = UrlPolicy(hosts=("*.example.com",))
    with pytest.raises(InvalidInput, match="MODELPORT_WEBHOOK_ALLOW"):
        check_url("https://93.184.216.34/x", hosts)
