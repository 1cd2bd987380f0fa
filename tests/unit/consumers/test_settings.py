"""The processor's settings: the defaults a deployment relies on, and every refusal named.

Common behaviour (ports, log levels, empty variables, topics) is pinned for every service in
tests/unit/common/test_env.py; the pseudonym key's rules in test_privacy.py.
"""

from __future__ import annotations

import pytest

from common.env import SettingsError
from consumers.processor.identity import Identity
from consumers.processor.latency import DEFAULT_MAX_AGE_MS
from consumers.processor.pipeline import PartitionPipeline
from consumers.processor.window import DEFAULT_MAX_KEYS, DEFAULT_WINDOW_MS, PROVIDER_RETRY_SPAN_MS
from consumers.settings import ProcessorGroupSettings, ProcessorSettings

KEY = "k" * 32
MINIMAL = {"KAFKA_BOOTSTRAP_SERVERS": "kafka:9092", "EVENTS_PSEUDONYM_KEY": KEY}


def settings(**environ: str) -> ProcessorSettings:
    return ProcessorSettings.from_environ({**MINIMAL, **environ})


def test_the_defaults_are_the_documented_ones() -> None:
    """Without further variables the processor commits every 100 ms or 5,000 records, keeps six
    hours of dedupe and latency state, pseudonymises numbers, leaves content out, and listens
    on loopback only."""
    defaults = settings()
    assert (defaults.commit_interval_ms, defaults.commit_max_records) == (100, 5000)
    assert defaults.transaction_timeout_ms == 60_000
    assert defaults.session_timeout_ms == 10_000
    assert defaults.dedupe_window_ms == defaults.latency_max_age_ms == 6 * 3600 * 1000
    assert defaults.dedupe_max_keys == 4_000_000
    assert (defaults.pseudonymise_numbers, defaults.include_content) == (True, False)
    assert (defaults.host, defaults.port) == ("127.0.0.1", 9101)
    assert defaults.group_id == defaults.transactional_id_prefix == "postback-processor"
    assert defaults.state_topic == "postbacks.processor-state"
    assert defaults.identity_fields == ()


def test_the_defaults_are_those_of_the_state_structures() -> None:
    """A window or join built without settings (tools, benchmarks) behaves as a deployment."""
    defaults = settings()
    assert defaults.dedupe_window_ms == DEFAULT_WINDOW_MS
    assert defaults.dedupe_max_keys == DEFAULT_MAX_KEYS
    assert defaults.latency_max_age_ms == DEFAULT_MAX_AGE_MS


def test_the_dedupe_window_is_given_in_seconds_and_must_outlast_provider_retries() -> None:
    """DEDUPE_WINDOW_SECONDS is whole seconds; a window no longer than the provider's 30 minutes
    of retries is refused at start-up, naming the variable, rather than letting retries through."""
    assert settings(DEDUPE_WINDOW_SECONDS="7200").dedupe_window_ms == 7_200_000
    with pytest.raises(SettingsError, match=r"^DEDUPE_WINDOW_SECONDS: must be at least 1801"):
        settings(DEDUPE_WINDOW_SECONDS=str(PROVIDER_RETRY_SPAN_MS // 1000))


def test_the_shortest_window_the_settings_take_makes_a_working_pipeline() -> None:
    """Settings and the dedupe window agree on the shortest window: nothing the settings accept
    fails later, when a partition is assigned."""
    shortest = settings(DEDUPE_WINDOW_SECONDS=str(PROVIDER_RETRY_SPAN_MS // 1000 + 1))
    pipeline = PartitionPipeline.from_settings(shortest, "postbacks.raw", 0)
    assert pipeline.restore_span_ms > shortest.dedupe_window_ms


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PROCESSOR_COMMIT_INTERVAL_MS", "0", "must be at least 1"),
        ("PROCESSOR_COMMIT_MAX_RECORDS", "0", "must be at least 1"),
        ("PROCESSOR_TRANSACTION_TIMEOUT_MS", "999", "must be at least 1000"),
        ("PROCESSOR_SESSION_TIMEOUT_MS", "999", "must be at least 1000"),
        ("DEDUPE_MAX_KEYS", "0", "must be at least 1"),
        ("LATENCY_MAX_AGE_SECONDS", "0", "must be at least 1"),
        ("DEDUPE_MAX_KEYS", "many", "expected an integer"),
        ("EVENTS_INCLUDE_CONTENT", "maybe", "expected true or false"),
    ],
)
def test_a_bad_value_stops_start_up_naming_its_variable(
    variable: str, value: str, message: str
) -> None:
    """Each malformed or out-of-range variable is refused with its own name and the rule."""
    with pytest.raises(SettingsError, match=f"^{variable}: {message}"):
        settings(**{variable: value})


def test_identity_fields_are_a_comma_separated_list() -> None:
    """DEDUPE_IDENTITY_FIELDS lists v2 field names; blanks are ignored, and the pipeline's
    identity uses exactly those fields."""
    configured = settings(DEDUPE_IDENTITY_FIELDS="origin, tracking-id,,code ,status")
    assert configured.identity_fields == ("origin", "tracking-id", "code", "status")
    pipeline = PartitionPipeline.from_settings(configured, "postbacks.raw", 0)
    assert pipeline.identity == Identity(("origin", "tracking-id", "code", "status"))
    assert PartitionPipeline.from_settings(settings(), "raw", 0).identity == Identity(None)


def test_the_pseudonym_key_never_shows_in_the_settings_text() -> None:
    """Settings may be logged or printed in a traceback; the key is not in their text."""
    assert KEY not in repr(settings())
    assert KEY not in str(settings())


def test_a_reader_of_the_processors_work_needs_no_key() -> None:
    """Tools that read the processor's topics and group (trace) start without the secret."""
    group = ProcessorGroupSettings.from_environ(
        {"KAFKA_BOOTSTRAP_SERVERS": "kafka:9092", "PROCESSOR_GROUP_ID": "g"}
    )
    assert group.group_id == "g"
    with pytest.raises(SettingsError, match=r"^EVENTS_PSEUDONYM_KEY: required"):
        ProcessorSettings.from_environ({"KAFKA_BOOTSTRAP_SERVERS": "kafka:9092"})


def test_identity_fields_without_the_tracking_id_are_refused_naming_the_variable() -> None:
    """An identity blind to the tracking id could call two notifications one while the edge
    puts them in partitions that dedupe apart; the processor refuses it at start-up."""
    with pytest.raises(SettingsError, match=r"^DEDUPE_IDENTITY_FIELDS: must include tracking-id"):
        settings(DEDUPE_IDENTITY_FIELDS="origin,code,status")
    with pytest.raises(SettingsError, match=r"^DEDUPE_IDENTITY_FIELDS"):
        settings(DEDUPE_IDENTITY_FIELDS="trackingid,code")
