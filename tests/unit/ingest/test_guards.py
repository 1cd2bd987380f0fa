"""Client address resolution and Basic credentials: the two checks spoofing would target."""

from __future__ import annotations

import base64
import ipaddress

import pytest

from common.env import Secret
from ingest.guards import UNKNOWN_CLIENT, BasicAuth, network_matcher, resolve_client

trusted = network_matcher((ipaddress.ip_network("10.0.0.0/8"),))


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "expected"),
    [
        ("203.0.113.9", None, "203.0.113.9"),
        ("203.0.113.9", b"198.51.100.1", "203.0.113.9"),  # untrusted peer: header ignored
        ("10.0.0.2", None, "10.0.0.2"),
        ("10.0.0.2", b"198.51.100.1", "198.51.100.1"),
        ("10.0.0.2", b"1.1.1.1, 198.51.100.1", "198.51.100.1"),  # left of it is client-written
        ("10.0.0.2", b"198.51.100.1, 10.0.0.7", "198.51.100.1"),  # proxy chain skipped
        ("10.0.0.2", b"10.0.0.8, 10.0.0.7", "10.0.0.8"),  # all ours: the first hop
        ("10.0.0.2", b"not-an-ip, 198.51.100.1", "198.51.100.1"),
        ("10.0.0.2", b"198.51.100.1, garbage", "10.0.0.2"),  # garbage from a proxy: stop
        ("10.0.0.2", b"2001:db8::1", "2001:db8::1"),
        (None, b"198.51.100.1", UNKNOWN_CLIENT),
    ],
)
def test_the_client_is_the_last_address_not_ours(
    peer: str | None, forwarded_for: bytes | None, expected: str
) -> None:
    """X-Forwarded-For is believed only as far as our own trusted proxies vouch for it."""
    assert resolve_client(peer, forwarded_for, trusted) == expected


def test_network_matcher_handles_both_families_and_garbage() -> None:
    """Allowlists mix IPv4 and IPv6; an unparsable address is never allowed."""
    allowed = network_matcher(
        (ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("2001:db8::/32"))
    )
    assert allowed("192.0.2.10")
    assert allowed("2001:db8::5")
    assert not allowed("192.0.3.1")
    assert not allowed("unknown")


def basic(credentials: bytes) -> bytes:
    return b"Basic " + base64.b64encode(credentials)


def test_basic_auth_accepts_only_the_configured_pair() -> None:
    """The right user and password pass (a colon in the password included); anything else fails."""
    auth = BasicAuth("provider", Secret("pa:ss"))
    assert auth.allows(basic(b"provider:pa:ss"))
    assert auth.allows(b"basic " + base64.b64encode(b"provider:pa:ss"))
    for header in (
        None,
        b"",
        basic(b"provider:pa"),
        basic(b"Provider:pa:ss"),
        basic(b"providerpa:ss"),
        basic(b"provider"),
        b"Bearer " + base64.b64encode(b"provider:pa:ss"),
        b"Basic ***",
    ):
        assert not auth.allows(header), header
