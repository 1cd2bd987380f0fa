"""Restoring a partition's state (dedupe window, latency join) as of its committed offset.

Two sources, the first that can serve:
1. the state topic: the state changes every committed transaction wrote beside its events
   (consumers/changelog.py), applied in order; no raw record is re-read;
2. the raw topic itself: the records received within the state's span
   (`PartitionPipeline.replay_span_ms`) before the committed position are fed to the
   pipeline's `restore`, which changes the state exactly as `process` would without building
   events. After this, a snapshot of the state goes to the state topic, so that the next
   rebuild of the partition can use it.
The log line says which source served and why the first could not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import NamedTuple

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from common.memory import release_free_memory
from consumers.changelog import Changelog, NotRestored, restore_from_changelog
from consumers.clients import ProcessorClients, stopped
from consumers.instruments import ProcessorMetrics
from consumers.processor.pipeline import PartitionPipeline

log = logging.getLogger("consumers.processor")


class RawRestore(NamedTuple):
    records: int
    last_timestamp_ms: int | None  # of the record before the committed offset


async def restore(
    clients: ProcessorClients,
    tp: TopicPartition,
    new_pipeline: Callable[[], PartitionPipeline],
    committed: int,
    *,
    changelog: Changelog,
    producer: AIOKafkaProducer,
    metrics: ProcessorMetrics,
) -> PartitionPipeline:
    """A pipeline whose state is the one the partition had at raw offset `committed`."""
    started = time.perf_counter()
    pipeline = new_pipeline()
    try:
        records = await restore_from_changelog(clients, changelog, tp, pipeline, committed)
        source, why = "state", None
    except NotRestored as error:
        pipeline = new_pipeline()
        raw = await restore_from_raw(clients, tp, pipeline, committed)
        await changelog.write_snapshot(
            producer, pipeline, raw_next=committed, timestamp_ms=raw.last_timestamp_ms
        )
        records, source, why = raw.records, "raw", str(error)
    elapsed = time.perf_counter() - started
    release_free_memory()  # what the rebuild read and decoded is garbage now
    metrics.restore_seconds.observe(elapsed)
    metrics.restored_records.labels(source).inc(records)
    metrics.partition_opens.labels(source).inc()
    log.info(
        "partition state restored",
        extra={
            "fields": {
                "partition": tp.partition,
                "from": source,
                **({"why_not_state_topic": why} if why else {}),
                "records": records,
                "keys": len(pipeline.window),
                "seconds": round(elapsed, 3),
            }
        },
    )
    return pipeline


async def restore_from_raw(
    clients: ProcessorClients, tp: TopicPartition, pipeline: PartitionPipeline, until: int
) -> RawRestore:
    """Rebuild `pipeline`'s state as of raw offset `until` by re-reading the raw topic."""
    # A reader of its own: partitions restore side by side, and one still restoring holds
    # up no other.
    reader = clients.reader(f"restore-{tp.partition}")
    try:
        await reader.start()
        reader.assign([tp])
        return await _feed_span(reader, tp, pipeline, until)
    finally:
        await stopped(reader)


async def _feed_span(
    reader: AIOKafkaConsumer, tp: TopicPartition, pipeline: PartitionPipeline, until: int
) -> RawRestore:
    """Feed the records before `until` that shape the state through `pipeline.restore`."""
    beginning: int = (await reader.beginning_offsets([tp]))[tp]
    if until <= beginning:
        return RawRestore(0, None)
    reader.seek(tp, until - 1)
    last = await reader.getone()
    since_ms = last.timestamp - pipeline.replay_span_ms
    found = await reader.offsets_for_times({tp: since_ms})
    start = found[tp].offset if found.get(tp) is not None else beginning
    reader.seek(tp, start)
    position = start
    fed = 0
    feed = pipeline.restore
    while position < until:
        batches = await reader.getmany(tp, timeout_ms=1000, max_records=10_000)
        for record in batches.get(tp, []):
            if record.offset >= until:
                break
            feed(record.value, record.offset, record.headers, record.timestamp)
            fed += 1
        pipeline.commit()
        position = await reader.position(tp)
    return RawRestore(fed, last.timestamp)
