"""The processor's settings: one frozen object, built once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from common.env import Env, Secret, SettingsError
from common.kafka import KafkaSettings
from common.topics import TopicSettings

HOUR_MS = 60 * 60 * 1000
# An HMAC key shorter than its hash's output (32 bytes for SHA-256) weakens it (RFC 2104 §3).
PSEUDONYM_KEY_MIN_CHARS = 32


@dataclass(frozen=True, slots=True)
class ProcessorSettings:
    kafka: KafkaSettings
    topics: TopicSettings
    group_id: str = "postback-processor"
    # Transactional ids are `<prefix>.<raw topic>.<partition>`: one per input partition, so a
    # new owner of a partition fences whoever held it before (see consumers/runtime.py).
    transactional_id_prefix: str = "postback-processor"
    commit_interval_ms: int = 100
    commit_max_records: int = 5000
    dedupe_window_ms: int = 6 * HOUR_MS
    dedupe_max_keys: int = 2_000_000
    identity_fields: tuple[str, ...] = ()
    latency_max_age_ms: int = 6 * HOUR_MS
    # How soon the group notices a dead instance and moves its partitions.
    session_timeout_ms: int = 10_000
    host: str = "127.0.0.1"
    port: int = 9101
    log_level: str = "INFO"
    # Privacy of postbacks.events (docs/events.md, "Privacy"): subscriber numbers become keyed
    # pseudonyms unless turned off, and message content is left out unless turned on.
    pseudonymise_numbers: bool = True
    pseudonym_key: Secret | None = None
    include_content: bool = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ProcessorSettings:
        env = Env(environ)
        return cls(
            kafka=KafkaSettings.from_environ(environ),
            topics=TopicSettings.from_environ(environ),
            group_id=env.text("PROCESSOR_GROUP_ID", "postback-processor"),
            transactional_id_prefix=env.text(
                "PROCESSOR_TRANSACTIONAL_ID_PREFIX", "postback-processor"
            ),
            commit_interval_ms=env.integer("PROCESSOR_COMMIT_INTERVAL_MS", 100, minimum=1),
            commit_max_records=env.integer("PROCESSOR_COMMIT_MAX_RECORDS", 5000, minimum=1),
            dedupe_window_ms=env.integer("DEDUPE_WINDOW_SECONDS", 6 * 3600, minimum=1801) * 1000,
            dedupe_max_keys=env.integer("DEDUPE_MAX_KEYS", 2_000_000, minimum=1),
            identity_fields=env.items("DEDUPE_IDENTITY_FIELDS"),
            latency_max_age_ms=env.integer("LATENCY_MAX_AGE_SECONDS", 6 * 3600, minimum=1) * 1000,
            session_timeout_ms=env.integer("PROCESSOR_SESSION_TIMEOUT_MS", 10_000, minimum=1000),
            host=env.text("PROCESSOR_HOST", "127.0.0.1"),
            port=env.integer("PROCESSOR_PORT", 9101, minimum=0),
            log_level=env.choice(
                "LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
            ),
            pseudonymise_numbers=env.flag("EVENTS_PSEUDONYMISE_NUMBERS", True),
            pseudonym_key=_pseudonym_key(env),
            include_content=env.flag("EVENTS_INCLUDE_CONTENT", False),
        )


def _pseudonym_key(env: Env) -> Secret | None:
    """The pseudonym key; required while numbers are pseudonymised, so privacy is the default
    and publishing numbers verbatim takes an explicit EVENTS_PSEUDONYMISE_NUMBERS=false."""
    key = env.secret("EVENTS_PSEUDONYM_KEY")
    if not env.flag("EVENTS_PSEUDONYMISE_NUMBERS", True):
        return key
    if key is None:
        raise SettingsError(
            "EVENTS_PSEUDONYM_KEY: required, the secret that turns subscriber numbers into "
            "pseudonyms on postbacks.events (or set EVENTS_PSEUDONYMISE_NUMBERS=false to "
            "publish them verbatim)"
        )
    if len(key.reveal()) < PSEUDONYM_KEY_MIN_CHARS:
        raise SettingsError(
            f"EVENTS_PSEUDONYM_KEY: must be at least {PSEUDONYM_KEY_MIN_CHARS} characters "
            "(e.g. `openssl rand -hex 32`)"
        )
    return key
