"""What the events check expects from a run, in the processor's own terms."""

from __future__ import annotations

from consumers.processor.identity import Identity, event_id
from consumers.processor.parse import parse
from simulator.check import CheckResult, expectation
from simulator.delivery import Delivery
from simulator.mix import JSON, XML, Postback

SENT = Postback(
    "SMS_MT/N201",
    "v2_json",
    "sent",
    "T1",
    b'{"origin":"SMS_MT","code":"N201","status":"Sent","tracking-id":"T1"}',
    JSON,
)
FINAL = Postback(
    "SMS_MT/N202",
    "v1_xml",
    "final",
    "T1",
    b"<POSTBACK><ORIGIN>SMS_MT</ORIGIN><CODE>N202</CODE><TRACKINGID>T1</TRACKINGID></POSTBACK>",
    XML,
)
MO = Postback(
    "SMS_MO/N211",
    "v2_json",
    "inbound",
    "M1",
    b'{"origin":"SMS_MO","code":"N211","tracking-id":"M1"}',
    JSON,
)
BROKEN = Postback(
    "malformed/missing_origin",
    "malformed",
    "malformed",
    "BAD1x3",
    b'{"code":"N202","tracking-id":"BAD1x3"}',
    JSON,
)


def ident(postback: Postback, identity: Identity | None = None) -> str:
    return event_id((identity or Identity()).digest(parse(postback.body)))


def test_every_postback_answered_200_is_expected_once_even_if_the_answer_was_dropped() -> None:
    """A 200 the simulator ignored still means stored: the event must exist, once."""
    deliveries = [
        Delivery(0, SENT, attempts=1, oks=1, fate="acked"),
        Delivery(1, FINAL, attempts=3, oks=3, dropped=3, fate="given_up"),
        Delivery(2, MO, attempts=6, oks=0, fate="given_up"),
        Delivery(3, BROKEN, attempts=1, oks=1, fate="acked"),
    ]
    wanted = expectation(deliveries, Identity())
    assert wanted.expected == {ident(SENT), ident(FINAL)}
    assert wanted.unconfirmed == {ident(MO)}  # never acknowledged: may or may not be stored
    assert wanted.dead_letters == 1  # malformed: no event id, left for the DLQ...
    assert wanted.malformed_ids == {"BAD1x3"}  # ...and its tracking id must never be an event


def test_the_check_uses_the_processors_identity_setting() -> None:
    """With DEDUPE_IDENTITY_FIELDS the expected ids are the ones that processor emits."""
    fields = Identity.from_fields("origin,tracking-id,code")
    wanted = expectation([Delivery(0, SENT, attempts=1, oks=1, fate="acked")], fields)
    assert wanted.expected == {ident(SENT, fields)}
    assert ident(SENT, fields) != ident(SENT)


def test_a_check_fails_on_anything_missing_or_duplicated() -> None:
    """Exactly once means neither a missing event nor a second copy."""

    def result(missing: tuple[str, ...], duplicated: tuple[str, ...]) -> CheckResult:
        return CheckResult("t", 2, 2 - len(missing), missing, duplicated, 0, 0, 0, 0, 0.1)

    assert result((), ()).passed
    assert not result(("a",), ()).passed
    assert not result((), ("b",)).passed
    assert result(("a",), ("b",)).as_dict()["missing"] == 1
    malformed_event = CheckResult("t", 2, 2, (), (), 0, 0, 0, 1, 0.1, malformed_events=1)
    assert not malformed_event.passed
