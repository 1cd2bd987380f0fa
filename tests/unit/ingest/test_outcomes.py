"""The outcome table: what each way a postback request can end answers, and what it means for
the provider."""

from __future__ import annotations

import logging

from ingest.outcomes import Outcome


def test_only_accepted_is_200_and_every_retryable_refusal_asks_for_a_retry() -> None:
    """The provider forgets a postback only on 200, so only a stored one may get it."""
    assert [o for o in Outcome if o.status == 200] == [Outcome.ACCEPTED]
    assert [o for o in Outcome if not o.refused] == [Outcome.ACCEPTED]
    for outcome in Outcome:
        if outcome.retryable:
            assert outcome.status in (408, 499, 503), outcome
    assert len({o.reason for o in Outcome}) == len(Outcome)


def test_answers_that_leave_request_bytes_unread_close_the_connection() -> None:
    """After a stalled, oversized or unframeable request, nothing the client sends next may be
    read as a request: those answers end the connection."""
    closing = {o for o in Outcome if o.closes}
    assert closing == {
        Outcome.BODY_TOO_LARGE,
        Outcome.BODY_TIMEOUT,
        Outcome.HEADER_TIMEOUT,
        Outcome.HEADER_TOO_LARGE,
        Outcome.UPGRADE_REFUSED,
    }


def test_failures_on_our_side_are_errors_and_the_senders_mistakes_warnings() -> None:
    """On-call's log filters: Kafka failing is an error; a refusal the provider's retries will
    meet again (allowlist, credentials, size) is a warning to act on."""
    assert {o for o in Outcome if o.status >= 500 and o.reason.startswith("kafka")} == {
        o for o in Outcome if o.log_level >= logging.ERROR
    }
    for outcome in (Outcome.CLIENT_NOT_ALLOWED, Outcome.BAD_CREDENTIALS, Outcome.BODY_TOO_LARGE):
        assert outcome.log_level == logging.WARNING, outcome
        assert not outcome.retryable, outcome
