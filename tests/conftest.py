"""Shared fixtures: one real Kafka broker for the whole session, and factories over it.

The broker is a real Apache Kafka (KRaft) started from the jars `make kafka` caches; with
KAFKA_BOOTSTRAP_SERVERS set, the suite uses that cluster instead. Every test makes its own
topics with unique names, so tests never see each other's records.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from aiokafka.structs import ConsumerRecord

from devstack import DEVELOPMENT_PSEUDONYM_KEY
from devstack.cluster import LocalCluster
from devstack.kafka import LocalKafka, broker_or_configured
from testkit.kafka_tools import ReadTopic, read_records


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    with broker_or_configured() as bootstrap:
        yield bootstrap


@pytest.fixture
def own_broker() -> Iterator[LocalKafka]:
    """A broker of the test's own, which it may stop, kill and restart without disturbing the
    rest of the suite. A module that uses it overrides `kafka_bootstrap` with its address."""
    with LocalKafka() as broker:
        yield broker


@pytest.fixture(scope="session")
def session_cluster() -> Iterator[LocalCluster]:
    """Three KRaft nodes (replication 3, min ISR 2 for internal topics), started on first use
    and shared by every test that may kill, stop or pause its nodes."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        pytest.skip("needs the local three-node cluster, whose nodes the tests kill and pause")
    with LocalCluster(3) as cluster:
        yield cluster


@pytest.fixture
def kafka_cluster(session_cluster: LocalCluster) -> LocalCluster:
    """The shared cluster, every node running and thawed, whatever an earlier test did."""
    session_cluster.heal()
    return session_cluster


@pytest.fixture
def topic_prefix(request: pytest.FixtureRequest) -> str:
    """A prefix no other test shares, readable enough to find a test's topics in a broker."""
    name = request.node.name.replace("[", "-").replace("]", "")[:80]
    return f"test.{name}.{uuid.uuid4().hex[:8]}"


@pytest.fixture
def base_env(kafka_bootstrap: str, topic_prefix: str) -> dict[str, str]:
    """The environment a service would get in production, pointed at this test's topics."""
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TOPIC_PARTITIONS": "3",
        "KAFKA_TOPIC_RAW": f"{topic_prefix}.raw",
        "KAFKA_TOPIC_EVENTS": f"{topic_prefix}.events",
        "KAFKA_TOPIC_DLQ": f"{topic_prefix}.dlq",
        "KAFKA_TOPIC_STATE": f"{topic_prefix}.state",
        "KAFKA_STARTUP_TIMEOUT_SECONDS": "20",
        "EVENTS_PSEUDONYM_KEY": DEVELOPMENT_PSEUDONYM_KEY,
    }


@pytest.fixture
def read_topic(kafka_bootstrap: str) -> ReadTopic:
    async def read(
        topic: str, count: int, timeout: float = 15.0
    ) -> list[ConsumerRecord[bytes, bytes]]:
        return await read_records(kafka_bootstrap, topic, count, timeout)

    return read
