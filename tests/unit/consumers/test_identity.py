"""Dedupe identity: redeliveries of one notification share a digest, different ones never do."""

from __future__ import annotations

import hashlib
import json
import re

import orjson
import pytest

from consumers.processor.identity import (
    DIGEST_SIZE,
    Identity,
    canonical_bytes,
    digest,
    digest_raw,
    event_id,
)
from consumers.processor.parse import parse
from testkit.samples import all_valid, load

STATUS_FIELDS = ("origin", "tracking-id", "code", "status")


def test_json_canonical_form_is_sorted_compact_json() -> None:
    """For JSON the canonical form is the body parsed and re-serialised with sorted keys."""
    body = load("v2/mms_mo_n401_sinch")
    expected = orjson.dumps(orjson.loads(body), option=orjson.OPT_SORT_KEYS)
    assert canonical_bytes(parse(body)) == expected


def test_key_order_and_whitespace_do_not_change_the_digest() -> None:
    """A retry re-serialised with other spacing or key order is recognised as the same."""
    compact = load("v2/sms_mt_n202")
    document = orjson.loads(compact)
    reordered = orjson.dumps(dict(reversed(list(document.items()))), option=orjson.OPT_INDENT_2)
    assert reordered != compact
    assert digest(parse(reordered)) == digest(parse(compact))


def test_any_changed_value_changes_the_digest() -> None:
    """Two notifications that differ in any value are never merged by the default identity."""
    original = orjson.loads(load("v2/sms_mt_n202"))
    for key in original:
        changed = dict(original, **{key: original[key] + "x"})
        assert digest(parse(orjson.dumps(changed))) != digest(parse(orjson.dumps(original))), key


def test_distinct_samples_have_distinct_digests() -> None:
    """Across every sample, no two different notifications collide."""
    digests = {digest(parse(body)): kind for kind, body in all_valid()}
    assert len(digests) == len(all_valid())


def test_xml_formatting_does_not_change_the_digest() -> None:
    """Pretty-printed and compact v1 XML of one notification are the same notification."""
    compact = (
        b"<POSTBACK><ORIGIN>SMS_MO</ORIGIN><CODE>N211</CODE><FROM>447700900123</FROM>"
        b"<TO>60856</TO><TEXT>STOP</TEXT></POSTBACK>"
    )
    pretty = (
        b"<?xml version='1.0'?>\n<POSTBACK>\n  <ORIGIN>SMS_MO</ORIGIN>\n  <CODE>N211</CODE>\n"
        b"  <FROM>447700900123</FROM>\n  <TO>60856</TO>\n  <TEXT>STOP</TEXT>\n</POSTBACK>\n"
    )
    assert digest(parse(pretty)) == digest(parse(compact))


def test_xml_canonical_form_is_the_v2_field_mapping() -> None:
    """For XML the canonical form is the parsed mapping (v2 names) as sorted JSON."""
    notification = parse(load("v1/sms_mo_n211"))
    assert orjson.loads(canonical_bytes(notification)) == {
        "origin": "SMS_MO",
        "code": "N211",
        "from": "447700900123",
        "to": "60856",
        "message-text": "STOP",
        "timestamp": "2024-03-05T09:25:03-05:00",
        "tracking-id": "604KD-11833-720QP-915C2",
    }


def test_digest_and_event_id_shape() -> None:
    """The digest is 16 bytes and the event id its 32 lower-case hex characters."""
    value = digest(parse(load("v2/sms_mt_n202")))
    assert len(value) == DIGEST_SIZE == 16
    assert re.fullmatch(r"[0-9a-f]{32}", event_id(value))
    assert bytes.fromhex(event_id(value)) == value


def test_event_id_is_stable_across_releases() -> None:
    """Downstream upserts key on event_id, so the id of a given body must never drift.

    The id follows from the documented definition (BLAKE2b-128, personalised, over compact
    sorted JSON), recomputed here with the standard library alone. The value is also pinned:
    if it changes, every consumer upserting by event_id would see redeliveries as new events.
    Change it only with a schema version bump and a note in docs/events.md.
    """
    body = load("v2/sms_mt_n202")
    canonical = json.dumps(
        json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()
    independent = hashlib.blake2b(canonical, digest_size=16, person=b"pbp.canonical.1").hexdigest()
    assert event_id(digest(parse(body))) == independent == "4eaa5e6188069e71eddf63b3ab22ad12"


def test_raw_digest_is_domain_separated_from_the_canonical_one() -> None:
    """A dead letter's digest never equals an event's, even when the bytes are identical."""
    body = b'{"code":"N211","origin":"SMS_MO"}'
    notification = parse(body)
    assert canonical_bytes(notification) == body
    assert digest_raw(body) != digest(notification)
    assert len(digest_raw(body)) == DIGEST_SIZE


def test_raw_digest_is_exact_bytes() -> None:
    """Dead letters dedupe only on byte-identical bodies."""
    assert digest_raw(b"abc") == digest_raw(b"abc")
    assert digest_raw(b"abc") != digest_raw(b"abc ")
    assert digest_raw(b"") != digest_raw(b"\x00")


def test_default_identity_object_matches_module_functions() -> None:
    """Identity() configured with no fields is the canonical identity."""
    notification = parse(load("v1/mms_mt_n102"))
    for identity in (Identity(), Identity.from_fields(None), Identity.from_fields(())):
        assert identity.fields is None
        assert identity.digest(notification) == digest(notification)
        assert identity.canonical_bytes(notification) == canonical_bytes(notification)


def test_field_identity_ignores_other_fields() -> None:
    """With a field list, a re-rendered retry (new timestamp) is still a duplicate."""
    first = orjson.loads(load("v2/mms_mt_n102"))
    retry = dict(first, timestamp="2024-03-05T14:28:12.000001+00:00")
    identity = Identity.from_fields(STATUS_FIELDS)
    assert identity.digest(parse(orjson.dumps(retry))) == identity.digest(
        parse(orjson.dumps(first))
    )
    assert digest(parse(orjson.dumps(retry))) != digest(parse(orjson.dumps(first)))


def test_field_identity_still_separates_listed_fields() -> None:
    """A different code for the same tracking id is a different notification."""
    identity = Identity.from_fields(STATUS_FIELDS)
    n101 = parse(load("v2/mms_mt_n101"))
    n102 = parse(load("v2/mms_mt_n102"))
    assert n101.fields["tracking-id"] == n102.fields["tracking-id"]
    assert identity.digest(n101) != identity.digest(n102)


def test_field_identity_falls_back_when_a_field_is_missing() -> None:
    """Two transcoding results without tracking ids are not merged into one."""
    identity = Identity.from_fields(STATUS_FIELDS)
    first = parse(b'{"origin":"MMS_MT","code":"N003","mms-id":"35890"}')
    second = parse(b'{"origin":"MMS_MT","code":"N003","mms-id":"35891"}')
    assert identity.digest(first) != identity.digest(second)
    assert identity.digest(first) == digest(first)


def test_field_identity_is_separated_from_canonical() -> None:
    """A field-list digest cannot collide with a canonical one for the same bytes."""
    identity = Identity.from_fields(("origin", "code"))
    notification = parse(b'{"origin":"SMS_MO","code":"N211"}')
    assert identity.digest(notification) != digest(notification)
    assert identity.canonical_bytes(notification) == b'["SMS_MO","N211"]'


@pytest.mark.parametrize("fields", [("origin", ""), ("origin", "  "), ("code", "code")])
def test_field_identity_rejects_bad_configuration(fields: tuple[str, ...]) -> None:
    """A blank or repeated field name is a configuration error caught at start-up."""
    with pytest.raises(ValueError, match="identity field names"):
        Identity.from_fields(fields)


def test_field_list_from_an_environment_string() -> None:
    """A comma-separated setting is a field list, not a list of characters."""
    assert Identity.from_fields(" origin, tracking-id ,code,status ").fields == STATUS_FIELDS
    assert Identity.from_fields("").fields is None
