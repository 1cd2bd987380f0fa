"""The processor's settings: what it refuses to start with, and why."""

from __future__ import annotations

import pytest

from common.env import SettingsError
from consumers.settings import ProcessorSettings

MINIMAL = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092", "EVENTS_PSEUDONYMISE_NUMBERS": "false"}


def test_identity_fields_without_the_tracking_id_are_refused_naming_the_variable() -> None:
    """An identity blind to the tracking id could call two notifications one while the edge
    puts them in partitions that dedupe apart; the processor refuses it at start-up."""
    with pytest.raises(SettingsError, match=r"DEDUPE_IDENTITY_FIELDS: must include tracking-id"):
        ProcessorSettings.from_environ({**MINIMAL, "DEDUPE_IDENTITY_FIELDS": "origin,code,status"})
    with pytest.raises(SettingsError, match="DEDUPE_IDENTITY_FIELDS"):
        ProcessorSettings.from_environ({**MINIMAL, "DEDUPE_IDENTITY_FIELDS": "trackingid,code"})


def test_identity_fields_with_the_tracking_id_are_taken_in_order() -> None:
    """A field list naming tracking-id is accepted as written; unset means the whole body."""
    environ = {**MINIMAL, "DEDUPE_IDENTITY_FIELDS": "origin, tracking-id,code,status"}
    settings = ProcessorSettings.from_environ(environ)
    assert settings.identity_fields == ("origin", "tracking-id", "code", "status")
    assert ProcessorSettings.from_environ(MINIMAL).identity_fields == ()
