"""The pipeline's three topics, and the start-up check that they exist.

`postbacks.raw` is the archive and the replay source, so it keeps a week by default;
events and dead letters are derived and kept as long.

Durability is a topic's own setting. An acks=all write is acknowledged once every replica in
sync has it, and with `min.insync.replicas=1` (the broker default) that can be the leader alone:
lose that broker and an acknowledged postback is gone. So topics created here get
`min.insync.replicas=2` when they have three replicas or more (`KAFKA_TOPIC_MIN_INSYNC_REPLICAS`),
and `ensure_topics` warns at start-up about an existing topic that would acknowledge a write
held by one broker only on a cluster that has several. Services call `ensure_topics` at start:
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
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError, for_code

from common.env import Settings, SettingsError, Variable, flag, integer, section, setting, text
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
    min_insync_replicas: int = 1
    configs: tuple[tuple[str, str], ...] = ()  # any other topic configs, as Kafka names them

    def new_topic(self) -> NewTopic:
        return NewTopic(
            self.name,
            self.partitions,
            self.replication_factor,
            topic_configs={
                "retention.ms": str(self.retention_ms),
                "min.insync.replicas": str(self.min_insync_replicas),
                **dict(self.configs),
            },
        )


PARTITIONS = Variable("KAFKA_TOPIC_PARTITIONS", integer(minimum=1), 6)
REPLICATION_FACTOR = Variable("KAFKA_TOPIC_REPLICATION_FACTOR", integer(minimum=1), 3)


def min_insync_replicas_setting(environ: Mapping[str, str]) -> int:
    """KAFKA_TOPIC_MIN_INSYNC_REPLICAS; by default 2 with three replicas or more, else 1.

    Two of three: acknowledged writes survive a broker, and writes go on with one broker down.
    With fewer replicas, 2 would refuse every write while one broker is down.
    """
    replication = REPLICATION_FACTOR.read(environ)
    value = Variable(
        "KAFKA_TOPIC_MIN_INSYNC_REPLICAS", integer(minimum=1), 2 if replication >= 3 else 1
    ).read(environ)
    if value > replication:
        raise SettingsError(
            f"KAFKA_TOPIC_MIN_INSYNC_REPLICAS: {value} is more than the replication factor "
            f"({replication}); no write could ever be acknowledged"
        )
    return value


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
            min_insync_replicas=min_insync_replicas_setting(environ),
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
        await _warn_if_one_replica_acknowledges(
            admin, [name for name in wanted if name in existing]
        )
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


async def _warn_if_one_replica_acknowledges(admin: AIOKafkaAdminClient, names: list[str]) -> None:
    """Warn about topics whose acks=all writes one broker alone can acknowledge."""
    brokers = len((await admin.describe_cluster())["brokers"])
    if brokers < 2 or not names:
        return
    effective = await min_insync_replicas(admin, names)
    for name, value in effective.items():
        if value < 2:
            log.warning(
                "a topic acknowledges writes that only one broker holds: losing that broker "
                "loses them; set min.insync.replicas=2 on it (and replication factor 3)",
                extra={
                    "fields": {
                        "topic": name,
                        "min_insync_replicas": value,
                        "brokers": brokers,
                    }
                },
            )


async def min_insync_replicas(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    """Each topic's effective `min.insync.replicas` (its own, else the broker default).

    A topic the answering broker does not know yet (a config still propagating) is left out
    rather than guessed.
    """
    resources = [
        ConfigResource(ConfigResourceType.TOPIC, name, {"min.insync.replicas": None})
        for name in names
    ]
    found: dict[str, int] = {}
    for response in await admin.describe_configs(resources):
        for resource in response.resources:
            error_code, name, entries = resource[0], resource[3], resource[4]
            if error_code != 0:
                continue
            for entry in entries:
                if entry[0] == "min.insync.replicas" and entry[1] is not None:
                    found[name] = int(entry[1])
    return found


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
