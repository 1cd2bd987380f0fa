"""B5: steady-state RSS of each service; bytes per dedupe key; restore time per million keys.

    python -m bench.memory [--count 100000] [--http-count 20000] [--state-keys 1000000]

What is measured
----------------
The edge, the processor and the metrics service run as processes with default settings, as
`make run` starts them (`bench.stack.Stack`: topics and groups of this run), on a fresh
local broker. Every `--sample-every-s` this process reads VmRSS (and RssAnon) of each from
/proc/<pid>/status, through these phases:

1. idle: the services started and ready (processor and metrics own every partition);
2. http_load: the first `--http-count` postbacks over `--connections` keep-alive connections
   to the edge, as fast as it answers, for at most `--http-max-s` (the rest goes by 3.);
3. bulk_load: the remaining postbacks produced straight into the raw topic, as the edge
   writes them (the HTTP path is too slow for bulk on this machine; `bench.processor` does
   the same), in two halves, each until the processor has committed every raw record and
   the metrics service has counted every event; between them, mid_bulk: a short idle;
4. settled: `--settle-s` of idle after the load: the steady RSS per service;
5. restarted: the processor stopped, a fresh in-process runtime restores its state
   (`bench.restore.restore_pass`, as B3 does) against a bare re-read of the raw topic
   (`bench.restore.bare_restore_rate`), then the processor process is started again and
   rebuilds the same state: its RSS with the state restored rather than built live.

Postbacks are `simulator.mix` traffic (MT sent/final pairs, MO, 10% v1 XML, 1% malformed), no
retries, so dedupe keys ~ raw records (some malformed shapes repeat). Bytes per dedupe key: the
processor's own gauges (`postback_processor_dedupe_bytes` / `_keys`, the window's estimate);
the processor's RSS growth over its idle RSS per key held (an upper bound: it also holds the
latency join's waiting messages, enrichment caches and client buffers); its marginal RSS per
key, mid_bulk -> settled, once bounded caches are full and client buffers at their high water
(the figure to multiply by a partition's keys); and the window alone (`bench.state_bench`:
tracemalloc at `--state-keys`, and its RSS and restore speed). Restore time per million keys:
the in-process restore's seconds over the keys the processor held.

B5 states no numeric targets; the report compares with the figures documented in
docs/processor.md (100-118 bytes of RSS per key) and docs/performance.md (65 s per million
records restored, 0.21 of a bare re-read). The Kafka broker's RSS is reported for scale.
Writes bench/results/memory.json and prints a table.
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import uvloop

from bench.load import edge_records, post_at_rate, traffic
from bench.restore import bare_restore_rate, restore_pass
from bench.stack import Stack
from bench.state_bench import window_bytes_per_key, window_speed
from bench.support import (
    PARTITIONS,
    broker_pid,
    code_version,
    command,
    http_get,
    load_average,
    machine,
    memory_kb,
    metric_sum,
)
from devstack.kafka import broker_or_configured
from testkit.kafka_tools import produce, topic_size

MIB = 1024 * 1024
DRAIN_TIMEOUT_S = 300.0  # the processor catching up with the bulk load, at most
POLL_S = 0.5
SERVICES = ("edge", "processor", "metrics")
# Documented figures to compare with (B5 has no stated targets).
DOCUMENTED_RSS_BYTES_PER_KEY = (100.0, 118.0)  # docs/processor.md
DOCUMENTED_RESTORE_S_PER_MILLION = 65.2  # docs/performance.md, B3 restore


@dataclass(frozen=True)
class Sample:
    phase: str
    name: str
    at: float  # perf_counter
    rss_kb: int
    anon_kb: int
    hwm_kb: int


@dataclass
class Sampler:
    """Reads each process's /proc status every `every_s`, labelled with the current phase."""

    pids: dict[str, int]
    every_s: float
    phase: str = "idle"
    samples: list[Sample] = field(default_factory=list)

    def sample(self) -> None:
        now = time.perf_counter()
        for name, pid in self.pids.items():
            status = memory_kb(pid)
            if "VmRSS" in status:
                self.samples.append(
                    Sample(
                        self.phase,
                        name,
                        now,
                        status["VmRSS"],
                        status.get("RssAnon", 0),
                        status.get("VmHWM", 0),
                    )
                )

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.every_s)

    def of(self, name: str, phase: str) -> list[Sample]:
        return [s for s in self.samples if s.name == name and s.phase == phase]


def mib(kb: float) -> float:
    return round(kb * 1024 / MIB, 1)


def phase_figures(samples: list[Sample]) -> dict[str, float]:
    """Median, max and last VmRSS (MiB) of a phase, and the peak RSS so far (VmHWM)."""
    if not samples:
        return {}
    rss = [s.rss_kb for s in samples]
    return {
        "median_mib": mib(statistics.median(rss)),
        "max_mib": mib(max(rss)),
        "last_mib": mib(rss[-1]),
        "anon_median_mib": mib(statistics.median(s.anon_kb for s in samples)),
        "hwm_mib": mib(samples[-1].hwm_kb),
        "samples": len(samples),
    }


async def scrape(stack: Stack, name: str) -> str:
    status, body = await asyncio.to_thread(http_get, stack.url(name, "/metrics"))
    if status != 200:
        raise RuntimeError(f"{name} /metrics answered {status}")
    return body.decode()


async def caught_up(stack: Stack, bootstrap: str) -> dict[str, float]:
    """Wait until the processor committed every raw record and the metrics service counted
    every event; return the processor's counters and gauges at that point."""
    total = await topic_size(bootstrap, stack.raw)
    deadline = time.perf_counter() + DRAIN_TIMEOUT_S
    while True:
        processor = await scrape(stack, "processor")
        done = sum(
            metric_sum(processor, f"postback_processor_{name}_total")
            for name in ("events_emitted", "dead_letters", "duplicates_dropped")
        )
        emitted = metric_sum(processor, "postback_processor_events_emitted_total")
        counted = metric_sum(await scrape(stack, "metrics"), "postback_events_consumed_total")
        if done >= total and counted >= emitted:
            break
        if time.perf_counter() > deadline:
            raise TimeoutError(
                f"after {DRAIN_TIMEOUT_S:.0f} s: processor {done:.0f} of {total} committed, "
                f"metrics counted {counted:.0f} of {emitted:.0f}"
            )
        await asyncio.sleep(POLL_S)
    return {
        "raw_records": total,
        "events_emitted": emitted,
        "dead_letters": metric_sum(processor, "postback_processor_dead_letters_total"),
        "duplicates_dropped": metric_sum(processor, "postback_processor_duplicates_dropped_total"),
        "dedupe_keys": metric_sum(processor, "postback_processor_dedupe_keys"),
        "dedupe_bytes": metric_sum(processor, "postback_processor_dedupe_bytes"),
        "latency_join_entries": metric_sum(processor, "postback_processor_latency_join_entries"),
    }


@dataclass(frozen=True)
class Options:
    count: int = 100_000  # distinct postbacks in all
    http_count: int = 20_000  # of which through the edge over HTTP
    http_max_s: float = 20.0
    connections: int = 4
    idle_s: float = 5.0
    settle_s: float = 10.0
    sample_every_s: float = 0.5
    state_keys: int = 1_000_000
    xml_share: float = 0.1
    malformed_share: float = 0.01


async def bench(options: Options, bootstrap: str, stack: Stack) -> dict[str, Any]:
    started = time.perf_counter()
    report: dict[str, Any] = {
        "benchmark": "B5 memory: service RSS, bytes per dedupe key, restore time",
        "machine": machine(event_loop="uvloop (every service and this client)"),
        "code": code_version("ingest", "consumers", "common"),
        "settings": {
            "postbacks": options.count,
            "http_postbacks_planned": options.http_count,
            "http_max_s": options.http_max_s,
            "connections": options.connections,
            "idle_s": options.idle_s,
            "settle_s": options.settle_s,
            "sample_every_s": options.sample_every_s,
            "partitions": PARTITIONS,
            "xml_share_of_messages": options.xml_share,
            "malformed_share": options.malformed_share,
            "retries": 0,
            "state_keys": options.state_keys,
        },
    }
    postbacks = traffic(options.count, 5, options.xml_share, options.malformed_share)
    for name in SERVICES:
        await stack.start_async(name)
    pids = {name: stack.pid(name) for name in SERVICES}
    broker = broker_pid()
    if broker is not None:
        pids["broker"] = broker
    sampler = Sampler(pids, options.sample_every_s)
    sampling = asyncio.create_task(sampler.run())
    phases: dict[str, float] = {}
    processor_exit: int | None = None
    try:
        await asyncio.sleep(options.idle_s)

        sampler.phase, mark = "http_load", time.perf_counter()
        planned = postbacks[: options.http_count]
        sent = await post_at_rate(
            stack.ports["edge"], options.connections, planned, None, options.http_max_s
        )
        http_sent = len(planned) - sent.unsent
        phases["http_load"] = time.perf_counter() - mark

        # The bulk in two halves, with a checkpoint between: RSS and keys once the first
        # half is processed, when fixed costs (bounded caches full, client buffers at their
        # high water after a burst) are paid, so the second half gives the marginal cost.
        bulk = postbacks[http_sent:]
        halves = (bulk[: len(bulk) // 2], bulk[len(bulk) // 2 :])
        sampler.phase, mark = "bulk_load", time.perf_counter()
        await produce(bootstrap, stack.raw, edge_records(halves[0]))
        counts_mid = await caught_up(stack, bootstrap)
        sampler.phase = "mid_bulk"
        await asyncio.sleep(options.settle_s / 2)
        sampler.sample()
        sampler.phase = "bulk_load"
        await produce(bootstrap, stack.raw, edge_records(halves[1]))
        counts = await caught_up(stack, bootstrap)
        phases["bulk_load"] = time.perf_counter() - mark - options.settle_s / 2

        sampler.phase = "settled"
        await asyncio.sleep(options.settle_s)
        sampler.sample()

        # Restore: the processor's group without the processor, then the process again.
        sampler.phase = "stopped"
        processor_exit = stack.stop("processor")
        restore = await restore_pass(stack.env)
        bare_rate = await bare_restore_rate(bootstrap, stack.raw)
        sampler.phase, mark = "restoring", time.perf_counter()
        stack.spawn("processor")
        sampler.pids["processor"] = stack.pid("processor")
        await asyncio.to_thread(stack.wait_ready, "processor")
        phases["restart_to_ready"] = time.perf_counter() - mark
        sampler.phase = "restarted"
        await asyncio.sleep(options.settle_s / 2)
        sampler.sample()
        restarted = await scrape(stack, "processor")
    finally:
        sampling.cancel()
        exits = {name: stack.stop(name) for name in SERVICES}
    exits["processor_first_run"] = -1 if processor_exit is None else processor_exit

    # The window alone, in this process, with the services gone.
    window = {**window_bytes_per_key(options.state_keys), **window_speed(options.state_keys)}

    services: dict[str, Any] = {}
    for name in pids:
        figures: dict[str, Any] = {
            phase: phase_figures(sampler.of(name, phase))
            for phase in (
                "idle",
                "http_load",
                "bulk_load",
                "mid_bulk",
                "settled",
                "restoring",
                "restarted",
            )
            if sampler.of(name, phase)
        }
        idle, settled = figures.get("idle", {}), figures.get("settled", {})
        if idle and settled:
            figures["steady_mib"] = settled["median_mib"]
            figures["growth_over_idle_mib"] = round(settled["median_mib"] - idle["median_mib"], 1)
        services[name] = figures
    report["services"] = services

    keys = counts["dedupe_keys"]
    processor = services["processor"]
    idle_mib = processor["idle"]["median_mib"]
    rss_per_key = (processor["settled"]["median_mib"] - idle_mib) * MIB / keys
    restarted_per_key = None
    if "restarted" in processor:
        restarted_per_key = (processor["restarted"]["median_mib"] - idle_mib) * MIB / keys
    added_keys = keys - counts_mid["dedupe_keys"]
    marginal = None
    if added_keys > 0 and "mid_bulk" in processor:
        settled_mib = processor["settled"]["median_mib"]
        marginal = (settled_mib - processor["mid_bulk"]["median_mib"]) * MIB / added_keys
    report["dedupe"] = {
        **{name: round(value) for name, value in counts.items()},
        "dedupe_keys_mid_bulk": round(counts_mid["dedupe_keys"]),
        "gauge_bytes_per_key": round(counts["dedupe_bytes"] / keys, 1),
        # RSS of the processor after the first bulk half -> after the second, per key added:
        # the marginal memory of a key in the process (window, latency join, caches).
        "processor_marginal_rss_bytes_per_key": None if marginal is None else round(marginal, 1),
        "processor_rss_growth_bytes_per_key": round(rss_per_key, 1),
        "processor_rss_growth_bytes_per_key_after_restart": (
            None if restarted_per_key is None else round(restarted_per_key, 1)
        ),
        "window_alone": {"keys": options.state_keys, **window},
    }

    restore_s_per_million_keys = restore["seconds"] / keys * 1e6
    report["restore"] = {
        "in_process": {name: round(value, 3) for name, value in restore.items()},
        "s_per_million_records": round(1e6 / restore["records_per_s"], 2),
        "s_per_million_keys": round(restore_s_per_million_keys, 2),
        "bare_reread_records_per_s": round(bare_rate),
        "ratio_restore_to_bare_reread": round(restore["records_per_s"] / bare_rate, 3),
        "restarted_process": {
            "records": metric_sum(restarted, "postback_processor_restored_records_total"),
            "seconds": round(
                metric_sum(restarted, "postback_processor_restore_duration_seconds_sum"), 3
            ),
            "start_to_ready_s": round(phases["restart_to_ready"], 2),
        },
        "window_alone_s_per_million_keys": window["window_restore_s_per_million"],
    }
    report["load"] = {
        "http_sent": http_sent,
        "http_acked": len(sent.acked),
        "http_failures": dict(sent.failures),
        "http_rate_per_s": round(len(sent.acked) / sent.seconds, 1) if sent.seconds else 0.0,
        "bulk_produced": len(bulk),
        "phase_seconds": {name: round(value, 1) for name, value in phases.items()},
    }
    low, high = DOCUMENTED_RSS_BYTES_PER_KEY
    report["documented"] = {
        "note": "B5 has no stated targets; these compare with the documented figures",
        "rss_bytes_per_key": [low, high],
        "marginal_rss_bytes_per_key_within": marginal is not None and marginal <= high,
        "restore_s_per_million_records": DOCUMENTED_RESTORE_S_PER_MILLION,
        "restore_within": bool(
            1e6 / restore["records_per_s"] <= DOCUMENTED_RESTORE_S_PER_MILLION * 1.1
        ),
    }
    report["service_exit_codes"] = exits
    report["machine"]["load_average_at_end"] = load_average()
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    return report


def run(options: Options) -> dict[str, Any]:
    """B5 on a fresh local broker (or KAFKA_BOOTSTRAP_SERVERS); returns the report."""
    options = dataclasses.replace(options, http_count=min(options.http_count, options.count))
    with broker_or_configured() as bootstrap, Stack(bootstrap, "b5") as stack:
        return uvloop.run(bench(options, bootstrap, stack))


def table(report: dict[str, Any]) -> str:
    lines = [
        "B5 memory: VmRSS in MiB (median of each phase; max during load)",
        f"{'service':<10} {'idle':>7} {'load max':>9} {'steady':>7} {'growth':>7} "
        f"{'restarted':>9} {'VmHWM':>7}",
    ]
    for name, figures in report["services"].items():
        load_max = max(
            (figures[p]["max_mib"] for p in ("http_load", "bulk_load") if p in figures),
            default="-",
        )
        hwm = max(
            (f["hwm_mib"] for f in figures.values() if isinstance(f, dict) and "hwm_mib" in f),
            default="-",
        )
        lines.append(
            f"{name:<10} {figures.get('idle', {}).get('median_mib', '-'):>7} {load_max:>9} "
            f"{figures.get('steady_mib', '-'):>7} {figures.get('growth_over_idle_mib', '-'):>7} "
            f"{figures.get('restarted', {}).get('median_mib', '-'):>9} {hwm:>7}"
        )
    dedupe, restore = report["dedupe"], report["restore"]
    window = dedupe["window_alone"]
    lines += [
        f"dedupe keys held: {dedupe['dedupe_keys']} "
        f"(latency join waiting: {dedupe['latency_join_entries']})",
        f"bytes per dedupe key: gauges {dedupe['gauge_bytes_per_key']}, processor marginal RSS "
        f"{dedupe['processor_marginal_rss_bytes_per_key']}, RSS growth over idle "
        f"{dedupe['processor_rss_growth_bytes_per_key']} "
        f"(after restart {dedupe['processor_rss_growth_bytes_per_key_after_restart']}), "
        f"window alone at {window['keys']} keys: traced {window['window_traced_bytes_per_key']}, "
        f"RSS {window['window_rss_bytes_per_key_incl_key_object']}",
        f"restore: {restore['s_per_million_records']} s per million records, "
        f"{restore['s_per_million_keys']} s per million keys "
        f"({restore['ratio_restore_to_bare_reread']} of a bare re-read at "
        f"{restore['bare_reread_records_per_s']} records/s); window alone "
        f"{restore['window_alone_s_per_million_keys']} s per million keys",
        f"documented: {report['documented']['rss_bytes_per_key']} B of RSS per key "
        f"(marginal within: {report['documented']['marginal_rss_bytes_per_key_within']}), "
        f"{report['documented']['restore_s_per_million_records']} s per million restored "
        f"(within 10%: {report['documented']['restore_within']})",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return command("memory", Options, run, argv, __doc__, table)


if __name__ == "__main__":
    sys.exit(main())
