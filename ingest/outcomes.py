"""Every way a postback request can end: status code, metric reason, log level, retryability.

One table, read by the handler, the guards and the metrics alike, so that a status code, the
reason in the log line and the `reason` label of the refusal counter can never disagree.
`retryable` says whether the provider will (and should) send the same postback again: only a
200 makes it forget, so every non-200 answer is a request to retry, but for 4xx refusals the
retry will meet the same refusal, which is why they are logged as warnings to act on.
`closes` says whether the answer ends the connection: after a refusal that leaves unread or
unframeable request bytes behind, the next bytes on the connection must never be taken for a
request.
"""

from __future__ import annotations

import enum
from logging import DEBUG, ERROR, INFO, WARNING


class Outcome(enum.Enum):
    #            status, reason label, log level, retryable, closes the connection, answer text
    ACCEPTED = (200, "accepted", DEBUG, False, False, "accepted")
    NOT_FOUND = (404, "not_found", INFO, False, False, "no such path")
    METHOD_NOT_ALLOWED = (405, "method_not_allowed", INFO, False, False, "method not allowed")
    CLIENT_NOT_ALLOWED = (403, "client_not_allowed", WARNING, False, False, "client not allowed")
    BAD_CREDENTIALS = (401, "bad_credentials", WARNING, False, False, "credentials required")
    BODY_TOO_LARGE = (413, "body_too_large", WARNING, False, True, "body too large")
    # RFC 9110 15.5.9: the rest of a stalled body may still come, so a 408 ends the connection.
    BODY_TIMEOUT = (408, "body_timeout", WARNING, True, True, "body not received in time")
    # The next three come from the HTTP layer (ingest/protocol.py), before any route runs.
    HEADER_TIMEOUT = (408, "header_timeout", INFO, True, True, "header not received in time")
    HEADER_TOO_LARGE = (431, "header_too_large", WARNING, False, True, "header too large")
    # `Connection: Upgrade` (curl --http2 on http:// asks for h2c) or CONNECT: httptools stops
    # framing the request there, so its body cannot be read. The provider never asks for one.
    UPGRADE_REFUSED = (400, "upgrade_refused", WARNING, False, True, "no protocol upgrades")
    CLIENT_DISCONNECTED = (499, "client_disconnected", INFO, True, False, "")
    KAFKA_TIMEOUT = (503, "kafka_timeout", ERROR, True, False, "not stored in time, retry")
    KAFKA_ERROR = (503, "kafka_error", ERROR, True, False, "could not store, retry")
    NOT_READY = (503, "not_ready", WARNING, True, False, "starting or stopping, retry")

    def __init__(
        self, status: int, reason: str, log_level: int, retryable: bool, closes: bool, text: str
    ) -> None:
        self.status = status
        self.reason = reason
        self.log_level = log_level
        self.retryable = retryable
        self.closes = closes
        self.body = f"{text}\n".encode()
        # Only ACCEPTED answers 200. A plain attribute: read twice per request.
        self.refused = status != 200
