"""The processor's state restore, measured the same way by B3 and B5, against a bare re-read."""

from __future__ import annotations

import asyncio
import time
import uuid
from hashlib import blake2b

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from bench.support import PARTITIONS, PASS_TIMEOUT_S, poll, sample_sum, start_runtime


async def restore_pass(env: dict[str, str], *, from_raw: bool = False) -> dict[str, float]:
    """A fresh runtime in the group of `env` rebuilds every partition's state, from the state
    topic or, `from_raw`, from the raw topic (given a state topic of a new name, empty, as on
    the first start of this version); the figure is the wall time until every partition is
    open (fencing included), not the sum of the partitions' durations, which overlap."""
    if from_raw:
        env = {**env, "KAFKA_TOPIC_STATE": f"{env['KAFKA_TOPIC_STATE']}.{uuid.uuid4().hex[:8]}"}
    runtime, registry = await start_runtime(env)
    started = time.perf_counter()
    stop = asyncio.Event()
    running = asyncio.create_task(runtime.run(stop))
    try:
        if not await poll(lambda: len(runtime.assigned) == PARTITIONS, PASS_TIMEOUT_S):
            raise TimeoutError("the restoring runtime never owned every partition")
        wall = time.perf_counter() - started
    finally:
        stop.set()
        await running
    partition_seconds = sample_sum(registry, "postback_processor_restore_duration_seconds_sum")
    records = sample_sum(registry, "postback_processor_restored_records_total")
    return {
        "records": records,
        "seconds": wall,
        "wall_seconds_to_all_assigned": wall,
        "summed_partition_seconds": partition_seconds,
        "records_per_s": records / wall,
    }


async def bare_restore_rate(bootstrap: str, raw: str) -> float:
    """Records/s of re-reading the raw topic as the restore does (read_committed, partition
    after partition, batches of 10,000) and hashing each value into a set: the floor."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(raw, p) for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(partitions)
        started = time.perf_counter()
        records = 0
        for tp in partitions:
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            seen: set[bytes] = set()
            while await consumer.position(tp) < ends[tp]:
                batches = await consumer.getmany(tp, timeout_ms=1000, max_records=10_000)
                for record in batches.get(tp, []):
                    seen.add(blake2b(record.value, digest_size=16).digest())
                    records += 1
        return records / (time.perf_counter() - started)
    finally:
        await consumer.stop()
