"""Where a processor pass's CPU goes: the pipeline alone, without Kafka, and a cProfile of a
pass as time per record. B3 and B7 use it to explain their figures."""

from __future__ import annotations

import cProfile
import gc
import pstats
import time
from hashlib import blake2b
from pathlib import Path
from typing import Any

from consumers.processor.pipeline import PartitionPipeline
from consumers.settings import ProcessorSettings
from testkit.kafka_tools import ProducerRecord


def pipeline_alone(records: list[ProducerRecord], settings: ProcessorSettings) -> dict[str, float]:
    """Per-record CPU of the processor's pipeline and of the bare dedupe, no Kafka at all."""
    pipeline = PartitionPipeline.from_settings(settings, "bench.raw", 0)
    gc.collect()
    started = time.perf_counter()
    for offset, (_, value, headers, timestamp) in enumerate(records):
        pipeline.process(value, offset, headers, timestamp or 0)
        if offset % settings.commit_max_records == settings.commit_max_records - 1:
            pipeline.commit()
    pipeline.commit()
    pipeline_s = time.perf_counter() - started
    seen: set[bytes] = set()
    started = time.perf_counter()
    for _, value, _, _ in records:
        digest = blake2b(value, digest_size=16).digest()
        if digest not in seen:
            seen.add(digest)
    dedupe_s = time.perf_counter() - started
    return {
        "records": len(records),
        "pipeline_us_per_record": pipeline_s / len(records) * 1e6,
        "bare_dedupe_us_per_record": dedupe_s / len(records) * 1e6,
    }


def profile_report(profile: cProfile.Profile, records: int) -> dict[str, Any]:
    """The functions that took the most time, own and cumulative, per record processed.

    cProfile slows Python code unevenly, so read shares, not absolute times."""
    stats = pstats.Stats(profile)
    entries: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]  # untyped internals
    total_s = sum(entry[2] for entry in entries.values())

    def label(func: tuple[str, int, str]) -> str:
        path, line, name = func
        short = "/".join(Path(path).parts[-2:]) if path != "~" else "builtin"
        return f"{short}:{line}:{name}"

    by_own = sorted(entries.items(), key=lambda item: item[1][2], reverse=True)[:25]
    by_cumulative = sorted(entries.items(), key=lambda item: item[1][3], reverse=True)[:40]
    return {
        "profiled_seconds": round(total_s, 2),
        "columns": ["us_per_record", "calls_per_record"],
        "own_time": {
            label(func): [round(entry[2] / records * 1e6, 2), round(entry[1] / records, 3)]
            for func, entry in by_own
        },
        "cumulative_time": {
            label(func): [round(entry[3] / records * 1e6, 2), round(entry[1] / records, 3)]
            for func, entry in by_cumulative
        },
    }
