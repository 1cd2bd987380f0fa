"""What a 200 rests on: on a three-broker cluster, acknowledged writes are held by two."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from common.kafka import KafkaSettings
from common.topics import TopicSettings, ensure_topics, min_insync_replicas
from devstack.cluster import LocalCluster

pytestmark = pytest.mark.kafka


def topic_settings(prefix: str, **extra: str) -> TopicSettings:
    return TopicSettings.from_environ(
        {
            "KAFKA_TOPIC_RAW": f"{prefix}.raw",
            "KAFKA_TOPIC_EVENTS": f"{prefix}.events",
            "KAFKA_TOPIC_DLQ": f"{prefix}.dlq",
            **extra,
        }
    )


async def effective_min_isr(bootstrap: str, names: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return await min_insync_replicas(admin, names)
    finally:
        await admin.close()


async def test_topics_the_services_create_need_two_replicas_in_sync_to_acknowledge(
    kafka_cluster: LocalCluster,
) -> None:
    """With the default replication factor of 3, a write the edge acknowledges is held by at
    least two brokers: the broker default (min.insync.replicas=1) would let the leader alone
    acknowledge it, and losing that broker would lose the postback."""
    topics = topic_settings(f"durable.{uuid.uuid4().hex[:6]}")
    kafka = KafkaSettings(bootstrap_servers=kafka_cluster.bootstrap_servers)
    await ensure_topics(kafka, topics.all(), create_missing=True)
    names = [spec.name for spec in topics.all()]
    assert await effective_min_isr(kafka_cluster.bootstrap_servers, names) == dict.fromkeys(
        names, 2
    )


async def test_an_existing_topic_that_one_broker_can_acknowledge_is_named_at_start_up(
    kafka_cluster: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """A raw topic someone created by hand without min.insync.replicas gets a warning that
    names it, so the weakness is found before a broker is lost, not after."""
    topics = topic_settings(f"weak.{uuid.uuid4().hex[:6]}")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_cluster.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topics.raw.name, 3, 3)])
        # Until every broker knows the new topic's config: the warning is for topics that
        # existed before start-up, not for one created a millisecond earlier.
        deadline = asyncio.get_running_loop().time() + 15
        while topics.raw.name not in await min_insync_replicas(admin, [topics.raw.name]):
            assert asyncio.get_running_loop().time() < deadline, "the topic's config is unknown"
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
    kafka = KafkaSettings(bootstrap_servers=kafka_cluster.bootstrap_servers)
    with caplog.at_level(logging.WARNING, logger="common.topics"):
        await ensure_topics(kafka, [topics.raw], create_missing=True)
    warnings = [r for r in caplog.records if getattr(r, "fields", {}).get("topic")]
    assert [r.fields["topic"] for r in warnings] == [topics.raw.name]  # type: ignore[attr-defined]
    assert warnings[0].fields["min_insync_replicas"] == 1  # type: ignore[attr-defined]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="common.topics"):
        await ensure_topics(kafka, [topics.events], create_missing=True)  # created right
        await ensure_topics(kafka, [topics.events], create_missing=True)  # and now existing
    assert not [r for r in caplog.records if getattr(r, "fields", {}).get("topic")]
