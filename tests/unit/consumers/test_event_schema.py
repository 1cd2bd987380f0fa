"""The JSON Schema is the truth: real events validate, and code, schema and docs agree."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from consumers.events.cloudevents import headers
from consumers.events.model import (
    INPUT_FORMATS,
    NUMBER_TYPES,
    SCHEMA_ID,
    SCHEMA_VERSION,
    STATUSES,
    Event,
    load_schema,
    schema_resource,
)
from consumers.processor.enrich import enrich
from consumers.processor.identity import digest
from consumers.processor.parse import parse
from consumers.processor.privacy import Privacy
from consumers.processor.rawmeta import RawMeta
from devstack import DEVELOPMENT_PSEUDONYM_KEY
from testkit.samples import all_valid, load

DOCS = Path(__file__).resolve().parents[3] / "docs" / "events.md"
SCHEMA: dict[str, Any] = load_schema()
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
META = RawMeta("postbacks.raw", 0, 17, 1_709_648_570_000, "skycore", "text/xml")
KEY = DEVELOPMENT_PSEUDONYM_KEY.encode()
# What a deployment may publish: the default, content turned on, and privacy turned off.
MODES = {
    "private": Privacy(KEY, include_content=False),
    "pseudonyms_with_content": Privacy(KEY, include_content=True),
    "as_given": Privacy(None, include_content=True),
}


def event_of(body: bytes, meta: RawMeta = META, mode: str = "private") -> Event:
    notification = parse(body)
    event = enrich(notification, meta, digest(notification))
    MODES[mode].apply(event)
    return event


def test_schema_is_valid_draft_2020_12() -> None:
    """The schema file itself is a well-formed draft 2020-12 schema."""
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_schema_file_ships_with_the_package() -> None:
    """The schema is found through the package, where the runtime and tools will look."""
    assert schema_resource().is_file()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("kind", "body"), all_valid(), ids=[kind for kind, _ in all_valid()])
def test_every_sample_event_validates(kind: str, body: bytes, mode: str) -> None:
    """Every event made from a real sample matches the published schema, in every privacy mode."""
    VALIDATOR.validate(event_of(body, mode=mode))


@pytest.mark.parametrize(
    ("field", "value", "flag"),
    [
        ("to", "14155550123", "numbers_pseudonymised"),
        ("from", "447700900123", "numbers_pseudonymised"),
        ("copy_to", ["17745550002"], "numbers_pseudonymised"),
        ("message_text", "STOP", "content_withheld"),
        ("message_subject", "", "content_withheld"),
        ("content_files", ["https://x/1.jpg"], "content_withheld"),
    ],
)
def test_schema_rejects_what_the_privacy_flags_rule_out(
    field: str, value: object, flag: str
) -> None:
    """A consumer validating events can tell a leaked number or text from a private event; the
    same value is valid where the event says numbers or content are published."""
    event: dict[str, Any] = dict(event_of(load("v2/mms_mo_n401_sinch")))
    event[field] = value
    with pytest.raises(jsonschema.ValidationError):
        VALIDATOR.validate(event)
    event[flag] = False
    VALIDATOR.validate(event)


def test_events_without_edge_facts_validate() -> None:
    """Nulls where the edge gave no headers are allowed by the schema."""
    VALIDATOR.validate(event_of(load("v1/sub_n301"), RawMeta("postbacks.raw", 0, 0)))


def test_schema_rejects_unknown_top_level_fields() -> None:
    """New facts belong in `extra` or in a schema change, never slipped in at the top level."""
    event: dict[str, Any] = dict(event_of(load("v2/sms_mt_n202")))
    event["surprise"] = 1
    with pytest.raises(jsonschema.ValidationError):
        VALIDATOR.validate(event)


def test_schema_rejects_a_missing_field() -> None:
    """Every field is always present (null when unknown), so tables get stable columns."""
    event: dict[str, Any] = dict(event_of(load("v2/sms_mt_n202")))
    del event["tracking_id"]
    with pytest.raises(jsonschema.ValidationError):
        VALIDATOR.validate(event)


def test_schema_rejects_a_non_utc_timestamp() -> None:
    """Timestamps are published in one UTC form only."""
    event = event_of(load("v2/sms_mt_n202"))
    event["provider_timestamp"] = "2024-03-05T09:22:47-05:00"
    with pytest.raises(jsonschema.ValidationError):
        VALIDATOR.validate(event)


def test_schema_fields_match_the_typed_event() -> None:
    """The TypedDict and the schema list the same fields, all required."""
    properties = SCHEMA["properties"]
    assert set(properties) == set(Event.__annotations__)
    assert set(SCHEMA["required"]) == set(properties)
    assert SCHEMA["additionalProperties"] is False


def test_schema_enums_match_the_code() -> None:
    """Statuses, number types, input formats and the version agree between schema and code."""
    assert SCHEMA["$defs"]["status"]["enum"] == list(STATUSES)
    assert SCHEMA["$defs"]["number_type"]["enum"] == list(NUMBER_TYPES)
    assert SCHEMA["properties"]["input_format"]["enum"] == list(INPUT_FORMATS)
    assert SCHEMA["properties"]["schema_version"]["const"] == SCHEMA_VERSION
    assert SCHEMA["$id"] == SCHEMA_ID


def test_docs_describe_every_field_and_status() -> None:
    """docs/events.md documents every event field and every status value analysts will see."""
    documented = set(re.findall(r"^\| `([a-z_.]+)`", DOCS.read_text(encoding="utf-8"), re.M))
    missing_fields = set(SCHEMA["properties"]) - documented
    missing_statuses = set(STATUSES) - documented
    assert not missing_fields, missing_fields
    assert not missing_statuses, missing_statuses


def test_docs_example_is_real_output() -> None:
    """The example in docs/events.md is exactly what `make run` publishes for its example body,
    headers included."""
    text = DOCS.read_text(encoding="utf-8")
    blocks = re.findall(r"```json\n(.*?)```", text, re.S)
    body, documented = blocks[0].strip().encode(), json.loads(blocks[1])
    (header_block,) = re.findall(r"```text\n(ce_specversion.*?)```", text, re.S)
    lineage = documented["lineage"]
    meta = RawMeta(
        lineage["topic"],
        lineage["partition"],
        lineage["offset"],
        received_at_ms=1_709_648_570_000,  # 2024-03-05T14:22:50Z, as the example says
        source=documented["source"],
    )
    assert body == load("v2/sms_mt_n202")
    event = event_of(body, meta)
    assert event == documented
    assert [line.split(": ", 1) for line in header_block.strip().splitlines()] == [
        [name, value.decode()] for name, value in headers(event)
    ]


def test_events_annotated_by_the_latency_join_validate() -> None:
    """The processor's latency join fills two fields; what it writes is still a valid event."""
    event: dict[str, Any] = dict(event_of(load("v2/mms_mt_n102")))
    assert event["delivery_latency_ms"] is None
    assert event["delivery_latency_final_first"] is None
    event["delivery_latency_ms"] = 31_491
    event["delivery_latency_final_first"] = False
    VALIDATOR.validate(event)
    event["delivery_latency_ms"] = "31s"
    with pytest.raises(jsonschema.ValidationError):
        VALIDATOR.validate(event)
