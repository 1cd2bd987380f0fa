"""B7's other side: the same dedupe job written as a quixstreams application.

    python -m bench.quix_job   (run by `python -m bench.quix`; SIGTERM stops it)

Reads KAFKA_BOOTSTRAP_SERVERS and BENCH_QUIX_RAW (the raw topic), BENCH_QUIX_OUT (its output
topic, created with BENCH_QUIX_PARTITIONS partitions), BENCH_QUIX_GROUP (its consumer group),
BENCH_QUIX_STATE_DIR (RocksDB's directory) and BENCH_QUIX_COMMIT_INTERVAL_S. quixstreams is an
optional dependency for benchmarks (`pip install -e '.[bench]'`), imported only when the job
runs, so nothing else needs it.

The job, as one would write it with quixstreams: exactly-once, its default state (RocksDB,
backed by a changelog topic), one stateful step per record within the message key's state
(the edge's key, the tracking id), then a filter and `to_topic`. Its dedupe identity matches
the processor's where the processor's is cheap to copy: a JSON object's canonical form (keys
sorted, no spaces) hashed to 16 bytes; anything else (v1 XML, malformed bodies) by its exact
bytes, which for retries of the same bytes decides the same way. A JSON notification is
emitted with three fields added (`event_id`, `received_at`, `source`, from the digest and the
edge's headers); any other body is passed on unchanged, so that both sides write one record
per distinct notification (the processor: an event, or a dead letter).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from hashlib import blake2b
from typing import Any, Final, Protocol

import orjson

DIGEST_SIZE: Final = 16
_SEEN: Final = 1  # what the state holds per identity: only its presence counts


class SeenState(Protocol):
    """The part of a quixstreams `State` the step uses: get and set of one key's values."""

    def get(self, key: Any, default: Any = None) -> Any: ...

    def set(self, key: Any, value: Any) -> None: ...


def _header(headers: Sequence[tuple[str, bytes]] | None, name: str) -> bytes | None:
    for key, value in headers or ():
        if key == name:
            return value
    return None


def dedupe(
    value: bytes,
    key: object,
    timestamp: int,
    headers: Sequence[tuple[str, bytes]] | None,
    state: SeenState,
) -> bytes | None:
    """The record to emit for this raw value, or None for one whose identity the message
    key's state holds already. quixstreams calls it with the record's metadata and state."""
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError:
        document = None
    if isinstance(document, dict):
        digest = blake2b(
            orjson.dumps(document, option=orjson.OPT_SORT_KEYS), digest_size=DIGEST_SIZE
        )
    else:
        digest = blake2b(value, digest_size=DIGEST_SIZE, person=b"raw")
    identity = digest.hexdigest()
    if state.get(identity) is not None:
        return None
    state.set(identity, _SEEN)
    if not isinstance(document, dict):
        return value
    received_at = _header(headers, "received-at")
    source = _header(headers, "source")
    document["event_id"] = identity
    document["received_at"] = int(received_at) if received_at else None
    document["source"] = source.decode() if source is not None else None
    return orjson.dumps(document)


def _emitted(value: bytes | None) -> bool:
    return value is not None


def main() -> None:
    """Build the application from the environment and run it until SIGTERM."""
    from quixstreams import Application
    from quixstreams.models.topics import TopicConfig

    env = os.environ
    app = Application(
        broker_address=env["KAFKA_BOOTSTRAP_SERVERS"],
        consumer_group=env["BENCH_QUIX_GROUP"],
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once",
        commit_interval=float(env["BENCH_QUIX_COMMIT_INTERVAL_S"]),
        state_dir=env["BENCH_QUIX_STATE_DIR"],
        loglevel="WARNING",
    )
    raw = app.topic(env["BENCH_QUIX_RAW"], key_deserializer="bytes", value_deserializer="bytes")
    out = app.topic(
        env["BENCH_QUIX_OUT"],
        key_serializer="bytes",
        value_serializer="bytes",
        # As many partitions as the raw topic, as the processor's events topic has.
        config=TopicConfig(num_partitions=int(env["BENCH_QUIX_PARTITIONS"]), replication_factor=1),
    )
    stream = app.dataframe(raw)
    stream = stream.apply(dedupe, stateful=True, metadata=True)
    stream = stream.filter(_emitted)
    stream.to_topic(out)
    app.run()


if __name__ == "__main__":
    main()
