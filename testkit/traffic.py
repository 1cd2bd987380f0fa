"""Realistic raw-topic traffic for processor tests and benchmarks: distinct notifications,
provider retries, malformed bodies, written the way the edge writes them."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import orjson

from consumers.processor.identity import Identity, event_id
from consumers.processor.parse import Unparseable, parse
from ingest.records import build_record
from testkit.samples import all_malformed, all_valid

ProducerRecord = tuple[bytes | None, bytes, list[tuple[str, bytes]], int | None]

OPERATORS = [("0001470", "T-Mobile USA"), ("0001570", "Verizon"), ("0001140", "AT&T")]


def delivery_reports(count: int, seed: int = 7) -> list[bytes]:
    """`count` distinct v2 JSON MT notifications: sent/final pairs sharing a tracking id."""
    rng = random.Random(seed)
    bodies = []
    for n in range(count):
        message, leg = divmod(n, 2)
        operator_id, operator_name = OPERATORS[message % len(OPERATORS)]
        sms = message % 3 == 0
        final_code = rng.choice(["N202", "E202"] if sms else ["N102", "N103", "E102"])
        bodies.append(
            orjson.dumps(
                {
                    "origin": "SMS_MT" if sms else "MMS_MT",
                    "code": ("N201" if sms else "N101") if leg == 0 else final_code,
                    "status": "Sent" if leg == 0 else "Delivered",
                    "from": "60856",
                    "to": f"1415555{message % 10000:04d}",
                    "tracking-id": f"TRK{seed:03d}{message:08d}",
                    "operator-id": operator_id,
                    "operator-name": operator_name,
                    "timestamp": f"2024-03-05T14:{(message // 60) % 60:02d}:{message % 60:02d}"
                    f".{leg * 500000:06d}+00:00",
                }
            )
        )
    return bodies


def with_retries(bodies: list[bytes], ratio: float, seed: int = 11) -> list[bytes]:
    """The stream the provider sends: every body once, plus `ratio` of them again, later.

    Each retry goes to a uniformly drawn place after its body's first copy in the stream built
    so far (the same draws, hence the same stream for a seed, as inserting into a list), in
    O(n log n): a Fenwick tree counts what was inserted behind each original body, so finding a
    body and the place to insert is a tree walk, not a list scan.
    """
    rng = random.Random(seed)
    first: dict[bytes, int] = {}  # equal bodies are one body, found at its first index
    for index, body in enumerate(bodies):
        first.setdefault(body, index)
    behind: list[list[bytes]] = [[] for _ in bodies]  # retries between body i and body i + 1
    tree = _Fenwick([1] * len(bodies))  # body i and its retries: 1 + len(behind[i])
    length = len(bodies)
    for body in rng.sample(bodies, int(len(bodies) * ratio)):
        at = rng.randrange(tree.prefix(first[body]) + 1, length + 1)
        owner = tree.last_fitting(at - 1)  # the original body the new place follows
        behind[owner].insert(at - tree.prefix(owner) - 1, body)
        tree.add(owner, 1)
        length += 1
    return [copy for body, retries in zip(bodies, behind, strict=True) for copy in (body, *retries)]


class _Fenwick:
    """Prefix sums of non-negative weights with point updates, each in O(log n)."""

    def __init__(self, weights: list[int]) -> None:
        self._sums = [0, *weights]
        for index in range(1, len(self._sums)):
            parent = index + (index & -index)
            if parent < len(self._sums):
                self._sums[parent] += self._sums[index]

    def add(self, index: int, amount: int) -> None:
        index += 1
        while index < len(self._sums):
            self._sums[index] += amount
            index += index & -index

    def prefix(self, count: int) -> int:
        """The sum of the first `count` weights."""
        total = 0
        while count > 0:
            total += self._sums[count]
            count -= count & -count
        return total

    def last_fitting(self, limit: int) -> int:
        """The largest `count` whose prefix sum is at most `limit`."""
        count, step = 0, 1 << (len(self._sums) - 1).bit_length()
        while step:
            if count + step < len(self._sums) and self._sums[count + step] <= limit:
                count += step
                limit -= self._sums[count]
            step >>= 1
        return count


def hours_ago_ms(hours: float) -> int:
    """A receive time in the recent past. Raw records older than the topic's retention
    (7 days) may be deleted under the processor's feet, so tests never use older ones."""
    return int((time.time() - hours * 3600) * 1000)


def as_raw(bodies: list[bytes], received_at_ms: int, step_ms: int = 1) -> list[ProducerRecord]:
    """Raw records as the edge writes them, received `step_ms` apart from `received_at_ms`."""
    records: list[ProducerRecord] = []
    for n, body in enumerate(bodies):
        record = build_record(
            body,
            source="mt",
            received_at_ms=received_at_ms + n * step_ms,
            client_addr="203.0.113.5",
            request_id=f"req-{n}",
            content_type=b"application/json",
            user_agent=b"provider",
        )
        records.append((record.key, record.value, record.headers, record.timestamp_ms))
    return records


def expected_event_ids(bodies: list[bytes], identity: Identity | None = None) -> set[str]:
    """The event ids the processor must emit, once each, for these bodies."""
    identity = identity or Identity()
    ids = set()
    for body in bodies:
        try:
            ids.add(event_id(identity.digest(parse(body))))
        except Unparseable:
            continue
    return ids


@dataclass(frozen=True)
class Mix:
    bodies: list[bytes]  # what the provider sends, retries included
    event_ids: set[str]  # distinct notifications: one event each
    malformed: set[bytes]  # distinct malformed bodies: one dead letter each


def realistic_mix(distinct: int, retry_ratio: float = 0.1, seed: int = 7) -> Mix:
    """Delivery reports, every documented sample kind, and malformed bodies, with retries."""
    valid = delivery_reports(distinct, seed) + [body for _, body in all_valid()]
    malformed = [body for _, body in all_malformed()]
    bodies = with_retries(valid + malformed, retry_ratio, seed)
    return Mix(bodies, expected_event_ids(valid), set(malformed))
