"""B6 state at scale: how fast a restarted processor has its partitions back, and how much
memory a dedupe key costs the process, with millions of keys in the windows.

    python -m bench.state [--keys 2200000]

On a fresh local broker (or KAFKA_BOOTSTRAP_SERVERS): `--keys` distinct realistic postbacks
(the simulator's mix: delivery reports with their sent and final legs, inbound messages, v1
XML, malformed bodies), written to the raw topic as the edge writes them, received within the
last hour, are processed by `python -m consumers.processor` as a process. Then:

- memory: the processor's RSS once it has processed them all and then run idle past its
  periodic trim (what it holds in steady operation, not the garbage of the burst it is about
  to give back), minus its RSS idle before, per dedupe key held;
- rebuild from the state topic: the processor stopped and started again; the time from the
  spawn to every partition open (its /readyz lists them all), per million keys;
- the baseline, rebuild from the raw topic: the same with a state topic of a new name, empty,
  so the processor falls back to re-reading the raw topic (and then writes a snapshot), as on
  the first start of this version: the same keys, the same process, the same run.

Targets (issue 13): at least 1 million keys a second from the state topic (10 million keys
back within 10 s), independent of how costly the bodies are to parse; at most 40 bytes of RSS
per key for the process.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Final

from bench.load import edge_records, traffic
from bench.stack import Stack
from bench.support import (
    PARTITIONS,
    code_version,
    command,
    http_get,
    machine,
    memory_kb,
    metric_sum,
)
from consumers.runtime import TRIM_EVERY_S
from devstack.kafka import broker_or_configured
from testkit.kafka_tools import committed_total, produce, topic_size

MIB: Final = 1024 * 1024
CHUNK: Final = 200_000  # postbacks generated and written at a time: bounded memory here
TARGET_KEYS_PER_S: Final = 1_000_000
TARGET_BYTES_PER_KEY: Final = 40


@dataclass(frozen=True)
class Options:
    keys: int = 2_200_000
    xml_share: float = 0.1
    malformed_share: float = 0.01
    settle_s: float = 5.0
    # Caught up, the processor runs idle this long before its RSS is read: its periodic trim
    # (every TRIM_EVERY_S) has then given back what processing freed, as in steady operation.
    steady_after_s: float = TRIM_EVERY_S + 2.0
    caught_up_timeout_s: float = 1800.0


def rss_mib(pid: int) -> float:
    return memory_kb(pid)["VmRSS"] / 1024


async def settled_rss(pid: int, seconds: float) -> float:
    """The median of RSS samples over `seconds`: a figure, not one sample's noise."""
    samples = []
    for _ in range(max(1, int(seconds / 0.25))):
        samples.append(rss_mib(pid))
        await asyncio.sleep(0.25)
    samples.sort()
    return samples[len(samples) // 2]


def scrape(stack: Stack) -> str:
    status, body = http_get(stack.url("processor", "/metrics"))
    if status != 200:
        raise RuntimeError(f"the processor's /metrics answered {status}")
    return body.decode()


async def rebuild(stack: Stack, extra: dict[str, str]) -> dict[str, float]:
    """Spawn the processor and time it to every partition open; its figures then."""
    started = time.perf_counter()
    stack.spawn("processor", extra)
    await asyncio.to_thread(stack.wait_ready, "processor")
    seconds = time.perf_counter() - started
    text = scrape(stack)
    figures = {
        "seconds_to_all_partitions_open": round(seconds, 2),
        "keys": metric_sum(text, "postback_processor_dedupe_keys"),
        "restore_seconds_summed_over_partitions": round(
            metric_sum(text, "postback_processor_restore_duration_seconds_sum"), 2
        ),
        "records_read": metric_sum(text, "postback_processor_restored_records_total"),
        "rss_mib": round(await settled_rss(stack.pid("processor"), 1.0), 1),
    }
    figures["keys_per_s"] = round(figures["keys"] / seconds)
    figures["s_per_million_keys"] = round(seconds / figures["keys"] * 1e6, 2)
    opened = {
        source: metric_sum(text, "postback_processor_partition_opens_total", state=source)
        for source in ("state", "raw", "kept")
    }
    figures["partitions_opened_from"] = opened  # type: ignore[assignment]
    stack.stop("processor")
    return figures


async def bench(options: Options, bootstrap: str, stack: Stack) -> dict[str, Any]:
    started = time.perf_counter()
    stack.start("processor")
    idle_mib = await settled_rss(stack.pid("processor"), options.settle_s)
    group = stack.env["PROCESSOR_GROUP_ID"]
    halves: list[tuple[float, float]] = []  # (RSS MiB, keys) once each half is processed
    written = chunk = 0
    for half_end in (options.keys // 2, options.keys):
        while written < half_end:
            count = min(CHUNK, half_end - written)
            postbacks = traffic(count, 1000 + chunk, options.xml_share, options.malformed_share)
            await produce(bootstrap, stack.raw, edge_records(postbacks))
            written += count
            chunk += 1
        raw_records = await topic_size(bootstrap, stack.raw)
        if not await poll_async(
            lambda: committed_total(bootstrap, group, stack.raw),
            raw_records,
            options.caught_up_timeout_s,
        ):
            raise RuntimeError("the processor did not catch up with the raw topic")
        await asyncio.sleep(options.steady_after_s)
        rss = await settled_rss(stack.pid("processor"), options.settle_s)
        halves.append((rss, metric_sum(scrape(stack), "postback_processor_dedupe_keys")))
    processed_s = time.perf_counter() - started
    (half_mib, half_keys), (full_mib, keys) = halves
    stack.stop("processor")

    from_state = await rebuild(stack, {})
    from_raw = await rebuild(
        stack, {"KAFKA_TOPIC_STATE": stack.env["KAFKA_TOPIC_STATE"] + ".empty"}
    )
    bytes_per_key = (full_mib - idle_mib) * MIB / keys
    return {
        "benchmark": "B6 state: rebuild from the state topic vs the raw topic; memory per key",
        "machine": machine(),
        "code": code_version("consumers", "common", "bench"),
        "settings": {**options.__dict__, "partitions": PARTITIONS},
        "raw_records": raw_records,
        "dedupe_keys": keys,
        "processing_seconds": round(processed_s, 1),
        "memory": {
            "idle_rss_mib": round(idle_mib, 1),
            "rss_mib_with_keys": round(full_mib, 1),
            "rss_bytes_per_key": round(bytes_per_key, 1),
            # RSS added by the second half's keys, per key: no fixed cost (caches, buffers).
            "marginal_rss_bytes_per_key": round(
                (full_mib - half_mib) * MIB / (keys - half_keys), 1
            ),
            "rss_bytes_per_key_after_state_rebuild": round(
                (from_state["rss_mib"] - idle_mib) * MIB / keys, 1
            ),
            "target_bytes_per_key": TARGET_BYTES_PER_KEY,
            "met": bytes_per_key <= TARGET_BYTES_PER_KEY,
        },
        "rebuild_from_state_topic": from_state,
        "rebuild_from_raw_topic": from_raw,
        "ratio_state_to_raw_speed": round(
            from_raw["seconds_to_all_partitions_open"]
            / from_state["seconds_to_all_partitions_open"],
            1,
        ),
        "target_keys_per_s": TARGET_KEYS_PER_S,
        "met": from_state["keys_per_s"] >= TARGET_KEYS_PER_S,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


async def poll_async(measure: Any, wanted: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await measure() >= wanted:
            return True
        await asyncio.sleep(1.0)
    return False


def run(options: Options) -> dict[str, Any]:
    with broker_or_configured() as bootstrap, Stack(bootstrap, "state") as stack:
        return asyncio.run(bench(options, bootstrap, stack))


def table(report: dict[str, Any]) -> str:
    state, raw, memory = (
        report["rebuild_from_state_topic"],
        report["rebuild_from_raw_topic"],
        report["memory"],
    )
    return "\n".join(
        [
            f"dedupe keys: {report['dedupe_keys']:,.0f} ({report['raw_records']:,} raw records)",
            f"rebuild from the state topic: {state['seconds_to_all_partitions_open']} s, "
            f"{state['keys_per_s']:,} keys/s, {state['s_per_million_keys']} s per million keys "
            f"(target >= {TARGET_KEYS_PER_S:,}/s: {'met' if report['met'] else 'MISSED'})",
            f"rebuild from the raw topic:   {raw['seconds_to_all_partitions_open']} s, "
            f"{raw['keys_per_s']:,} keys/s, {raw['s_per_million_keys']} s per million keys",
            f"state topic / raw topic speed: {report['ratio_state_to_raw_speed']}x",
            f"processor RSS per key: {memory['rss_bytes_per_key']} bytes (marginal "
            f"{memory['marginal_rss_bytes_per_key']}, "
            f"after a rebuild {memory['rss_bytes_per_key_after_state_rebuild']}; target <= "
            f"{TARGET_BYTES_PER_KEY}: {'met' if memory['met'] else 'MISSED'})",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    return command("state", Options, run, argv, __doc__, table)


if __name__ == "__main__":
    raise SystemExit(main())
