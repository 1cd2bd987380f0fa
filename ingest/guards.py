"""Who may post, and how much: client address, allowlist, Basic credentials, declared size.

Checked on the request head alone, for the postback paths only (health and metrics are for
the cluster, not the provider), before a byte of the body is read. What the guard learns
about the request goes to the postback endpoint with it.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import ipaddress
import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import Scope

from common.env import IPNetwork, Secret
from ingest.outcomes import Outcome

UNKNOWN_CLIENT = "unknown"


@dataclass(slots=True)
class RequestFacts:
    """What the guard learnt about a request, handed to the postback endpoint with it."""

    client: str
    request_id: str
    headers: dict[bytes, bytes]


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def network_matcher(networks: tuple[IPNetwork, ...]) -> Callable[[str], bool]:
    """A cached membership test: the provider posts from a handful of addresses all day."""

    @functools.lru_cache(maxsize=4096)
    def contains(address: str) -> bool:
        ip = _parse_ip(address)
        return ip is not None and any(ip in network for network in networks)

    return contains


def resolve_client(
    peer: str | None, forwarded_for: bytes | None, is_trusted: Callable[[str], bool]
) -> str:
    """The real client: the peer, unless the peer is a trusted proxy.

    Then `X-Forwarded-For` is read right to left, skipping trusted proxies, and the first
    address not ours is the client. Entries left of it were written by the client itself and
    are never believed, so a caller cannot spoof its way past the allowlist.
    """
    if peer is None:
        return UNKNOWN_CLIENT
    if forwarded_for is None or not is_trusted(peer):
        return peer
    hops = [hop.strip() for hop in forwarded_for.decode("latin-1").split(",")]
    client = peer
    for hop in reversed(hops):
        if _parse_ip(hop) is None:
            break  # garbage in the chain: trust nothing further left
        client = hop
        if not is_trusted(hop):
            break
    return client


class BasicAuth:
    """HTTP Basic check in constant time; the provider lets a postback URL carry credentials."""

    def __init__(self, user: str, password: Secret) -> None:
        self._user = user.encode()
        self._password = password.reveal().encode()

    def allows(self, authorization: bytes | None) -> bool:
        if authorization is None:
            return False
        scheme, _, encoded = authorization.partition(b" ")
        if scheme.lower() != b"basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user, separator, password = decoded.partition(b":")
        # Evaluate both comparisons, so timing does not tell which part was wrong.
        user_ok = hmac.compare_digest(user, self._user)
        password_ok = hmac.compare_digest(password, self._password)
        return bool(separator) and user_ok and password_ok


class RequestIds:
    """Request ids for requests that brought none: a random prefix per process and a counter.

    Unique across edge processes and restarts (48 random bits each), and cheaper than a
    random id per request.
    """

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex() + "-"
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):x}"


class PostbackGuard:
    def __init__(
        self,
        *,
        allowed_networks: tuple[IPNetwork, ...],
        trusted_proxies: tuple[IPNetwork, ...],
        basic_auth: BasicAuth | None,
        max_body_bytes: int,
    ) -> None:
        self._is_allowed = network_matcher(allowed_networks)
        self._is_trusted = network_matcher(trusted_proxies)
        self._basic_auth = basic_auth
        self._max_body_bytes = max_body_bytes
        self._request_ids = RequestIds()

    def check(self, scope: Scope) -> tuple[RequestFacts, Outcome | None]:
        """The request's facts, and the refusal it has earned (None: it may go on)."""
        headers = dict(scope["headers"])
        peer = scope["client"][0] if scope.get("client") else None
        client = resolve_client(peer, headers.get(b"x-forwarded-for"), self._is_trusted)
        request_id_header = headers.get(b"x-request-id")
        request_id = (
            request_id_header.decode("latin-1")[:128]
            if request_id_header
            else self._request_ids.next()
        )
        facts = RequestFacts(client=client, request_id=request_id, headers=headers)
        return facts, self._refusal(client, headers)

    def _refusal(self, client: str, headers: dict[bytes, bytes]) -> Outcome | None:
        if not self._is_allowed(client):
            return Outcome.CLIENT_NOT_ALLOWED
        if self._basic_auth is not None and not self._basic_auth.allows(
            headers.get(b"authorization")
        ):
            return Outcome.BAD_CREDENTIALS
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max_body_bytes:
            return Outcome.BODY_TOO_LARGE
        return None
