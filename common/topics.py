"""The pipeline's three topics, and the start-up check that they exist.

`postbacks.raw` is the archive and the replay source, so it keeps a week by default;
events and dead letters are derived and kept as long. Services call `ensure_topics` at start:
it creates what is missing when allowed (idempotently: a concurrent creator is not an error)
and otherwise fails with the names and the variable to change, rather than letting a producer
wait on metadata for a topic that will never appear.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from common.env import Settings, Variable, flag, integer, section, setting, text
from common.kafka import KafkaSettings

log = logging.getLogger(__name__)

DAY_MS = 24 * 60 * 60 * 1000


class TopicsMissing(RuntimeError):
    """Topics are absent and this service may not create them."""


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    retention_ms: int

    def new_topic(self) -> NewTopic:
        return NewTopic(
            self.name,
            self.partitions,
            self.replication_factor,
            topic_configs={"retention.ms": str(self.retention_ms)},
        )


PARTITIONS = Variable("KAFKA_TOPIC_PARTITIONS", integer(minimum=1), 6)
REPLICATION_FACTOR = Variable("KAFKA_TOPIC_REPLICATION_FACTOR", integer(minimum=1), 3)


def topic(kind: str, name: str, *, retention_days: int) -> Callable[[Mapping[str, str]], TopicSpec]:
    """How one topic's spec is read: KAFKA_TOPIC_<KIND>, ..._PARTITIONS, ..._RETENTION_MS.

    A topic's partitions default to KAFKA_TOPIC_PARTITIONS; all share one replication factor.
    """
    upper = kind.upper()
    topic_name = Variable(f"KAFKA_TOPIC_{upper}", text, name)
    retention_ms = Variable(
        f"KAFKA_TOPIC_{upper}_RETENTION_MS", integer(minimum=-1), retention_days * DAY_MS
    )

    def read(environ: Mapping[str, str]) -> TopicSpec:
        partitions = Variable(
            f"KAFKA_TOPIC_{upper}_PARTITIONS", integer(minimum=1), PARTITIONS.read(environ)
        )
        return TopicSpec(
            name=topic_name.read(environ),
            partitions=partitions.read(environ),
            replication_factor=REPLICATION_FACTOR.read(environ),
            retention_ms=retention_ms.read(environ),
        )

    return read


@dataclass(frozen=True, slots=True)
class TopicSettings(Settings):
    raw: TopicSpec = section(topic("raw", "postbacks.raw", retention_days=7))
    events: TopicSpec = section(topic("events", "postbacks.events", retention_days=7))
    dlq: TopicSpec = section(topic("dlq", "postbacks.dlq", retention_days=30))
    create_missing: bool = setting("KAFKA_CREATE_TOPICS", flag, True)

    def all(self) -> tuple[TopicSpec, ...]:
        return (self.raw, self.events, self.dlq)


async def ensure_topics(
    kafka: KafkaSettings, specs: Iterable[TopicSpec], *, create_missing: bool
) -> None:
    """Make sure every topic in `specs` exists, creating the missing ones if allowed."""
    wanted = {spec.name: spec for spec in specs}
    admin = AIOKafkaAdminClient(**kafka.client_options(), client_id="postback-pipeline-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [spec for name, spec in wanted.items() if name not in existing]
        if not missing:
            return
        names = ", ".join(spec.name for spec in missing)
        if not create_missing:
            raise TopicsMissing(
                f"Kafka topics missing: {names}. Create them, or set KAFKA_CREATE_TOPICS=true "
                "to let the service create them."
            )
        response = await admin.create_topics([spec.new_topic() for spec in missing])
        for topic_error in response.topic_errors:
            name, code = topic_error[0], topic_error[1]
            error = for_code(code)
            if code != 0 and error is not TopicAlreadyExistsError:
                detail = topic_error[2] if len(topic_error) > 2 else ""
                raise TopicsMissing(
                    f"could not create Kafka topic {name}: {error.__name__} {detail}"
                )
        log.info("created Kafka topics", extra={"fields": {"topics": names}})
        await _until_led(admin, [spec.name for spec in missing])
    finally:
        await admin.close()


async def _until_led(admin: AIOKafkaAdminClient, names: list[str], within_s: float = 15) -> None:
    """Wait until every partition of fresh topics has a leader.

    A consumer that subscribes before that can see a topic without partitions and sit idle
    until its next metadata refresh (minutes); a producer gets NotLeaderForPartition retries.
    """
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        described = await admin.describe_topics(names)
        if all(
            topic["error_code"] == 0
            and topic["partitions"]
            and all(partition["leader"] >= 0 for partition in topic["partitions"])
            for topic in described
        ):
            return
        await asyncio.sleep(0.05)
    log.warning(
        "new topics still have partitions without a leader", extra={"fields": {"topics": names}}
    )
