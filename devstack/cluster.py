"""A real three-node Apache Kafka cluster (KRaft) on loopback, the topology users deploy.

Each node is a combined broker and controller (`LocalKafka`) with its own data directory and
ports; the three form one controller quorum. Internal topics (consumer offsets, transaction
state) have three replicas and `min.insync.replicas=2`, so the cluster keeps serving
transactions and groups with any one node down. The broker default `min.insync.replicas`
stays 1, as on most clusters: a topic is only as safe as its own settings, which is what the
fault tests must see.

Every node can be killed (SIGKILL), stopped cleanly (SIGTERM), paused (SIGSTOP) and started
again on its data, one at a time or all together (`pause_all`: the cluster unreachable while
client connections stay open, as in a network partition).

Command line: `python -m devstack.kafka serve --brokers 3`, or `make run BROKERS=3`.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaClient, AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

from devstack.kafka import BrokerError, LocalKafka, free_port

STARTUP_TIMEOUT_S = 120.0  # three JVMs starting at once on two cores take 15-25 s
_WARM_TOPIC = "devstack.cluster.warm"


class LocalCluster:
    """`size` combined KRaft nodes forming one cluster; node ids are 1..size."""

    def __init__(self, size: int = 3, data_dir: Path | None = None) -> None:
        if size < 1:
            raise ValueError(f"a cluster needs at least one node, got {size}")
        self._owns_data_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="postback-cluster-"))
        controller_ports = [free_port() for _ in range(size)]
        quorum = ",".join(
            f"{node_id}@127.0.0.1:{port}" for node_id, port in enumerate(controller_ports, 1)
        )
        self.nodes = {
            node_id: LocalKafka(
                self.data_dir / f"node-{node_id}",
                node_id=node_id,
                controller_port=port,
                quorum=quorum,
                replicas=min(3, size),
            )
            for node_id, port in enumerate(controller_ports, 1)
        }

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(node.bootstrap_servers for node in self.nodes.values())

    @property
    def size(self) -> int:
        return len(self.nodes)

    def node(self, node_id: int) -> LocalKafka:
        return self.nodes[node_id]

    def start(self, timeout: float = STARTUP_TIMEOUT_S) -> LocalCluster:
        """Start every node that is not running; return once all serve as one cluster.

        On first start it also creates the internal topics (a group join and a transactional
        producer do that), so that a test which kills a node right away does not find them
        missing: with a node down, a topic of three replicas cannot be created.
        """
        first_start = not any(node.running for node in self.nodes.values())
        for node in self.nodes.values():
            node.launch()
        for node in self.nodes.values():
            node.wait_ready(timeout, brokers=self.size)
        if first_start:
            _run(_warm_internal_topics(self.bootstrap_servers, self.size))
        return self

    def heal(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        """Every node running and thawed again, whatever a test left behind."""
        for node in self.nodes.values():
            if node.running:
                node.resume()
        self.start(timeout)

    def start_node(self, node_id: int, timeout: float = STARTUP_TIMEOUT_S) -> None:
        """Start one node on its data and wait until the cluster counts it again."""
        node = self.nodes[node_id]
        node.launch()
        node.wait_ready(timeout, brokers=self.size)

    def stop(self) -> None:
        """Stop every node cleanly (SIGTERM), in parallel: one by one, each would wait for
        the others to take over its partitions."""
        with ThreadPoolExecutor(max_workers=self.size) as pool:
            list(pool.map(LocalKafka.stop, self.nodes.values()))

    def pause_all(self) -> None:
        for node in self.nodes.values():
            node.pause()

    def resume_all(self) -> None:
        for node in self.nodes.values():
            node.resume()

    def close(self) -> None:
        self.stop()
        if self._owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    async def leaders(self, topic: str) -> dict[int, int]:
        """Partition -> node id of its leader (-1 while a partition has none)."""
        client = AIOKafkaClient(bootstrap_servers=self._live_bootstrap())
        await client.bootstrap()
        try:
            metadata = await client.fetch_all_metadata()
            return {
                partition: metadata.leader_for_partition(TopicPartition(topic, partition))
                for partition in metadata.partitions_for_topic(topic) or ()
            }
        finally:
            await client.close()

    async def busiest_leader(self, topic: str) -> int:
        """The node that leads most of `topic`'s partitions (the lowest id on a tie)."""
        counts = Counter(leader for leader in (await self.leaders(topic)).values() if leader >= 0)
        if not counts:
            raise BrokerError(f"no partition of {topic} has a leader")
        return min(counts, key=lambda node_id: (-counts[node_id], node_id))

    def _live_bootstrap(self) -> str:
        live = [node.bootstrap_servers for node in self.nodes.values() if node.running]
        return ",".join(live) or self.bootstrap_servers

    def __enter__(self) -> LocalCluster:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _run(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine to completion from synchronous code, inside an event loop or not."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, coroutine).result()


async def _warm_internal_topics(bootstrap: str, replicas: int) -> None:
    """Create `__consumer_offsets` and `__transaction_state` now, while every node is up."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(_WARM_TOPIC, 1, replicas)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=_WARM_TOPIC)
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send_and_wait(_WARM_TOPIC, b"warm")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        _WARM_TOPIC, bootstrap_servers=bootstrap, group_id=_WARM_TOPIC, enable_auto_commit=False
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + 60
        while not consumer.assignment() and time.monotonic() < deadline:
            await consumer.getmany(timeout_ms=200)
        await consumer.commit()
    finally:
        await consumer.stop()
