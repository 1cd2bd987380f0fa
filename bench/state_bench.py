"""Micro-benchmark of the processor's in-memory state; prints one JSON line.

    python bench/state_bench.py [--keys 1000000]

Figures: bytes per dedupe key (tracemalloc, requested sizes; and RSS growth, which includes
allocator rounding), `seen_or_add` calls per second for new keys and for duplicates, the time to
restore a million keys (replay + commit every 10,000, as a rebuild does), and bytes per waiting
latency entry. Keys come from a seeded generator and event times are synthetic, so runs compare;
absolute speed swings with whatever else the machine is doing. Runs in ~10-20 s on one core.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from consumers.processor.latency import LatencyJoin
from consumers.processor.window import DIGEST_SIZE, DedupeWindow

_BASE_MS = 1_764_000_000_000
_WINDOW_MS = 6 * 60 * 60 * 1000
_LIVE_BATCH = 500
_RESTORE_BATCH = 10_000


def _times(count: int) -> list[int]:
    """Event times spread over 5 h, so every key stays inside a 6 h window."""
    step = 5 * 60 * 60 * 1000 / count
    return [_BASE_MS + int(i * step) for i in range(count)]


def _rss_bytes() -> int | None:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def _feed(window: DedupeWindow, keys: list[bytes], times: list[int], batch: int) -> float:
    """Seconds to pass every key through `seen_or_add`, committing every `batch` keys."""
    seen_or_add = window.seen_or_add
    commit = window.commit
    started = time.perf_counter()
    for start in range(0, len(keys), batch):
        for digest, event_time_ms in zip(
            keys[start : start + batch], times[start : start + batch], strict=True
        ):
            seen_or_add(digest, event_time_ms)
        commit()
    return time.perf_counter() - started


def window_bytes_per_key(count: int) -> dict[str, float]:
    """Traced bytes per key, keys created inside the trace as the runtime would hand them over."""
    rng = random.Random(1)
    times = _times(count)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    window = DedupeWindow(_WINDOW_MS, max_keys=count * 2)
    for start in range(0, count, _LIVE_BATCH):
        for event_time_ms in times[start : start + _LIVE_BATCH]:
            window.seen_or_add(rng.randbytes(DIGEST_SIZE), event_time_ms)
        window.commit()
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(window) == count
    return {
        "window_traced_bytes_per_key": round(traced / count, 1),
        "window_approx_bytes_per_key": round(window.approx_bytes() / count, 1),
    }


def window_speed(count: int) -> dict[str, float | None]:
    rng = random.Random(2)
    keys = [rng.randbytes(DIGEST_SIZE) for _ in range(count)]
    times = _times(count)
    gc.collect()
    rss_before = _rss_bytes()
    live = DedupeWindow(_WINDOW_MS, max_keys=count * 2)
    new_s = _feed(live, keys, times, _LIVE_BATCH)
    rss_after = _rss_bytes()
    duplicate_s = _feed(live, keys, times, _LIVE_BATCH)
    del live
    gc.collect()
    restored = DedupeWindow(_WINDOW_MS, max_keys=count * 2)
    restore_s = _feed(restored, keys, times, _RESTORE_BATCH)
    assert len(restored) == count
    rss_per_key = None
    if rss_before is not None and rss_after is not None:
        rss_per_key = round((rss_after - rss_before) / count, 1)  # keys pre-exist: add 64 each
    return {
        "window_rss_bytes_per_key_incl_key_object": (
            None if rss_per_key is None else rss_per_key + 64
        ),
        "window_new_keys_per_s": round(count / new_s),
        "window_duplicate_keys_per_s": round(count / duplicate_s),
        "window_restore_s_per_million": round(restore_s * 1_000_000 / count, 3),
    }


def latency_bytes_per_entry(count: int) -> dict[str, float]:
    """Traced bytes per waiting (unmatched) latency entry, tracking ids made inside the trace."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    join = LatencyJoin(max_age_ms=_WINDOW_MS, max_entries=count * 2)
    for i in range(count):
        event_time_ms = _BASE_MS + i
        join.observe_sent(f"TU1TXzcw{i:012d}", event_time_ms, event_time_ms)
        if i % _LIVE_BATCH == 0:
            join.commit()
    join.commit()
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(join) == count
    return {"latency_traced_bytes_per_entry": round(traced / count, 1)}


def latency_pairs_per_s(count: int) -> dict[str, float]:
    join = LatencyJoin(max_age_ms=_WINDOW_MS, max_entries=count * 2)
    ids = [f"TU1TXzcw{i:012d}" for i in range(count)]
    started = time.perf_counter()
    for i, tracking_id in enumerate(ids):
        event_time_ms = _BASE_MS + 10 * i
        join.observe_sent(tracking_id, event_time_ms, event_time_ms)
        join.observe_final(tracking_id, event_time_ms + 5, event_time_ms + 5)
        if i % _LIVE_BATCH == 0:
            join.commit()
    join.commit()
    return {"latency_pairs_per_s": round(count / (time.perf_counter() - started))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--latency-entries", type=int, default=200_000)
    args = parser.parse_args()
    result: dict[str, object] = {
        "bench": "state",
        "python": platform.python_version(),
        "keys": args.keys,
    }
    result.update(window_speed(args.keys))
    result.update(window_bytes_per_key(args.keys))
    result.update(latency_bytes_per_entry(args.latency_entries))
    result.update(latency_pairs_per_s(args.latency_entries))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
