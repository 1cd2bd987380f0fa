"""The processor's output does not change by accident: every byte it writes is pinned.

Sinks upsert on `event_id`, routers filter on CloudEvents headers, and a restarted instance
rebuilds its state from the changes earlier transactions wrote; a change to any of these bytes
is a change users see. This test runs realistic traffic (every sample, simulated v2 JSON and
v1 XML with retries and malformed bodies, and bodies that vary every field's shape) through
`PartitionPipeline` in two configurations and compares a digest of each stretch of its output
(event keys, values and headers; dead letters' reasons and details; duplicates; the encoded
state change of each commit) with `golden/pipeline.json`, written by the code of commit
a488e41 (main before the speed work). Each stretch is run twice, on cold and on warm
caches, which must agree.

When the output changes on purpose (a new event field, a fixed enrichment, a phonenumbers
update with new metadata), regenerate the file and say why in the commit:

    .venv/bin/python -m tests.unit.consumers.test_pipeline_golden
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import orjson

from consumers.events.model import INPUT_FORMATS
from consumers.processor.identity import Identity
from consumers.processor.latency import LatencyJoin
from consumers.processor.pipeline import DeadLetter, Duplicate, Emit, PartitionPipeline
from consumers.processor.privacy import Privacy
from consumers.processor.window import DedupeWindow
from ingest.records import build_record
from simulator.mix import MixSpec, generate
from testkit.samples import all_malformed, all_valid
from testkit.traffic import delivery_reports, with_retries

GOLDEN: Final = Path(__file__).parent / "golden" / "pipeline.json"
RECEIVED_AT_MS: Final = 1_709_648_570_000  # 2024-03-05T14:22:50Z, near the samples' times
STRETCH: Final = 500  # records per digest: a failure names the stretch that changed
COMMIT_EVERY: Final = 97  # records per commit (a prime: batches straddle stretches)
KEY: Final = b"golden-test-pseudonym-key-0123456789abcdef"

RawInput = tuple[bytes, bytes | None]  # body, content type


def configurations() -> dict[str, PartitionPipeline]:
    """Fresh pipelines of the two shapes a deployment takes: the defaults (pseudonyms, no
    content, canonical identity), and numbers and content published with a field identity."""
    return {
        "default": PartitionPipeline(
            "postbacks.raw",
            3,
            identity=Identity(),
            window=DedupeWindow(),
            latency=LatencyJoin(),
            privacy=Privacy(KEY, include_content=False),
        ),
        "published": PartitionPipeline(
            "postbacks.raw",
            3,
            identity=Identity.from_fields("origin,tracking-id,code,status"),
            window=DedupeWindow(),
            latency=LatencyJoin(),
            privacy=Privacy(None, include_content=True),
        ),
    }


# ------------------------------------------------------------------------------ the traffic

_TEXT_VALUES: Final[tuple[object, ...]] = (
    "Delivered",
    "",
    " padded ",
    "Message Sent/Expired",
    "message rejected",
    31002,
    -7,
    2.5,
    True,
    False,
    None,
    ["a", "b"],
    {"nested": "x"},
    "Café ☕ <&>",
)
_NUMBERS: Final[tuple[object, ...]] = (
    "14155550123",
    "+1 (415) 555-0123",
    "0044 20 7946 0958",
    "447700900123",
    "60856",
    "123",
    "123456",
    "1234567",
    "4155550123",
    "001-415-555-0123",
    "+44 7700 900123",
    "33612345678",
    "81312345678",
    "5511987654321",
    "61412345678",
    "7 912 345-67-89",
    "12425550123",
    "18005550199",
    "19005550123",
    "1-800-FLOWERS",
    "ACMEALERTS",
    "Acme-2FA",
    "",
    "  ",
    "00",
    "+",
    "4915123456789",
    "861012345678",
    "99999999999",
    "1" * 40,
    "12345678901234567890123456789012345",
    "٤١٥٥٥٥٠١٢٣",
    14155550123,
    ["14155550123", "60856"],
    None,
)
_TIMESTAMPS: Final[tuple[object, ...]] = (
    "2024-03-05T14:22:47.310552+00:00",
    "2024-03-05T14:22:47Z",
    "2024-03-05T14:22:47.3+00:00",
    "2024-03-05T09:22:47-05:00",
    "2024-03-05T14:22:47",
    "2024-03-05 14:22:47+01:00",
    "20240305T142247Z",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59.999999-01:00",
    "not a time",
    "",
    1709648567,
    None,
)
_ORIGINS: Final = ("SMS_MT", "MMS_MT", " sms_mt ", "SMS_MO", "MMS_MO", "SUB", "NEW_ORIGIN")
_CODES: Final = ("N101", "N102", "n102 ", "N201", "N202", "E202", "E502", "N003", "X999", "E77")
_CONTENT: Final[tuple[object, ...]] = (
    [{"file": "https://x.example/a.jpg"}],
    [{"file": "a"}, "b", {"other": "c"}],
    [{"file": 1}],
    "https://x.example/a.jpg",
    [],
    None,
)


def varied_bodies(count: int, seed: int) -> list[bytes]:
    """JSON bodies whose fields take every shape enrichment reads differently: numbers in every
    notation, timestamps with and without offsets, wrong types, unknown and aliased keys."""
    rng = random.Random(seed)
    bodies = []
    for n in range(count):
        document: dict[str, object] = {
            "origin": rng.choice(_ORIGINS),
            "code": rng.choice(_CODES),
        }
        for name in ("status", "status-details", "sent-as", "operator-id", "message-text"):
            if rng.random() < 0.6:
                document[name] = rng.choice(_TEXT_VALUES)
        for name in ("from", "to"):
            if rng.random() < 0.9:
                document[name] = rng.choice(_NUMBERS)
        if rng.random() < 0.9:
            document["timestamp"] = rng.choice(_TIMESTAMPS)
        if rng.random() < 0.8:
            tracking = f"VAR{seed}-{n // 2}"
            document["trackingid" if rng.random() < 0.1 else "tracking-id"] = tracking
        if rng.random() < 0.2:
            document["content"] = rng.choice(_CONTENT)
        if rng.random() < 0.1:
            document["copy-to"] = [{"number": rng.choice(_NUMBERS)}, "60856"]
        if rng.random() < 0.2:
            document[rng.choice(("mobile", "email", "x-custom", "reference-value"))] = rng.choice(
                _NUMBERS
            )
        keys = list(document)
        if rng.random() < 0.3:
            rng.shuffle(keys)
        bodies.append(orjson.dumps({key: document[key] for key in keys}))
    return bodies


def traffic() -> list[RawInput]:
    """What the pipeline is fed: samples first, then simulated and varied traffic, retried."""
    samples: list[RawInput] = [(body, None) for _, body in all_valid() + all_malformed()]
    simulated = [
        (postback.body, postback.content_type.encode())
        for seed, xml_share in ((3, 0.1), (4, 0.6))
        for postback in generate(
            MixSpec(count=4000, seed=seed, xml_share=xml_share, malformed_share=0.03)
        )
    ]
    varied = [(body, b"application/json") for body in varied_bodies(2500, seed=5)]
    reports = [(body, b"application/json") for body in delivery_reports(2000, seed=6)]
    distinct = samples + simulated + varied + reports
    joined = with_retries([_joined(item) for item in distinct], ratio=0.1, seed=8)
    return [_split(body) for body in joined]


def _joined(item: RawInput) -> bytes:
    """One body with its content type, so that `with_retries` (over bytes) keeps them together."""
    body, content_type = item
    return (content_type or b"-") + b"\n" + body


def _split(joined: bytes) -> RawInput:
    content_type, _, body = joined.partition(b"\n")
    return body, None if content_type == b"-" else content_type


# ---------------------------------------------------------------------------------- the run


def transcript(pipeline: PartitionPipeline, inputs: list[RawInput]) -> Iterator[bytes]:
    """One line per record (its disposition, every byte written) and one per commit (the
    encoded state change), as the runtime would write them."""
    for result in dispositions(pipeline, inputs):
        if type(result) is Emit:
            headers = b"".join(
                b"\t%s=%s" % (name.encode(), value) for name, value in result.headers
            )
            yield b"E %s %s%s" % (result.key, result.value, headers)
        elif type(result) is DeadLetter:
            yield b"D %s %s" % (result.reason.encode(), result.detail.encode())
        elif type(result) is bytes:
            yield b"S " + result
        else:
            yield b"-"


def dispositions(
    pipeline: PartitionPipeline, inputs: list[RawInput]
) -> Iterator[Emit | DeadLetter | Duplicate | bytes]:
    """What `pipeline` makes of each input, as raw records the edge wrote, and the encoded
    state change of each commit (bytes), in order."""
    for offset, (body, content_type) in enumerate(inputs):
        received_at_ms = RECEIVED_AT_MS + offset * 37
        record = build_record(
            body,
            source="mt" if offset % 5 else "Skycore Prod/ü",
            received_at_ms=received_at_ms,
            client_addr="203.0.113.5",
            request_id=f"req-{offset}",
            content_type=content_type,
            user_agent=b"provider",
        )
        yield pipeline.process(body, offset, record.headers, received_at_ms)
        if offset % COMMIT_EVERY == COMMIT_EVERY - 1:
            yield pipeline.pending_state().encode()
            pipeline.commit()
    yield pipeline.pending_state().encode()
    pipeline.commit()


def stretch_digests(lines: Iterator[bytes]) -> list[str]:
    """A SHA-256 per STRETCH records (state lines count with the records before them)."""
    digests = []
    digest = hashlib.sha256()
    records = 0
    for line in lines:
        digest.update(line + b"\n")
        if not line.startswith(b"S "):
            records += 1
            if records % STRETCH == 0:
                digests.append(digest.hexdigest()[:16])
                digest = hashlib.sha256()
    digests.append(digest.hexdigest()[:16])
    return digests


def measured() -> dict[str, list[str]]:
    inputs = traffic()
    return {
        name: stretch_digests(transcript(pipeline, inputs))
        for name, pipeline in configurations().items()
    }


# -------------------------------------------------------------------------------- the tests


def test_the_processor_writes_exactly_the_bytes_it_wrote_before() -> None:
    """Every event, header, dead letter, duplicate and state change is byte-identical to the
    golden run's, on cold caches and again on warm ones."""
    golden = orjson.loads(GOLDEN.read_bytes())
    for attempt in ("cold caches", "warm caches"):
        got = measured()
        assert got.keys() == golden.keys()
        for name, digests in got.items():
            changed = [
                n for n, (a, b) in enumerate(itertools.zip_longest(digests, golden[name])) if a != b
            ]
            assert not changed, (
                f"{name} configuration, {attempt}: output differs in records "
                + ", ".join(f"{n * STRETCH}-{(n + 1) * STRETCH - 1}" for n in changed[:5])
            )


def test_the_traffic_exercises_every_disposition() -> None:
    """The golden traffic holds events of every input format, dead letters of every reason
    the parser gives, and duplicates."""
    results = list(dispositions(configurations()["default"], traffic()))
    events = [orjson.loads(result.value) for result in results if type(result) is Emit]
    assert {event["input_format"] for event in events} == set(INPUT_FORMATS)
    reasons = {result.reason for result in results if type(result) is DeadLetter}
    assert reasons >= {"invalid_json", "invalid_xml", "missing_origin", "empty_body"}
    assert any(type(result) is Duplicate for result in results)


if __name__ == "__main__":
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_bytes(orjson.dumps(measured(), option=orjson.OPT_INDENT_2) + b"\n")
    print(f"wrote {GOLDEN}")
