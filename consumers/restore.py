"""Restoring a partition's state (dedupe window, latency join) as of its committed offset.

The state is deterministic in the sequence of records that shaped it, so it can be rebuilt
from the raw topic itself: the records received within the state's span
(`PartitionPipeline.replay_span_ms`) before the committed position are fed to the pipeline's
`restore`, which changes the state exactly as `process` would without building events.
"""

from __future__ import annotations

import logging
import time

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from consumers.clients import ProcessorClients, stopped
from consumers.instruments import ProcessorMetrics
from consumers.processor.pipeline import PartitionPipeline

log = logging.getLogger("consumers.processor")


async def restore_from_raw(
    clients: ProcessorClients,
    tp: TopicPartition,
    pipeline: PartitionPipeline,
    until: int,
    metrics: ProcessorMetrics,
) -> None:
    """Rebuild `pipeline`'s state as of raw offset `until` (the committed offset)."""
    started = time.perf_counter()
    # A reader of its own: partitions restore side by side, and one still restoring holds
    # up no other.
    reader = clients.reader(f"restore-{tp.partition}")
    try:
        await reader.start()
        reader.assign([tp])
        records = await _feed_span(reader, tp, pipeline, until)
    finally:
        await stopped(reader)
    elapsed = time.perf_counter() - started
    metrics.restore_seconds.observe(elapsed)
    metrics.restored_records.inc(records)
    log.info(
        "partition state restored",
        extra={
            "fields": {
                "partition": tp.partition,
                "from": "raw",
                "records": records,
                "keys": len(pipeline.window),
                "seconds": round(elapsed, 3),
            }
        },
    )


async def _feed_span(
    reader: AIOKafkaConsumer, tp: TopicPartition, pipeline: PartitionPipeline, until: int
) -> int:
    """Feed the records before `until` that shape the state through `pipeline.restore`."""
    beginning: int = (await reader.beginning_offsets([tp]))[tp]
    if until <= beginning:
        return 0
    reader.seek(tp, until - 1)
    last = await reader.getone()
    since_ms = last.timestamp - pipeline.replay_span_ms
    found = await reader.offsets_for_times({tp: since_ms})
    start = found[tp].offset if found.get(tp) is not None else beginning
    reader.seek(tp, start)
    position = start
    fed = 0
    restore = pipeline.restore
    while position < until:
        batches = await reader.getmany(tp, timeout_ms=1000, max_records=10_000)
        for record in batches.get(tp, []):
            if record.offset >= until:
                break
            restore(record.value, record.offset, record.headers, record.timestamp)
            fed += 1
        pipeline.commit()
        position = await reader.position(tp)
    return fed
