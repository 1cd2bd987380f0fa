"""Every way a postback request can end: status code, metric reason, log level, retryability.

One table, read by the handler, the guards and the metrics alike, so that a status code, the
reason in the log line and the `reason` label of the refusal counter can never disagree.
`retryable` says whether the provider will (and should) send the same postback again: only a
200 makes it forget, so every non-200 answer is a request to retry, but for 4xx refusals the
retry will meet the same refusal, which is why they are logged as warnings to act on.
"""

from __future__ import annotations

import enum
import logging


class Outcome(enum.Enum):
    #            status, reason label,           log level,       retryable, answer text
    ACCEPTED = (200, "accepted", logging.DEBUG, False, "accepted")
    NOT_FOUND = (404, "not_found", logging.INFO, False, "no such path")
    METHOD_NOT_ALLOWED = (405, "method_not_allowed", logging.INFO, False, "method not allowed")
    CLIENT_NOT_ALLOWED = (403, "client_not_allowed", logging.WARNING, False, "client not allowed")
    BAD_CREDENTIALS = (401, "bad_credentials", logging.WARNING, False, "credentials required")
    BODY_TOO_LARGE = (413, "body_too_large", logging.WARNING, False, "body too large")
    BODY_TIMEOUT = (408, "body_timeout", logging.WARNING, True, "body not received in time")
    CLIENT_DISCONNECTED = (499, "client_disconnected", logging.INFO, True, "")
    KAFKA_TIMEOUT = (503, "kafka_timeout", logging.ERROR, True, "not stored in time, retry")
    KAFKA_ERROR = (503, "kafka_error", logging.ERROR, True, "could not store, retry")
    NOT_READY = (503, "not_ready", logging.WARNING, True, "starting or stopping, retry")

    def __init__(
        self, status: int, reason: str, log_level: int, retryable: bool, text: str
    ) -> None:
        self.status = status
        self.reason = reason
        self.log_level = log_level
        self.retryable = retryable
        self.body = f"{text}\n".encode()

    @property
    def refused(self) -> bool:
        return self is not Outcome.ACCEPTED
