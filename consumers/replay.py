"""`python -m consumers.replay`: add to an events topic the events it lacks, never one twice.

One rule for every replay: it writes to its output topic only events whose `event_id` the
topic does not hold yet, and it reads the topic to know which only after taking the topic's
replay transactional id (`<PROCESSOR_TRANSACTIONAL_ID_PREFIX>.replay.<topic>`). Taking the id
makes the broker finish whatever transaction the id's previous holder left open and fences
that holder. Hence:
- a replay run twice adds nothing the second time;
- a replay that died part-way and is run again adds only what the first did not commit;
- of two replays into one topic running at once, the later fences the earlier, which stops
  (exit status 3) having committed nothing the later one does not see.
So `read_committed` readers of the output topic, and the metrics service, still see each
notification once.

Two uses:
- **Dead letters that parse now** (the default; the runbook's PostbackDeadLetters action): the
  parser was fixed and released, and the range's dead letters become events in the live
  events topic. Every other notification of the range was emitted live, so only the dead
  letters of records received in [since, until) are read, and of those only the ones the live
  processor has settled: it has committed, in the dead letter's raw partition, a postback
  received the provider's retry span (plus a minute) after it, so it has handled every copy
  of the notification the provider may still send. A copy that reaches the fixed processor
  after the replay would otherwise be a second event (its dedupe window may know the dead
  letter by its bytes only); the others are counted and left for a later run. They go through
  the processor's pipeline; their events are looked up in the events partitions their keys
  map to, from the dedupe span before `since` on (where an earlier copy's event would be), and
  those found are skipped: another copy of the notification got through live.
- **Re-derive** (`--output-topic`, required and never the live events topic): every
  notification received in [since, until) is derived again into another topic, e.g. after an
  enrichment fix. Each raw partition's state is first restored from the span before `since`
  (output discarded), so a retry of a notification received just before the range is dropped
  as it was live.

Events carry the `event_id` the live processor gave (ids derive from the identity), and its
CloudEvents headers; the same privacy settings apply, so run it with the processor's
EVENTS_PSEUDONYM_KEY, or the same number gets another pseudonym (docs/events.md, "Privacy").
Output is written in transactions of up to `--chunk` records. The live processor's group and
offsets are never written. Memory: about 100 bytes per event id the output topic holds in the
span read (re-derive) or per dead letter of the range; split a very large range with `--until`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import InvalidProducerEpoch, KafkaError, ProducerFenced
from aiokafka.structs import TopicPartition

from common.command_line import CommandParser, settings_help, variables_read
from common.env import SettingsError
from common.kafka import KafkaSettings
from common.partitioning import default_partition
from common.raw_record import Headers
from common.topics import TopicsMissing, ensure_topics
from consumers.processor.pipeline import PartitionPipeline
from consumers.replay_sources import (
    Derived,
    Reader,
    ReplayReport,
    dead_letter_events,
    live_progress,
    raw_events,
)
from consumers.settings import ProcessorSettings

FENCED_ERRORS: Final = (ProducerFenced, InvalidProducerEpoch)
DEFAULT_CHUNK: Final = 5000


class ReplayFenced(RuntimeError):
    """Another replay took this output topic's transactional id; this one must stop."""


def parse_time(text: str) -> int:
    """Epoch ms from ISO-8601 (`2026-11-20T00:00:00Z`) or epoch milliseconds."""
    if text.isdigit():
        return int(text)
    moment = datetime.fromisoformat(text)
    if moment.utcoffset() is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def replay_transactional_id(settings: ProcessorSettings, output_topic: str) -> str:
    """One id per output topic, so replays into one topic fence each other.

    Under the processor's prefix, which its ACLs already cover (`<prefix>.*`).
    """
    return f"{settings.transactional_id_prefix}.replay.{output_topic}"


# ------------------------------------------------------------------------------ writing


class ChunkedWriter:
    """Writes records in Kafka transactions of up to `chunk` records under one transactional
    id; writes nothing when `producer` is None (a dry run).

    `claim()` first takes the id: the broker completes the transaction its previous holder
    left open (aborts it, or finishes a commit already prepared) and fences that holder. Read
    what decides the output only after `claim()`. A transaction commits only once every
    record in it was acknowledged: aiokafka would commit over a failed send (see
    consumers/runtime.py). If another holder took the id meanwhile, `send` or `commit` raises
    `ReplayFenced` and nothing of the open transaction becomes visible.
    """

    def __init__(self, producer: AIOKafkaProducer | None, chunk: int) -> None:
        self._producer = producer
        self._chunk = chunk
        self._deliveries: list[asyncio.Future[Any]] = []
        self._open = False

    async def claim(self) -> None:
        if self._producer is None:
            return
        await self._producer.start()
        with _fenced_as_replay_fenced():
            # Beginning a transaction obtains the producer id (InitProducerId): the fence.
            await self._producer.begin_transaction()
            await self._producer.abort_transaction()

    async def send(self, topic: str, value: bytes, key: bytes | None, headers: Headers) -> None:
        if self._producer is None:
            return
        with _fenced_as_replay_fenced():
            if not self._open:
                await self._producer.begin_transaction()
                self._open = True
            self._deliveries.append(
                await self._producer.send(topic, value, key=key, headers=headers)
            )
        if len(self._deliveries) >= self._chunk:
            await self.commit()

    async def commit(self) -> None:
        if self._producer is None or not self._open:
            return
        with _fenced_as_replay_fenced():
            for delivery in self._deliveries:
                await delivery  # raises the send's error; then nothing is committed
            await self._producer.commit_transaction()
        self._deliveries.clear()
        self._open = False

    async def stop(self) -> None:
        """Release the producer; a transaction still open is aborted by the broker (when the
        next holder claims the id, or at the transaction timeout)."""
        if self._producer is not None:
            for delivery in self._deliveries:
                delivery.add_done_callback(_retrieve)
            await self._producer.stop()


@contextlib.contextmanager
def _fenced_as_replay_fenced() -> Iterator[None]:
    try:
        yield
    except FENCED_ERRORS as error:
        raise ReplayFenced(
            "another replay into this topic took over (fenced); it writes what its own range "
            "lacks: run this replay again if its range was not covered"
        ) from error


def _retrieve(delivery: asyncio.Future[Any]) -> None:
    if not delivery.cancelled():
        delivery.exception()


# ------------------------------------------------------------------------------ the replay


def _check_output_topic(settings: ProcessorSettings, output_topic: str) -> None:
    topics = settings.topics
    if output_topic == topics.events.name:
        raise SettingsError(
            f"--output-topic: {output_topic!r} is the live events topic; re-derived events go "
            "to another topic (without --output-topic, the replay adds to the live topic only "
            "the events of dead letters that it lacks)"
        )
    if output_topic in (topics.raw.name, topics.dlq.name):
        raise SettingsError(f"--output-topic: {output_topic!r} is the raw or dead-letter topic")


async def replay(
    settings: ProcessorSettings,
    *,
    since_ms: int,
    until_ms: int,
    output_topic: str | None = None,
    chunk: int = DEFAULT_CHUNK,
    dry_run: bool = False,
) -> ReplayReport:
    """Add to the output topic the events of [since_ms, until_ms) it lacks (module doc).

    `output_topic` None: the live events topic, from the range's dead letters; otherwise
    every notification of the range, re-derived into that (other) topic.
    """
    topics = settings.topics
    if output_topic is not None:
        _check_output_topic(settings, output_topic)
        spec = dataclasses.replace(topics.events, name=output_topic)
        await ensure_topics(settings.kafka, [spec], create_missing=topics.create_missing)
    topic = output_topic or topics.events.name
    report = ReplayReport("rederive" if output_topic else "dead-letters", topic)
    options = settings.kafka.client_options()
    producer = None
    if not dry_run:
        producer = AIOKafkaProducer(
            **options,
            client_id="postback-replay",
            transactional_id=replay_transactional_id(settings, topic),
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
        )
    writer = ChunkedWriter(producer, chunk)
    reader = Reader(options)
    await reader.start()
    try:
        await writer.claim()  # before reading anything that decides what to write
        output = await reader.partitions(topic)
        if not output:
            raise SettingsError(f"topic {topic!r} does not exist")
        # An event of the range was written once its notification was first received, at
        # most a dedupe span before the record that carries it in the range.
        from_ms = since_ms - PartitionPipeline.from_settings(settings, topic, 0).restore_span_ms
        if output_topic is not None:
            present = await reader.event_ids(output, from_ms)
            events = raw_events(
                reader, settings, since_ms=since_ms, until_ms=until_ms, report=report
            )
        else:
            events, present = await _dead_letter_plan(
                reader, settings, output, since_ms, until_ms, from_ms, report
            )
        async for event in events:
            if event.event_id in present:
                report.present += 1
                continue
            present.add(event.event_id)
            report.events += 1
            await writer.send(topic, event.value, event.key, event.headers)
        await writer.commit()
    finally:
        await reader.stop()
        await writer.stop()
    return report


async def _dead_letter_plan(
    reader: Reader,
    settings: ProcessorSettings,
    output: list[TopicPartition],
    since_ms: int,
    until_ms: int,
    from_ms: int,
    report: ReplayReport,
) -> tuple[AsyncIterator[Derived], set[str]]:
    """The dead letters' events, and which of them the live events topic holds already.

    A first pass over the dead letters finds their event ids and the events partitions their
    keys map to; only those partitions are read, and only those ids remembered.
    """
    topics = settings.topics
    # The live processor's progress first: every dead letter of a record below its offsets was
    # committed with them, so it is below the DLQ's ends read next.
    live = await live_progress(reader, settings)
    dlq_ends = await reader.ends(await reader.partitions(topics.dlq.name))

    def events(into: ReplayReport) -> AsyncIterator[Derived]:
        return dead_letter_events(
            reader,
            settings,
            since_ms=since_ms,
            until_ms=until_ms,
            dlq_ends=dlq_ends,
            live=live,
            report=into,
        )

    scratch = ReplayReport(report.mode, report.output_topic)
    wanted = {
        event.event_id: default_partition(event.key, len(output)) async for event in events(scratch)
    }
    holding = set(wanted.values())
    partitions = [tp for tp in output if tp.partition in holding]
    return events(report), await reader.event_ids(partitions, from_ms, wanted)


# ------------------------------------------------------------------------------ command


async def _quiet_about_fencing(work: Awaitable[ReplayReport]) -> ReplayReport:
    """Run `work` without asyncio's "Future exception was never retrieved" for a fence.

    A fenced aiokafka producer leaves the error in internal futures nobody awaits; the
    command says it once (ReplayFenced), so those copies are dropped. Anything else still
    reaches asyncio's default handler.
    """

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if not isinstance(context.get("exception"), FENCED_ERRORS):
            loop.default_exception_handler(context)

    asyncio.get_running_loop().set_exception_handler(handle)
    return await work


def settings_read() -> list[str]:
    """The variables a replay reads, for --help."""
    return [
        *variables_read(KafkaSettings.from_environ),
        "KAFKA_TOPIC_RAW",
        "KAFKA_TOPIC_EVENTS",
        "KAFKA_TOPIC_DLQ",
        "KAFKA_CREATE_TOPICS",
        "PROCESSOR_GROUP_ID",
        "PROCESSOR_TRANSACTIONAL_ID_PREFIX",
        "DEDUPE_WINDOW_SECONDS",
        "DEDUPE_MAX_KEYS",
        "DEDUPE_IDENTITY_FIELDS",
        "LATENCY_MAX_AGE_SECONDS",
        "EVENTS_PSEUDONYMISE_NUMBERS",
        "EVENTS_PSEUDONYM_KEY",
        "EVENTS_INCLUDE_CONTENT",
    ]


def main(argv: list[str] | None = None, *, prog: str = "python -m consumers.replay") -> int:
    parser = CommandParser(
        prog=prog,
        description="Add to an events topic the events of [since, until) it lacks, never one "
        "twice. By default: the events of the range's dead letters that parse now, into the "
        "live events topic. Settings come from the environment, as for the processor.\n"
        "Exit status: 0 done (a JSON summary), 1 Kafka failed (run it again), 2 bad input, "
        "3 another replay into the same topic took over.",
        epilog=settings_help(settings_read()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--since", required=True, help="ISO-8601 (UTC if no offset) or epoch ms")
    parser.add_argument("--until", default=None, help="exclusive; default: now")
    parser.add_argument(
        "--output-topic",
        default=None,
        help="re-derive every notification of the range into this topic instead (never the "
        "live events topic), e.g. after an enrichment fix",
    )
    parser.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help="records per transaction")
    parser.add_argument("--dry-run", action="store_true", help="count, write nothing")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        if args.chunk < 1:
            raise ValueError(f"--chunk: must be at least 1, got {args.chunk}")
        settings = ProcessorSettings.from_environ(os.environ)
        since_ms = parse_time(args.since)
        until_ms = parse_time(args.until) if args.until else int(time.time() * 1000)
        report = asyncio.run(
            _quiet_about_fencing(
                replay(
                    settings,
                    since_ms=since_ms,
                    until_ms=until_ms,
                    output_topic=args.output_topic,
                    chunk=args.chunk,
                    dry_run=args.dry_run,
                )
            )
        )
    except (SettingsError, ValueError, TopicsMissing) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except ReplayFenced as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 3
    except (KafkaError, TimeoutError) as error:
        print(f"{prog}: {error!r}; nothing is written twice if it is run again", file=sys.stderr)
        return 1
    summary = {**report.as_dict(), "seconds": round(time.monotonic() - started, 3)}
    print(orjson.dumps(summary).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
