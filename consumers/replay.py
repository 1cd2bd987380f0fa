"""`python -m consumers.replay`: re-derive events from `postbacks.raw` for a time range.

For after an enrichment fix, or to fill a new events topic. The raw topic is the archive: it
holds every acknowledged postback byte for byte, timestamped with the edge's receive time.

What a replay emits, and why downstream may simply upsert it:
- One event per distinct notification received in [since, until), built by the same
  pipeline as the live processor. Event ids derive from the notification's identity, so a
  replayed event carries the same `event_id` as the one emitted live: a consumer that upserts
  by `event_id` replaces the old version instead of gaining a second.
- Duplicates are judged as the live processor judged them: each partition's dedupe window is
  first warmed with the records received in the window's span before `since` (output
  discarded), so a provider retry of a notification received just before the range is
  dropped here too.
- Dead letters are counted, and written to the DLQ only with `--dead-letters` (they were
  dead-lettered live already; a fixed parser turns some of them into events instead).
- Output is written in Kafka transactions of up to `--chunk` records; `read_committed` readers
  never see half a chunk. A replay that dies part-way can be run again: the events it had
  committed are emitted again with the same ids.
- Events carry the same CloudEvents headers as the live processor's, and the same privacy
  settings apply: run it with the processor's EVENTS_PSEUDONYM_KEY, or the same number gets
  another pseudonym (docs/events.md, "Privacy").
- The live processor's group and offsets are not touched.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from common.command_line import CommandParser, settings_help, variables_read
from common.env import SettingsError
from common.kafka import KafkaSettings
from common.raw_record import Headers
from consumers.dlq import dead_letter_headers
from consumers.processor.identity import Identity
from consumers.processor.latency import LatencyJoin
from consumers.processor.pipeline import DeadLetter, Emit, PartitionPipeline
from consumers.processor.privacy import Privacy
from consumers.processor.window import DedupeWindow
from consumers.settings import ProcessorSettings


@dataclass
class ReplayReport:
    read: int = 0
    warmed: int = 0
    events: int = 0
    duplicates: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "records_read": self.read,
            "records_warmed": self.warmed,
            "events_written": self.events,
            "duplicates_dropped": self.duplicates,
            "dead_letters": dict(self.dead_letters),
        }


def parse_time(text: str) -> int:
    """Epoch ms from ISO-8601 (`2026-11-20T00:00:00Z`) or epoch milliseconds."""
    if text.isdigit():
        return int(text)
    moment = datetime.fromisoformat(text)
    if moment.utcoffset() is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


async def _offset_at(consumer: AIOKafkaConsumer, tp: TopicPartition, when_ms: int) -> int:
    """First offset received at or after `when_ms`; the end offset if there is none."""
    found = await consumer.offsets_for_times({tp: when_ms})
    if found.get(tp) is not None:
        offset: int = found[tp].offset
        return offset
    end: int = (await consumer.end_offsets([tp]))[tp]
    return end


class ChunkedWriter:
    """Writes output in transactions of up to `chunk` records; writes nothing on a dry run."""

    def __init__(self, producer: AIOKafkaProducer | None, chunk: int) -> None:
        self._producer = producer
        self._chunk = chunk
        self._pending = 0

    async def send(self, topic: str, value: bytes, key: bytes | None, headers: Headers) -> None:
        if self._producer is None:
            return
        if self._pending == 0:
            await self._producer.begin_transaction()
        await self._producer.send(topic, value, key=key, headers=headers)
        self._pending += 1
        if self._pending >= self._chunk:
            await self.commit()

    async def commit(self) -> None:
        if self._producer is not None and self._pending:
            await self._producer.commit_transaction()
            self._pending = 0


async def replay_partition(
    consumer: AIOKafkaConsumer,
    tp: TopicPartition,
    pipeline: PartitionPipeline,
    *,
    since_ms: int,
    until_ms: int,
    writer: ChunkedWriter,
    output_topic: str,
    dlq_topic: str | None,
    report: ReplayReport,
) -> None:
    """Warm the pipeline on the span before `since_ms`, then replay [since_ms, until_ms)."""
    warm_from = await _offset_at(consumer, tp, since_ms - pipeline.restore_span_ms)
    start = await _offset_at(consumer, tp, since_ms)
    stop = await _offset_at(consumer, tp, until_ms)
    consumer.seek(tp, warm_from)
    position = warm_from
    while position < stop:
        batches = await consumer.getmany(tp, timeout_ms=1000, max_records=10_000)
        for record in batches.get(tp, []):
            if record.offset >= stop:
                break
            outcome = pipeline.process(
                record.value, record.offset, record.headers, record.timestamp
            )
            if record.offset < start:
                report.warmed += 1
                continue
            report.read += 1
            if type(outcome) is Emit:
                report.events += 1
                await writer.send(output_topic, outcome.value, outcome.key, outcome.headers)
            elif type(outcome) is DeadLetter:
                report.dead_letters[outcome.reason] += 1
                if dlq_topic is not None:
                    headers = dead_letter_headers(
                        record.headers,
                        reason=outcome.reason,
                        detail=outcome.detail,
                        topic=tp.topic,
                        partition=tp.partition,
                        offset=record.offset,
                    )
                    await writer.send(dlq_topic, record.value, record.key, headers)
            else:
                report.duplicates += 1
        pipeline.commit()
        position = await consumer.position(tp)
    await writer.commit()


async def replay(
    settings: ProcessorSettings,
    *,
    since_ms: int,
    until_ms: int,
    output_topic: str,
    dead_letters: bool,
    chunk: int,
    dry_run: bool,
) -> ReplayReport:
    options = settings.kafka.client_options()
    consumer = AIOKafkaConsumer(
        **options,
        client_id="postback-replay",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    producer = None
    if not dry_run:
        producer = AIOKafkaProducer(
            **options,
            client_id="postback-replay",
            transactional_id=f"postback-replay.{uuid.uuid4().hex}",
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
        )
    report = ReplayReport()
    identity = Identity.from_fields(settings.identity_fields or None)
    privacy = Privacy.from_settings(settings)
    raw = settings.topics.raw.name
    await consumer.start()
    try:
        if producer is not None:
            await producer.start()
        cluster = await consumer._client.fetch_all_metadata()
        partitions = sorted(
            TopicPartition(raw, partition) for partition in cluster.partitions_for_topic(raw) or ()
        )
        if not partitions:
            raise SettingsError(f"KAFKA_TOPIC_RAW: topic {raw!r} does not exist")
        consumer.assign(partitions)
        writer = ChunkedWriter(producer, chunk)
        for tp in partitions:
            pipeline = PartitionPipeline(
                raw,
                tp.partition,
                identity=identity,
                window=DedupeWindow(settings.dedupe_window_ms, settings.dedupe_max_keys),
                latency=LatencyJoin(settings.latency_max_age_ms),
                privacy=privacy,
            )
            await replay_partition(
                consumer,
                tp,
                pipeline,
                since_ms=since_ms,
                until_ms=until_ms,
                writer=writer,
                output_topic=output_topic,
                dlq_topic=settings.topics.dlq.name if dead_letters else None,
                report=report,
            )
    finally:
        await consumer.stop()
        if producer is not None:
            await producer.stop()
    return report


def settings_read() -> list[str]:
    """The variables a replay reads, for --help."""
    return [
        *variables_read(KafkaSettings.from_environ),
        "KAFKA_TOPIC_RAW",
        "DEDUPE_WINDOW_SECONDS",
        "DEDUPE_MAX_KEYS",
        "DEDUPE_IDENTITY_FIELDS",
        "LATENCY_MAX_AGE_SECONDS",
    ]


def main(argv: list[str] | None = None, *, prog: str = "python -m consumers.replay") -> int:
    parser = CommandParser(
        prog=prog,
        description="Re-derive events from the raw topic for [since, until). Kafka and topic "
        "settings come from the environment, as for the processor.",
        epilog=settings_help(settings_read()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--since", required=True, help="ISO-8601 (UTC if no offset) or epoch ms")
    parser.add_argument("--until", default=None, help="exclusive; default: now")
    parser.add_argument("--output-topic", default=None, help="default: KAFKA_TOPIC_EVENTS")
    parser.add_argument("--dead-letters", action="store_true", help="also write dead letters")
    parser.add_argument("--chunk", type=int, default=5000, help="records per transaction")
    parser.add_argument("--dry-run", action="store_true", help="count, write nothing")
    args = parser.parse_args(argv)
    try:
        settings = ProcessorSettings.from_environ(os.environ)
        since_ms = parse_time(args.since)
        until_ms = parse_time(args.until) if args.until else int(time.time() * 1000)
    except (SettingsError, ValueError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    started = time.monotonic()
    report = asyncio.run(
        replay(
            settings,
            since_ms=since_ms,
            until_ms=until_ms,
            output_topic=args.output_topic or settings.topics.events.name,
            dead_letters=args.dead_letters,
            chunk=args.chunk,
            dry_run=args.dry_run,
        )
    )
    summary = {**report.as_dict(), "seconds": round(time.monotonic() - started, 3)}
    print(orjson.dumps(summary).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
