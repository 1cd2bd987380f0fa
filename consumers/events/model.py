"""The event's version, vocabulary and typed shape; consumers/events/schema.json is the truth.

This module imports nothing from the processor: the processor produces events of this shape,
and the tests hold the TypedDict, the enums below and the JSON Schema file to one another.
Versioning: adding a field keeps SCHEMA_VERSION; removing, renaming or retyping a field, or
changing what a value means, bumps it (docs/events.md).
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Final, Literal, TypedDict, get_args

import orjson

SCHEMA_VERSION: Final = 2
# The JSON Schema's `$id`, and the events' CloudEvents `dataschema`.
SCHEMA_ID: Final = f"urn:postback-pipeline:event:{SCHEMA_VERSION}"

Status = Literal[
    "sent",
    "delivered",
    "expired",
    "failed",
    "rejected",
    "received",
    "transcoded",
    "transcoding_failed",
    "content_invalid",
    "queue_error",
    "subscribed",
    "unsubscribed",
    "pass_generated",
    "unknown",
]
STATUSES: Final[tuple[Status, ...]] = get_args(Status)

InputFormat = Literal["json_v2", "xml_v1", "xml_sinch"]
INPUT_FORMATS: Final[tuple[InputFormat, ...]] = get_args(InputFormat)

# phonenumbers' types in snake case, plus what a sender can be that is not a phone number.
NumberType = Literal[
    "mobile",
    "fixed_line",
    "fixed_line_or_mobile",
    "toll_free",
    "premium_rate",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
    "short_code",
    "alphanumeric",
    "unknown",
]
NUMBER_TYPES: Final[tuple[NumberType, ...]] = get_args(NumberType)


class Lineage(TypedDict):
    """Where the raw postback sits in Kafka, so any event can be traced back and replayed."""

    topic: str
    partition: int
    offset: int


# Functional form because "from" is a Python keyword. Every key is always present; absent
# facts are None, so analytics tables get stable columns.
Event = TypedDict(
    "Event",
    {
        "schema_version": int,
        "event_id": str,
        "origin": str,
        "code": str,
        "code_description": str | None,
        "status": Status,
        "status_text": str | None,
        "status_details": str | None,
        "is_final": bool | None,
        "is_error": bool | None,
        "sent_as": str | None,
        "tracking_id": str | None,
        "client_reference": str | None,
        "campaign_ref": str | None,
        "mms_id": str | None,
        "from": str | None,
        "from_region": str | None,
        "from_calling_code": int | None,
        "from_number_type": NumberType | None,
        "to": str | None,
        "to_region": str | None,
        "to_calling_code": int | None,
        "to_number_type": NumberType | None,
        "from_mask": str | None,
        "operator_id": str | None,
        "operator_name": str | None,
        "message_text": str | None,
        "message_subject": str | None,
        "keyword": str | None,
        "content_files": list[str],
        "copy_to": list[str],
        "provider_timestamp": str | None,
        "provider_timestamp_raw": str | None,
        "received_at": str | None,
        "postback_lag_ms": int | None,
        "delivery_latency_ms": int | None,
        "delivery_latency_final_first": bool | None,
        "source": str | None,
        "input_format": InputFormat,
        "lineage": Lineage,
        "extra": dict[str, object],
        "numbers_pseudonymised": bool,
        "content_withheld": bool,
    },
)


def schema_resource() -> Traversable:
    """The JSON Schema file, found through the package so it works from a wheel too."""
    return files("consumers.events").joinpath("schema.json")


def load_schema() -> dict[str, object]:
    """The JSON Schema for SCHEMA_VERSION, parsed; read it once at start-up, not per event."""
    schema: dict[str, object] = orjson.loads(schema_resource().read_bytes())
    return schema
