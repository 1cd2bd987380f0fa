"""One partition's pipeline: each raw record ends as one event, one duplicate or one dead letter,
and the state behind those answers follows the Kafka transaction.

Byte-exact output is pinned by test_pipeline_golden.py, restores by test_pipeline_restore.py,
privacy by test_privacy.py; this file pins the pipeline's own decisions.
"""

from __future__ import annotations

import orjson
import pytest

from common import raw_record
from consumers.dlq import DeadLetterReason
from consumers.processor import pipeline as pipeline_module
from consumers.processor.identity import Identity
from consumers.processor.latency import LatencyJoin
from consumers.processor.pipeline import DUPLICATE, DeadLetter, Disposition, Emit, PartitionPipeline
from consumers.processor.privacy import Privacy
from consumers.processor.window import DedupeWindow
from testkit.samples import load

RECEIVED_AT_MS = 1_709_648_570_000  # 2024-03-05T14:22:50Z
SENT = load("v2/sms_mt_n201")  # 14:22:40.118204 at the provider
DELIVERED = load("v2/sms_mt_n202")  # 14:22:47.310552, same tracking id


def new_pipeline() -> PartitionPipeline:
    return PartitionPipeline(
        "postbacks.raw",
        2,
        identity=Identity(),
        window=DedupeWindow(),
        latency=LatencyJoin(),
        privacy=Privacy(None, include_content=True),
    )


def headers(received_at_ms: int = RECEIVED_AT_MS) -> raw_record.Headers:
    return [(raw_record.RECEIVED_AT, str(received_at_ms).encode()), (raw_record.SOURCE, b"mt")]


def process(pipeline: PartitionPipeline, body: bytes, offset: int = 0) -> Disposition:
    return pipeline.process(body, offset, headers(RECEIVED_AT_MS + offset), 0)


def event(disposition: Disposition) -> dict[str, object]:
    assert isinstance(disposition, Emit)
    decoded: dict[str, object] = orjson.loads(disposition.value)
    return decoded


def test_a_notification_is_emitted_once_and_its_retries_are_duplicates() -> None:
    """The provider's retry of a notification, however soon, is dropped: one event each."""
    pipeline = new_pipeline()
    first = process(pipeline, DELIVERED, 0)
    assert isinstance(first, Emit)
    assert process(pipeline, DELIVERED, 1) is DUPLICATE  # in the same batch
    pipeline.commit()
    assert process(pipeline, DELIVERED, 2) is DUPLICATE  # in a later one


def test_an_aborted_batch_is_forgotten_so_its_records_are_emitted_again() -> None:
    """A batch whose transaction aborted wrote nothing: processed again, it emits again."""
    pipeline = new_pipeline()
    first = process(pipeline, DELIVERED)
    pipeline.abort()
    assert process(pipeline, DELIVERED) == first


def test_an_event_is_keyed_by_its_tracking_id_else_by_its_event_id() -> None:
    """All events of one message share a key (and so a partition); one without a tracking id
    is keyed by its event id."""
    pipeline = new_pipeline()
    tracked = process(pipeline, DELIVERED)
    assert isinstance(tracked, Emit)
    assert tracked.key == b"U01TXzkxMjM0NTY3"
    untracked = process(pipeline, load("v2/mms_mt_n003"), 1)  # a transcoding result
    assert isinstance(untracked, Emit)
    event_id = event(untracked)["event_id"]
    assert isinstance(event_id, str)
    assert untracked.key == event_id.encode()
    assert ("ce_id", untracked.key) in untracked.headers


def test_a_malformed_body_is_dead_lettered_once_with_its_reason() -> None:
    """A body that cannot be an event becomes one dead letter saying why; its retries are
    dropped like any duplicate."""
    pipeline = new_pipeline()
    letter = process(pipeline, b'{"origin": "SMS_MT"}')
    assert letter == DeadLetter("missing_code", "no code field")
    assert process(pipeline, b'{"origin": "SMS_MT"}', 1) is DUPLICATE


def test_a_failing_enrichment_is_dead_lettered_not_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug in enrichment must not stop the partition: the record is dead-lettered with the
    error named, and the records after it go on."""

    def broken(*_: object) -> None:
        raise KeyError("operator")

    pipeline = new_pipeline()
    monkeypatch.setattr(pipeline_module, "enrich", broken)
    letter = process(pipeline, DELIVERED)
    assert letter == DeadLetter(DeadLetterReason.ENRICH_FAILED.value, "KeyError: 'operator'")
    monkeypatch.undo()
    assert isinstance(process(pipeline, SENT, 1), Emit)


def test_the_final_event_carries_the_delivery_latency_of_its_message() -> None:
    """Sent, then delivered: the delivered event says how long delivery took, measured on the
    provider's timestamps; the sent event cannot know yet."""
    pipeline = new_pipeline()
    sent = event(process(pipeline, SENT, 0))
    delivered = event(process(pipeline, DELIVERED, 1))
    assert sent["delivery_latency_ms"] is None
    assert delivered["delivery_latency_ms"] == 7192  # 14:22:47.310552 - 14:22:40.118204
    assert delivered["delivery_latency_final_first"] is False


def test_a_final_that_overtook_its_sent_puts_the_latency_on_the_late_sent() -> None:
    """Delivered before sent (the sent was retried): the late sent event carries the latency,
    flagged, since the delivered event was already written."""
    pipeline = new_pipeline()
    delivered = event(process(pipeline, DELIVERED, 0))
    sent = event(process(pipeline, SENT, 1))
    assert delivered["delivery_latency_ms"] is None
    assert (sent["delivery_latency_ms"], sent["delivery_latency_final_first"]) == (7192, True)


def test_the_edges_receive_time_drives_the_state_and_the_record_time_stands_in() -> None:
    """The dedupe window runs on the edge's received-at header, which a restore reads back
    unchanged; a record without it falls back to its Kafka timestamp."""
    pipeline = new_pipeline()
    with_header = event(pipeline.process(SENT, 0, headers(RECEIVED_AT_MS), 5))
    without = event(pipeline.process(DELIVERED, 1, [], RECEIVED_AT_MS + 1000))
    assert with_header["received_at"] == "2024-03-05T14:22:50.000000Z"
    assert without["received_at"] == "2024-03-05T14:22:51.000000Z"
    assert pipeline.window.pending_delta().high_water_ms == RECEIVED_AT_MS + 1000


def test_an_event_records_where_its_raw_record_sits() -> None:
    """Lineage names the raw topic, partition and offset, so the original can be found."""
    lineage = event(new_pipeline().process(SENT, 981, headers(), 0))["lineage"]
    assert lineage == {"topic": "postbacks.raw", "partition": 2, "offset": 981}
