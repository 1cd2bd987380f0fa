"""Privacy of published events: numbers become stable keyed pseudonyms, content is left out."""

from __future__ import annotations

import hashlib
import hmac
import os
import subprocess
import sys

import orjson
import pytest

from common.env import SettingsError
from consumers.events.model import Event
from consumers.processor.enrich import enrich
from consumers.processor.identity import Identity, digest
from consumers.processor.latency import LatencyJoin
from consumers.processor.parse import parse
from consumers.processor.pipeline import Emit, PartitionPipeline
from consumers.processor.privacy import PSEUDONYM_PREFIX, Privacy, is_sender_id
from consumers.processor.rawmeta import RawMeta
from consumers.processor.window import DedupeWindow
from consumers.settings import ProcessorSettings
from devstack import DEVELOPMENT_PSEUDONYM_KEY
from testkit.samples import all_valid, load

KEY = DEVELOPMENT_PSEUDONYM_KEY.encode()
OTHER_KEY = b"another-key-of-at-least-thirty-two-characters"
META = RawMeta("postbacks.raw", 0, 17, 1_709_648_570_000, "mt", "application/json")
PRIVATE = Privacy(KEY, include_content=False)


def event_of(body: bytes, privacy: Privacy | None = PRIVATE) -> Event:
    notification = parse(body)
    event = enrich(notification, META, digest(notification))
    if privacy is not None:
        privacy.apply(event)
    return event


def settings(**environ: str) -> ProcessorSettings:
    return ProcessorSettings.from_environ({"KAFKA_BOOTSTRAP_SERVERS": "k:9092", **environ})


def test_numbers_become_pseudonyms_and_their_facts_stay() -> None:
    """Analysts keep region, calling code and number type; the number itself is not published."""
    event = event_of(load("v2/sms_mt_n202"))

    assert event["to"] == PRIVATE.pseudonym("14155550123")
    assert event["to"].startswith(PSEUDONYM_PREFIX)
    assert (event["to_region"], event["to_calling_code"]) == ("US", 1)
    assert event["to_number_type"] == "fixed_line_or_mobile"
    assert event["numbers_pseudonymised"] is True


def test_a_pseudonym_is_the_documented_hmac_of_the_digits() -> None:
    """A customer holding the key can compute a known number's pseudonym and join on it."""
    expected = hmac.new(KEY, b"14155550123", hashlib.sha256).hexdigest()[:32]

    assert PRIVATE.pseudonym("14155550123") == "pn1:" + expected
    assert PRIVATE.pseudonym("+1 (415) 555-0123") == "pn1:" + expected
    assert PRIVATE.pseudonym("0014155550123") == "pn1:" + expected


def test_pseudonyms_are_stable_per_key_and_differ_between_keys() -> None:
    """Two processors with one key agree (joins and counts work); another key gives others."""
    first = Privacy(KEY, include_content=False)
    second = Privacy(KEY, include_content=True)
    other = Privacy(OTHER_KEY, include_content=False)

    assert first.pseudonym("447700900123") == second.pseudonym("447700900123")
    assert first.pseudonym("447700900123") != other.pseudonym("447700900123")
    assert first.pseudonym("447700900123") != first.pseudonym("447700900124")


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("60856", True),  # a US short code
        ("123456", True),
        ("ACMEALERTS", True),  # an alphanumeric sender id
        ("ACME 2024", True),
        ("14155550123", False),
        ("4477009", False),  # seven digits can be a number
        ("ACME4155550", False),  # a sender id with a number in it
        ("promo-code-60856", False),  # too long for a sender id
    ],
)
def test_short_codes_and_sender_ids_stay_as_given(value: str, kept: bool) -> None:
    """The sending business's short code or sender id is published; anything numberlike is not."""
    assert is_sender_id(value) is kept
    assert (PRIVATE.published(value) == value) is kept


def test_inbound_message_hides_sender_copies_and_content_but_keeps_the_keyword() -> None:
    """An MMS MO keeps the short code it went to and its keyword; no number, subject or URL."""
    event = event_of(load("v2/mms_mo_n401_sinch"))

    assert event["from"] == PRIVATE.pseudonym("17745550001")
    assert event["from_region"] == "US"
    assert event["to"] == PRIVATE.pseudonym("18885551234")  # a number, even the business's own
    assert event["copy_to"] == [PRIVATE.pseudonym("17745550002"), PRIVATE.pseudonym("17745550003")]
    assert event["keyword"] == "INFO"
    assert event["message_subject"] is None
    assert event["content_files"] == []
    assert event["content_withheld"] is True


def test_sms_text_is_withheld_unless_enabled() -> None:
    """Message text reaches the events only when the deployment turned content on."""
    body = load("v1/sms_mo_n211")

    assert event_of(body)["message_text"] is None
    with_content = event_of(body, Privacy(KEY, include_content=True))
    assert with_content["message_text"] == "STOP"
    assert with_content["content_withheld"] is False
    assert with_content["from"] == PRIVATE.pseudonym("447700900123")


def test_subscriber_fields_in_extra_become_pseudonyms() -> None:
    """A subscription's MOBILE and a pass's REFERENCEVALUE identify a person: pseudonymised."""
    subscription = event_of(load("v1/sub_n301"))
    generated_pass = event_of(load("v1/generate_pass_n801"))

    assert subscription["extra"]["mobile"] == PRIVATE.pseudonym("14155550123")
    assert subscription["extra"]["campaign-id"] == "1478"
    assert generated_pass["extra"]["reference-value"] == PRIVATE.pseudonym("pat@example.com")
    assert generated_pass["extra"]["referenced-by"] == "Email"


def test_wrongly_shaped_numbers_and_content_kept_in_extra_are_protected_too() -> None:
    """A number or text the schema had no place for (a list where text belongs) cannot leak."""
    body = orjson.dumps(
        {
            "origin": "SMS_MO",
            "code": "N211",
            "from": ["447700900123"],
            "to": {"number": 14155550123},
            "message-text": ["call me on 447700900123"],
            "content": "https://media.example.net/x.jpg",
            "mobile": 447700900999,
        }
    )
    event = event_of(body)
    published = orjson.dumps(event)

    assert b"447700900" not in published
    assert b"4155550123" not in published
    assert b"call me" not in published
    assert b"media.example.net" not in published
    assert event["extra"]["from"] == [PRIVATE.pseudonym("447700900123")]
    assert event["extra"]["to"] == {"number": PRIVATE.pseudonym("14155550123")}


def test_without_privacy_the_event_is_as_given_and_says_so() -> None:
    """Turned off explicitly, numbers and content are published as the provider sent them."""
    event = event_of(load("v2/mms_mo_n401_sinch"), Privacy(None, include_content=True))

    assert event["from"] == "17745550001"
    assert event["content_files"] == [
        "https://media.example.net/mo-content/file1.jpg",
        "https://media.example.net/mo-content/file2.txt",
    ]
    assert (event["numbers_pseudonymised"], event["content_withheld"]) == (False, False)


@pytest.mark.parametrize(("kind", "body"), all_valid(), ids=[kind for kind, _ in all_valid()])
def test_no_sample_number_or_text_survives_privacy(kind: str, body: bytes) -> None:
    """Whatever the sample, its phone numbers and message text are absent from the event."""
    plain = event_of(body, None)
    private = orjson.dumps(event_of(body))
    secrets = [
        value
        for value in (plain["from"], plain["to"], *plain["copy_to"], plain["message_text"])
        if value and not is_sender_id(value)
    ]
    secrets += plain["content_files"]

    for secret in secrets:
        assert secret.encode() not in private, (kind, secret)


def test_settings_require_the_key_unless_privacy_is_turned_off() -> None:
    """Private by default: no key is a start-up error naming the variable and the way out."""
    with pytest.raises(SettingsError, match="EVENTS_PSEUDONYM_KEY") as missing:
        settings()
    assert "EVENTS_PSEUDONYMISE_NUMBERS=false" in str(missing.value)
    with pytest.raises(SettingsError, match="at least 32"):
        settings(EVENTS_PSEUDONYM_KEY="short")

    verbatim = settings(EVENTS_PSEUDONYMISE_NUMBERS="false")
    private = settings(EVENTS_PSEUDONYM_KEY=DEVELOPMENT_PSEUDONYM_KEY)
    assert Privacy.from_settings(verbatim).published("14155550123") == "14155550123"
    assert Privacy.from_settings(private).published("14155550123") == PRIVATE.pseudonym(
        "14155550123"
    )
    assert private.include_content is False
    assert DEVELOPMENT_PSEUDONYM_KEY not in repr(private)


def test_content_is_included_only_when_asked() -> None:
    """EVENTS_INCLUDE_CONTENT=true keeps message content; the default leaves it out."""
    included = settings(EVENTS_PSEUDONYM_KEY=DEVELOPMENT_PSEUDONYM_KEY, EVENTS_INCLUDE_CONTENT="1")
    event = event_of(load("v1/sms_mo_n211"), Privacy.from_settings(included))

    assert event["message_text"] == "STOP"


def published_to(key: str, body: bytes) -> object:
    """`to` as a processor built from settings with `key` publishes it (a fresh instance)."""
    instance = settings(EVENTS_PSEUDONYM_KEY=key)
    pipeline = PartitionPipeline(
        "postbacks.raw",
        3,
        identity=Identity(),
        window=DedupeWindow(),
        latency=LatencyJoin(instance.latency_max_age_ms),
        privacy=Privacy.from_settings(instance),
    )
    outcome = pipeline.process(body, 0, [], 1_709_648_570_000)
    assert isinstance(outcome, Emit)
    return orjson.loads(outcome.value)["to"]


def test_two_processor_instances_with_one_key_publish_the_same_pseudonym() -> None:
    """Pseudonyms survive restarts and rebalances: any instance with the deployment's key agrees,
    and an instance with another key does not."""
    body = load("v2/sms_mt_n202")
    first = published_to(DEVELOPMENT_PSEUDONYM_KEY, body)

    assert first == published_to(DEVELOPMENT_PSEUDONYM_KEY, body)
    assert first == PRIVATE.pseudonym("14155550123")
    assert first != published_to(OTHER_KEY.decode(), body)


def test_the_processor_without_a_key_stops_at_start_up_naming_the_variable() -> None:
    """An operator who forgot the key gets one line naming it and exit status 2, before any
    event could be published with numbers in it."""
    environ = {key: value for key, value in os.environ.items() if not key.startswith("EVENTS_")} | {
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"
    }
    done = subprocess.run(
        [sys.executable, "-m", "consumers.processor"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 2
    assert "EVENTS_PSEUDONYM_KEY: required" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
