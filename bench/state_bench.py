"""The processor's in-memory state: the packed dedupe window against the set window it replaced,
measured in the same run; prints one JSON document.

    python -m bench.state_bench [--keys 1000000] [--large-keys 10000000] [--no-large]

What is measured
----------------
- memory, at `--keys` and `--large-keys` keys per window: each structure in a fresh process
  (so RSS growth is the structure's own), after a small warm-up window has run every code path
  once (numpy's kernels are code pages touched on first use, a constant per process). Keys are
  made as the runtime hands them over (a new 16-byte `bytes` per record, dropped by the
  caller), event times advance so that one window holds exactly that many keys, and a commit
  follows every 500 records. RSS growth over the process's RSS before the window existed, per
  key in the window: after filling one window (`fill`); then under churn, slots expiring while
  keys keep arriving, for 1.5 windows more, sampled every 10,000 keys (`steady_median`,
  `steady_max`: the figures that count); and the peak (VmHWM, which includes the transient of
  a merge or a commit).
- speed, at `--keys` keys spread over 5 h (all inside a 6 h window), median of `--rounds`
  fresh processes per structure, alternating: `seen_or_add` calls per second for new keys,
  then for the same keys again (duplicates), a commit every 500 calls as the processor's
  batches do; replay (`seen_or_add` + commit every 10,000 keys, as the runtime's restore does
  without parsing); for the packed window also `seen_or_add_many` (the batch form), and the
  packed window with its slot mask disabled (`runs-unmasked`: what the mask saves).
- changelog (the packed window only; the set window had none), at both sizes: a live window's
  `pending_delta()` + encode per batch of 500 (cost per key) and a rebuild from those deltas;
  or its `snapshot()`, encode, decode and a rebuild from the snapshot. A rebuild is decode +
  `apply_delta` + the first lookup (which merges what was applied), beside the live window and
  the records; its peak is the RSS it adds (freed memory it reuses included). The set window's
  only way to rebuild, replay, is the baseline (`ratio_to_set_replay`).
- tracemalloc bytes per key at `--keys` (requested sizes, the structure's own).

Keys come from a seeded generator and event times are synthetic, so runs compare; absolute
speed swings with whatever else the machine is doing, so read the ratios. The set window is
kept below, as it was, as the baseline. Runs in about ten minutes, ~2 GB at 10 M keys.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from consumers.processor import runs
from consumers.processor.delta import decode, encode
from consumers.processor.latency import LatencyJoin
from consumers.processor.runs import PREFIX_BITS
from consumers.processor.window import DIGEST_SIZE, SLOTS_PER_WINDOW, DedupeWindow

_BASE_MS: Final = 1_764_000_000_000
_WINDOW_MS: Final = 6 * 60 * 60 * 1000
_LIVE_BATCH: Final = 500
_RESTORE_BATCH: Final = 10_000
_CHUNK: Final = 10_000
_CHURN_WINDOWS: Final = 1.5
STRUCTURES: Final = ("sets", "runs")
SOURCES: Final = ("deltas", "snapshot")  # what a rebuild of the packed window reads


class SetWindow:
    """The dedupe window as it was before the packed runs (a set of `bytes` per slot), kept as
    the baseline: same contract, same answers, no changelog."""

    def __init__(self, window_ms: int, max_keys: int) -> None:
        self._window_ms = window_ms
        self._slot_ms = -(-window_ms // SLOTS_PER_WINDOW)
        self._max_keys = max_keys
        self._slots: dict[int, set[bytes]] = {}
        self._pending: dict[bytes, int] = {}
        self._committed_count = 0
        self._high_water_ms = self._committed_high_water_ms = -(1 << 63)
        self._live_from_ms = self._next_horizon_ms = -(1 << 63)
        self._live_sets: list[set[bytes]] = []
        self._recompute_live()

    def seen_or_add(self, digest: bytes, event_time_ms: int) -> bool:
        if len(digest) != DIGEST_SIZE:
            raise ValueError(f"digest must be {DIGEST_SIZE} bytes, got {len(digest)}")
        if event_time_ms > self._high_water_ms:
            self._high_water_ms = event_time_ms
            if event_time_ms >= self._next_horizon_ms:
                self._recompute_live()
        pending_time_ms = self._pending.get(digest)
        if pending_time_ms is not None and pending_time_ms >= self._live_from_ms:
            return True
        for keys in self._live_sets:
            if digest in keys:
                return True
        if event_time_ms >= self._live_from_ms:
            self._pending[digest] = event_time_ms
        return False

    def commit(self) -> None:
        slots = self._slots
        slot_ms = self._slot_ms
        current_id: int | None = None
        current: set[bytes] = set()
        for digest, event_time_ms in self._pending.items():
            slot_id = event_time_ms // slot_ms
            if slot_id != current_id:
                current_id = slot_id
                current = slots.setdefault(slot_id, set())
            current.add(digest)
        self._pending.clear()
        first_live_id = self._live_from_ms // slot_ms
        for slot_id in [slot_id for slot_id in slots if slot_id < first_live_id]:
            del slots[slot_id]
        self._committed_count = sum(len(keys) for keys in slots.values())
        while self._committed_count > self._max_keys:  # the cap; never fires in this bench
            oldest = slots.pop(min(slots))
            self._committed_count -= len(oldest)
        self._committed_high_water_ms = self._high_water_ms
        self._recompute_live()

    def abort(self) -> None:
        self._pending.clear()
        self._high_water_ms = self._committed_high_water_ms
        self._recompute_live()

    def __len__(self) -> int:
        return self._committed_count + len(self._pending)

    def approx_bytes(self) -> int:
        tables = sum(sys.getsizeof(keys) for keys in self._slots.values())
        return tables + sys.getsizeof(self._pending) + 96 * len(self._pending) + 64 * len(self)

    def _recompute_live(self) -> None:
        first_live_id = (self._high_water_ms - self._window_ms) // self._slot_ms
        self._live_from_ms = first_live_id * self._slot_ms
        self._next_horizon_ms = self._live_from_ms + self._slot_ms + self._window_ms
        self._live_sets = [
            self._slots[slot_id]
            for slot_id in sorted(self._slots, reverse=True)
            if slot_id >= first_live_id
        ]


class Window(Protocol):
    def seen_or_add(self, digest: bytes, event_time_ms: int) -> bool: ...
    def commit(self) -> None: ...
    def __len__(self) -> int: ...
    def approx_bytes(self) -> int: ...


class UnmaskedWindow(DedupeWindow):
    """The packed window with its slot mask answering "maybe" for every run: a lookup of a
    new key then reads every live run, as it would without the mask. What the mask saves."""

    __slots__ = ()

    def _recompute_live(self) -> None:
        super()._recompute_live()
        self._mask_table, self._mask_shift = bytearray(b"\xff"), PREFIX_BITS


def make(structure: str, max_keys: int) -> Window:
    if structure == "sets":
        return SetWindow(_WINDOW_MS, max_keys)
    if structure == "runs-unmasked":
        return UnmaskedWindow(_WINDOW_MS, max_keys)
    return DedupeWindow(_WINDOW_MS, max_keys)


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def _rss_bytes() -> int | None:
    try:
        return _status_kb("VmRSS") * 1024
    except (OSError, LookupError):
        return None


def _key_chunks(seed: int, count: int) -> Iterator[list[bytes]]:
    """`count` random digests, made a chunk at a time so the caller holds only one chunk."""
    rng = np.random.default_rng(seed)
    for start in range(0, count, _CHUNK):
        size = min(_CHUNK, count - start)
        raw = rng.bytes(size * DIGEST_SIZE)
        yield [raw[i : i + DIGEST_SIZE] for i in range(0, len(raw), DIGEST_SIZE)]


def _times(count: int, span_ms: float = 5 * 60 * 60 * 1000, start: int = 0) -> list[int]:
    step = span_ms / count
    return [_BASE_MS + int((start + i) * step) for i in range(count)]


def _feed(window: Window, keys: list[bytes], times: list[int], batch: int) -> float:
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


def _feed_many(window: DedupeWindow, keys: list[bytes], times: list[int], batch: int) -> float:
    """As `_feed`, with `seen_or_add_many` per batch."""
    started = time.perf_counter()
    for start in range(0, len(keys), batch):
        window.seen_or_add_many(keys[start : start + batch], times[start : start + batch])
        window.commit()
    return time.perf_counter() - started


# -- measurements run in a child process (one structure each) ------------------------------


def child_memory(structure: str, keys_per_window: int) -> dict[str, Any]:
    """RSS growth per in-window key: after one window, under churn, and at the peak."""
    _warm_up(structure)
    base = _rss_bytes() or 0
    window = make(structure, max_keys=keys_per_window * 4)
    step_ms = _WINDOW_MS / keys_per_window
    total = int(keys_per_window * (1 + _CHURN_WINDOWS))
    fed = 0
    fill = 0
    steady: list[int] = []
    for chunk in _key_chunks(3, total):
        times = [_BASE_MS + int((fed + i) * step_ms) for i in range(len(chunk))]
        _feed(window, chunk, times, _LIVE_BATCH)
        fed += len(chunk)
        del chunk, times
        rss = _rss_bytes() or 0
        if fed == keys_per_window:
            fill = rss - base
        elif fed > keys_per_window:
            steady.append(rss - base)
    peak = _status_kb("VmHWM") * 1024 - base
    return {
        "keys_per_window": keys_per_window,
        "fill": round(fill / keys_per_window, 1),
        "steady_median": round(statistics.median(steady) / keys_per_window, 1),
        "steady_max": round(max(steady) / keys_per_window, 1),
        "peak": round(peak / keys_per_window, 1),
        "approx_bytes_per_key_held": round(window.approx_bytes() / len(window), 1),
        "keys_held_at_end": len(window),
    }


def _warm_up(structure: str) -> None:
    """Run every code path once on a small window, so that the code pages and caches it
    touches the first time (numpy's sort and search kernels: ~13 MB here) are not counted
    as memory of the keys measured next."""
    warm = make(structure, max_keys=1 << 20)
    count = 30_000
    step_ms = 3 * _WINDOW_MS / count
    for chunk in _key_chunks(9, count):
        _feed(warm, chunk, [_BASE_MS + int(i * step_ms) for i in range(len(chunk))], _LIVE_BATCH)
    del warm
    gc.collect()


def child_speed(structure: str, count: int) -> dict[str, Any]:
    """seen_or_add (and seen_or_add_many) per second, new and duplicate keys."""
    keys = _all_keys(2, count)
    times = _times(count)
    gc.collect()
    result: dict[str, Any] = {}
    window = make(structure, max_keys=count * 2)
    result["new_per_s"] = round(count / _feed(window, keys, times, _LIVE_BATCH))
    result["duplicate_per_s"] = round(count / _feed(window, keys, times, _LIVE_BATCH))
    del window
    gc.collect()
    replayed = make(structure, max_keys=count * 2)
    result["replay_rebuild_keys_per_s"] = round(
        count / _feed(replayed, keys, times, _RESTORE_BATCH)
    )
    del replayed
    if structure == "runs":  # what only the packed window has
        gc.collect()
        batched = DedupeWindow(_WINDOW_MS, count * 2)
        result["many_new_per_s"] = round(count / _feed_many(batched, keys, times, _LIVE_BATCH))
        result["many_duplicate_per_s"] = round(
            count / _feed_many(batched, keys, times, _LIVE_BATCH)
        )
    return result


def _all_keys(seed: int, count: int) -> list[bytes]:
    return [digest for chunk in _key_chunks(seed, count) for digest in chunk]


def child_changelog(source: str, count: int) -> dict[str, Any]:
    """A live window's deltas, or its snapshot, and a rebuild from them. The rebuild runs
    beside the live window and the records (as a restarted processor holds the records it
    read), and its peak is the RSS it adds at its highest."""
    keys = _all_keys(2, count)
    times = _times(count)
    live = DedupeWindow(_WINDOW_MS, count * 2)
    records: list[bytes] = []
    delta_s = 0.0
    for start in range(0, count, _LIVE_BATCH):
        for digest, event_time_ms in zip(
            keys[start : start + _LIVE_BATCH], times[start : start + _LIVE_BATCH], strict=True
        ):
            live.seen_or_add(digest, event_time_ms)
        started = time.perf_counter()
        records.append(encode(live.pending_delta()))
        delta_s += time.perf_counter() - started
        live.commit()
    figures: dict[str, Any] = {}
    if source == "deltas":
        figures["pending_delta_and_encode_us_per_key"] = round(delta_s * 1e6 / count, 3)
        figures["live_deltas"] = len(records)
    else:
        records.clear()
        started = time.perf_counter()
        parts = live.snapshot()
        figures["snapshot_keys_per_s"] = round(count / (time.perf_counter() - started))
        started = time.perf_counter()
        records = [encode(part) for part in parts]
        figures["encode_keys_per_s"] = round(count / (time.perf_counter() - started))
        started = time.perf_counter()
        for record in records:
            decode(record)
        figures["decode_keys_per_s"] = round(count / (time.perf_counter() - started))
        figures["snapshot_parts"] = len(records)
        del parts
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM restarts from the current RSS
    before = _rss_bytes() or 0
    window = DedupeWindow(_WINDOW_MS, count * 2)
    started = time.perf_counter()
    for record in records:
        window.apply_delta(decode(record))
    window.seen_or_add(keys[0], times[-1])  # the first lookup merges what was applied
    elapsed = time.perf_counter() - started
    peak = _status_kb("VmHWM") * 1024 - before
    settled = (_rss_bytes() or 0) - before
    assert len(window) == count
    figures["rebuild_keys_per_s"] = round(count / elapsed)
    figures["rebuild_peak_bytes_per_key"] = round(peak / count, 1)
    figures["rebuilt_bytes_per_key"] = round(settled / count, 1)
    return figures


def child_traced(structure: str, count: int) -> dict[str, Any]:
    """tracemalloc bytes per key, keys made inside the trace as the runtime hands them over.
    tracemalloc does not see memory maps, so here runs stay on the heap whatever their size."""
    runs.MAPPED_RUN_BYTES = 1 << 62  # type: ignore[misc]  # a measurement setting, not a constant
    times = _times(count)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    window = make(structure, max_keys=count * 2)
    fed = 0
    for chunk in _key_chunks(1, count):
        _feed(window, chunk, times[fed : fed + len(chunk)], _LIVE_BATCH)
        fed += len(chunk)
    del chunk
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(window) == count
    return {
        "traced_bytes_per_key": round(traced / count, 1),
        "approx_bytes_per_key": round(window.approx_bytes() / count, 1),
    }


_CHILDREN: Final[dict[str, Callable[[str, int], dict[str, Any]]]] = {
    "changelog": child_changelog,
    "memory": child_memory,
    "speed": child_speed,
    "traced": child_traced,
}


def in_child(what: str, structure: str, count: int) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter and return its figures."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.state_bench", "--child", what, structure, str(count)],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        check=True,
    )
    figures: dict[str, Any] = json.loads(done.stdout)
    return figures


def compare(
    what: str, count: int, rounds: int = 1, structures: tuple[str, ...] = STRUCTURES
) -> dict[str, Any]:
    """The measurement for each structure (the median of `rounds`, which alternate the
    structures so that drift in machine load hits all), and ratios against the set window."""
    runs: dict[str, list[dict[str, Any]]] = {structure: [] for structure in structures}
    for _ in range(rounds):
        for structure in structures:
            runs[structure].append(in_child(what, structure, count))
    figures: dict[str, Any] = {
        structure: {name: statistics.median(run[name] for run in results) for name in results[0]}
        for structure, results in runs.items()
    }
    old = figures["sets"]
    for structure in structures[1:]:
        new = figures[structure]
        figures[f"ratio_{structure}_to_sets"] = {
            name: round(new[name] / old[name], 3)
            for name in old
            if name in new and name != "keys_per_window" and old[name]
        }
    return figures


# -- what bench.memory and bench.processor read (the packed window) --------------------------


def window_bytes_per_key(count: int) -> dict[str, float]:
    figures = in_child("traced", "runs", count)
    return {
        "window_traced_bytes_per_key": figures["traced_bytes_per_key"],
        "window_approx_bytes_per_key": figures["approx_bytes_per_key"],
    }


def window_speed(count: int) -> dict[str, float | None]:
    memory = in_child("memory", "runs", count)
    speed = in_child("speed", "runs", count)
    return {
        "window_rss_bytes_per_key_incl_key_object": memory["steady_median"],
        "window_new_keys_per_s": speed["new_per_s"],
        "window_duplicate_keys_per_s": speed["duplicate_per_s"],
        "window_restore_s_per_million": round(1e6 / speed["replay_rebuild_keys_per_s"], 3),
    }


# -- the latency join, unchanged -------------------------------------------------------------


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
    parser.add_argument("--large-keys", type=int, default=10_000_000)
    parser.add_argument("--no-large", action="store_true", help="skip the --large-keys run")
    parser.add_argument("--rounds", type=int, default=3, help="speed runs per structure")
    parser.add_argument("--latency-entries", type=int, default=200_000)
    parser.add_argument("--child", nargs=3, metavar=("WHAT", "STRUCTURE", "COUNT"))
    args = parser.parse_args()
    if args.child:
        what, structure, count = args.child
        print(json.dumps(_CHILDREN[what](structure, int(count))))
        return
    result: dict[str, Any] = {
        "bench": "state",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpus": os.cpu_count(),
        "keys": args.keys,
        "speed": compare("speed", args.keys, args.rounds, (*STRUCTURES, "runs-unmasked")),
        "memory": {str(args.keys): compare("memory", args.keys)},
        "traced": compare("traced", args.keys),
    }
    sizes = [args.keys] if args.no_large else [args.keys, args.large_keys]
    if not args.no_large:
        result["memory"][str(args.large_keys)] = compare("memory", args.large_keys)
    replay = result["speed"]["sets"]["replay_rebuild_keys_per_s"]
    result["changelog"] = {}
    for count in sizes:
        for source in SOURCES:
            figures = in_child("changelog", source, count)
            figures["ratio_to_set_replay"] = round(figures["rebuild_keys_per_s"] / replay, 1)
            result["changelog"].setdefault(str(count), {})[source] = figures
    result.update(latency_bytes_per_entry(args.latency_entries))
    result.update(latency_pairs_per_s(args.latency_entries))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
