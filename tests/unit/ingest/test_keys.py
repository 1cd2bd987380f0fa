"""Partition keys: the tracking id when the body has one, a stable hash otherwise, never a crash."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from ingest.keys import MAX_KEY_BYTES, body_hash_key, partition_key, tracking_id

# Tracking ids as the provider writes them: base64-ish, with '=', '_' and '-'.
tracking_ids = st.text(
    alphabet=st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789=_-"),
    min_size=1,
    max_size=64,
)
json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=20)
other_fields = st.dictionaries(
    st.text(max_size=12).filter(lambda name: name not in ("tracking-id", "trackingid")),
    json_scalars,
    max_size=8,
)


@given(tracking_ids, other_fields, st.sampled_from(["tracking-id", "trackingid"]))
def test_json_postbacks_are_keyed_by_their_tracking_id(
    value: str, fields: dict[str, object], name: str
) -> None:
    """Any v2 JSON body with a tracking id is keyed by it, whatever else it carries."""
    body = json.dumps({**fields, name: value}).encode()
    assert partition_key(body) == value.encode()


@given(tracking_ids, st.sampled_from(["TRACKINGID", "TRANSACTIONID", "tracking-id"]))
def test_xml_postbacks_are_keyed_by_their_tracking_or_transaction_id(value: str, node: str) -> None:
    """v1 XML (and Sinch's dialect) bodies are keyed by TRACKINGID, TRANSACTIONID or tracking-id."""
    body = (
        f"<?xml version='1.0'?><POSTBACK><ORIGIN>SMS_MT</ORIGIN><CODE>N202</CODE>"
        f"<{node}>{value}</{node}><TO>14155550123</TO></POSTBACK>"
    ).encode()
    assert partition_key(body) == value.encode()


@given(st.binary(max_size=2048))
def test_any_bytes_get_a_stable_non_empty_key(body: bytes) -> None:
    """Malformed bodies are still keyed: identical bytes (a retry) always get the same key."""
    key = partition_key(body)
    assert key == partition_key(bytes(body))
    assert 0 < len(key) <= max(MAX_KEY_BYTES, 32)


def test_bodies_without_a_usable_id_fall_back_to_the_body_hash() -> None:
    """No id, an empty id, a non-string id or an absurdly long one: the body's hash is the key."""
    for body in (
        b'{"origin":"SMS_MT"}',
        b'{"tracking-id":""}',
        b'{"tracking-id":["x"]}',
        b'{"tracking-id":true}',
        b'{"tracking-id":"' + b"x" * (MAX_KEY_BYTES + 1) + b'"}',
        b"[1,2,3]",
        b'{"tracking-id":"truncat',
        b"<POSTBACK><TRACKINGID></TRACKINGID></POSTBACK>",
        b"",
    ):
        assert tracking_id(body) is None, body
        assert partition_key(body) == body_hash_key(body)


def test_numeric_ids_and_padding_are_normalised_the_same_way_in_both_formats() -> None:
    """An id written as a JSON number or padded in XML keys like its plain text."""
    assert tracking_id(b'{"tracking-id": 12345}') == b"12345"
    assert tracking_id(b"<POSTBACK><TRACKINGID> 12345 </TRACKINGID></POSTBACK>") == b"12345"


def test_different_bodies_without_ids_spread_over_keys() -> None:
    """The fallback is a real hash: distinct bodies get distinct keys."""
    keys = {partition_key(f"garbage {n}".encode()) for n in range(1000)}
    assert len(keys) == 1000
