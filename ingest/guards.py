"""Who may post, and how much: client address, allowlist, Basic credentials, declared size.

Plain ASGI middleware in front of the postback routes only (health and metrics are for the
cluster, not the provider). It refuses before a byte of the body is read, and leaves the
facts it established for the handler in `scope["postback"]`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from common.env import IPNetwork, Secret
from ingest.answers import Answers
from ingest.outcomes import Outcome
from ingest.paths import is_postback_path, source_label

UNKNOWN_CLIENT = "unknown"


@dataclass(slots=True)
class RequestFacts:
    """What the guard learnt about a request, handed to the handler through the scope."""

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


class PostbackGuard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        answers: Answers,
        allowed_networks: tuple[IPNetwork, ...],
        trusted_proxies: tuple[IPNetwork, ...],
        basic_auth: BasicAuth | None,
        max_body_bytes: int,
    ) -> None:
        self._app = app
        self._answers = answers
        self._is_allowed = network_matcher(allowed_networks)
        self._is_trusted = network_matcher(trusted_proxies)
        self._basic_auth = basic_auth
        self._max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_postback_path(scope["path"]):
            await self._app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        peer = scope["client"][0] if scope.get("client") else None
        client = resolve_client(peer, headers.get(b"x-forwarded-for"), self._is_trusted)
        request_id_header = headers.get(b"x-request-id")
        request_id = (
            request_id_header.decode("latin-1")[:128] if request_id_header else os.urandom(16).hex()
        )
        outcome = self._refusal(client, headers)
        if outcome is not None:
            self._answers.record(
                outcome,
                source_label(scope["path"]),
                client=client,
                request_id=request_id,
                content_length=headers.get(b"content-length", b"").decode("latin-1"),
            )
            await self._answers.send(send, outcome)
            return
        scope["postback"] = RequestFacts(client=client, request_id=request_id, headers=headers)
        await self._app(scope, receive, send)

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
