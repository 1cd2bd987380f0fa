"""`python -m bench` (or `make bench`): every benchmark, then one table of the results.

    python -m bench [--only B1,B3] [--quick] [--no-docs]

Runs B1-B7, each in its own process with its own broker (a crash or a leaked task in one
cannot skew the next), writing bench/results/<name>.json. Then reads those files, whether
just written or left by an earlier run of a single benchmark, and writes
bench/results/summary.json and the table between the markers in docs/performance.md. A
benchmark with no result on disk keeps its rows of the table already there (results are not
committed: on a fresh clone one benchmark's run would otherwise leave a table of one).

Every figure is a ratio against a baseline measured in the same run, because the machines
are shared and noisy; the table says what each baseline is. `--quick` runs each benchmark
briefly to check that it works: its figures are not worth publishing (`--no-docs`).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from bench.support import ROOT, result_path

DOC = ROOT / "docs" / "performance.md"
BEGIN = "<!-- bench:summary:begin (written by python -m bench) -->"
END = "<!-- bench:summary:end -->"
_ROW = re.compile(r"\| (B\d+) \|")
_SOURCE = re.compile(r"- (B\d+): ")


@dataclass(frozen=True)
class Benchmark:
    id: str
    module: str
    result: str  # bench/results/<result>.json
    quick: str  # the arguments of `--quick`: short runs that show it works
    needs: tuple[str, ...] = ()  # install scripts to run first


BENCHMARKS = (
    Benchmark("B1", "bench.serial", "serial", "--count 300 --rounds 1"),
    Benchmark(
        "B2",
        "bench.concurrent",
        "concurrent",
        "--connections 1 64 --duration 1 --rounds 1 --warm-up 1",
        needs=("tools/install-wrk.sh",),
    ),
    Benchmark(
        "B3",
        "bench.processor",
        "processor",
        "--count 5000 --rounds 1 --warm-up-s 1 --burst 1000 --intervals 100 --probe-seconds 1 "
        "--probe-rounds 1",
    ),
    Benchmark(
        "B4",
        "bench.end_to_end",
        "end_to_end",
        "--rates 100 --seconds 2 --rounds 1 --warm-up-records 500 --warm-up-s 1",
    ),
    Benchmark(
        "B5",
        "bench.memory",
        "memory",
        "--count 3000 --http-count 300 --http-max-s 3 --idle-s 1 --settle-s 1 --state-keys 10000",
    ),
    Benchmark("B6", "bench.state", "state", "--keys 20000 --settle-s 1 --steady-after-s 1"),
    Benchmark("B7", "bench.quix", "quix", "--count 5000 --rounds 1 --warm-up-records 1000"),
)


def run_benchmark(benchmark: Benchmark, *, quick: bool) -> float:
    for script in benchmark.needs:
        subprocess.run(["bash", str(ROOT / script)], check=True, stdout=subprocess.DEVNULL)
    args = benchmark.quick.split() if quick else []
    out = result_path(benchmark.result)
    command = [sys.executable, "-m", benchmark.module, *args, "--out", str(out)]
    print(f"== {benchmark.id}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    started = time.monotonic()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


# --------------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class Row:
    id: str
    figure: str
    measured: str
    baseline: str
    ratio: str
    target: str
    met: bool | None  # None: no target


def _rate(value: float) -> str:
    return f"{value:,.0f}/s"


def b1_rows(r: dict[str, Any]) -> list[Row]:
    med = r["median_rates"]
    rows = [
        Row(
            "B1",
            "serial postbacks/s, one keep-alive connection, durable acks",
            _rate(med["edge"]),
            f"{_rate(r['ideal_rate'])} = 1/(1/produce {med['produce']:,} + 1/http {med['http']:,})",
            f"{r['ratio_edge_to_ideal']:.2f}",
            ">= 0.9 (aim 0.97)",
            r["ratio_edge_to_ideal"] >= 0.9,
        ),
        Row(
            "B1",
            "edge's own time per postback",
            f"{r['edge_own_microseconds']:.0f} µs",
            "",
            "",
            "",
            None,
        ),
    ]
    sim = r.get("simulator_client")  # absent from results written before it was measured
    if sim is not None:
        rows.append(
            Row(
                "B1",
                "serial postbacks/s with the simulator's serial mode as the client",
                _rate(med["edge_simulator"]),
                f"{_rate(sim['ideal_rate'])} = 1/(1/produce + 1/http {med['http_simulator']:,})",
                f"{sim['ratio_edge_to_ideal']:.2f}",
                "",
                None,
            )
        )
    return rows


def b2_rows(r: dict[str, Any]) -> list[Row]:
    rows = []
    target = r["targets"]["ratio_requests_per_s_at_64_connections"]
    for connections, result in r["by_connections"].items():
        edge, bare = result["median"]["edge"], result["median"]["bare"]
        ratio = result["ratio_edge_to_bare"]["requests_per_s"]
        rows.append(
            Row(
                "B2",
                f"{connections} connections: requests/s (p50 / p99 ms)",
                f"{_rate(edge['requests_per_s'])} ({edge['p50_ms']:.1f} / {edge['p99_ms']:.1f})",
                f"bare app {_rate(bare['requests_per_s'])} "
                f"({bare['p50_ms']:.1f} / {bare['p99_ms']:.1f})",
                f"{ratio:.2f}",
                f">= {target}" if connections == "64" else "",
                ratio >= target if connections == "64" else None,
            )
        )
        if connections == "64":
            rows.append(
                Row(
                    "B2",
                    "64 connections: load generator (wrk) CPU, share of a core",
                    f"{edge['client_cpu_share']:.0%}",
                    f"ceiling {_rate(edge['client_ceiling_rps'])}",
                    "",
                    "not the bottleneck",
                    not result["headroom"]["edge"]["client_saturated"],
                )
            )
    return rows


def b3_rows(r: dict[str, Any]) -> list[Row]:
    t = r["throughput"]
    med = t["median_rates_per_s"]
    targets = t["targets"]
    return [
        Row(
            "B3",
            "processor: raw records/s, dedupe + enrich, transactions",
            _rate(med["processor"]),
            f"bare dedupe loop {_rate(med['bare_dedupe'])}",
            f"{t['ratio_processor_to_bare_dedupe']:.2f}",
            f">= {targets['ratio']} and >= {targets['events_per_s']:,}/s",
            bool(targets["met_rate"] and targets["met_ratio"]),
        ),
        Row(
            "B3",
            "bare pass-through ceiling (no dedupe)",
            _rate(med["bare_passthrough"]),
            "",
            f"{t['ratio_processor_to_passthrough']:.2f}",
            "",
            None,
        ),
    ]


def b4_rows(r: dict[str, Any]) -> list[Row]:
    rows = []
    for rate in r["rates"]:
        pipe, base = rate["pipeline"]["latency_ms"], rate["baseline"]["latency_ms"]
        achieved = rate["pipeline"]["achieved_rate_per_s"]
        shortfall = "" if rate["target"]["rate_achieved"] else f" (sent only {achieved:,.0f}/s)"
        rows.append(
            Row(
                "B4",
                f"edge 200 -> event readable at {rate['rate_per_s']:,.0f}/s: p50 / p99 ms",
                f"{pipe['p50']:.0f} / {pipe['p99']:.0f}{shortfall}",
                f"bare produce -> transactional copy {base['p50']:.0f} / {base['p99']:.0f}",
                f"{rate['ratio_pipeline_to_baseline']['p99']:.2f} (p99)",
                f"p99 < {rate['target']['p99_ms']:,.0f} ms",
                bool(rate["target"]["met"]),
            )
        )
    return rows


def b5_rows(r: dict[str, Any]) -> list[Row]:
    services = r["services"]
    rss = ", ".join(
        f"{name} {services[name]['steady_mib']:.0f}"
        for name in ("edge", "processor", "metrics")
        if name in services
    )
    restore = r["restore"]
    return [
        Row("B5", "steady RSS per service (MiB)", rss, "", "", "", None),
        Row(
            "B5",
            "bytes per dedupe key (processor's gauge)",
            f"{r['dedupe']['gauge_bytes_per_key']:.0f}",
            "",
            "",
            "",
            None,
        ),
        Row(
            "B5",
            "restore from the state topic: seconds per million keys",
            f"{restore['s_per_million_keys']:.2f}",
            "",
            "",
            "",
            None,
        ),
    ]


def b6_rows(r: dict[str, Any]) -> list[Row]:
    state, raw, memory = (
        r["rebuild_from_state_topic"],
        r["rebuild_from_raw_topic"],
        r["memory"],
    )
    return [
        Row(
            "B6",
            f"rebuild, restart to all partitions open ({r['dedupe_keys'] / 1e6:.1f} M keys)",
            f"{_rate(state['keys_per_s'])} keys, {state['s_per_million_keys']:.2f} s/M",
            f"from raw {_rate(raw['keys_per_s'])}, {raw['s_per_million_keys']:.1f} s/M",
            f"{r['ratio_state_to_raw_speed']:.1f}x",
            ">= 1,000,000 keys/s",
            bool(r["met"]),
        ),
        Row(
            "B6",
            "processor RSS per dedupe key: over idle (marginal; after a rebuild)",
            f"{memory['rss_bytes_per_key']:.0f} B ({memory['marginal_rss_bytes_per_key']:.0f}; "
            f"{memory['rss_bytes_per_key_after_state_rebuild']:.0f})",
            f"idle {memory['idle_rss_mib']:.0f} MiB",
            "",
            "<= 40 B",
            bool(memory["met"]),
        ),
    ]


def b7_rows(r: dict[str, Any]) -> list[Row]:
    med, target, intervals = r["median"], r["target"], r["quix_commit_intervals_s"]
    ours = med["ours"]
    rows = []
    for name, ratio in r["ratio_ours_to"].items():
        theirs, interval = med[name], f"{intervals[name]:g} s"
        if name != target["against"]:
            rows.append(
                Row(
                    "B7",
                    f"vs quixstreams committing every {interval}: records/s (CPU µs per record)",
                    f"{_rate(ours['rate'])} ({ours['cpu_us_per_record']:.0f})",
                    f"quixstreams {_rate(theirs['rate'])} ({theirs['cpu_us_per_record']:.0f})",
                    f"{ratio['rate']:.2f}",
                    "",
                    None,
                )
            )
            continue
        rows += [
            Row(
                "B7",
                f"processor vs quixstreams (exactly-once, RocksDB), one dedupe job, both "
                f"committing every {interval}: raw records/s, spawn to all committed",
                _rate(ours["rate"]),
                f"quixstreams {_rate(theirs['rate'])}",
                f"{ratio['rate']:.2f}",
                f">= {target['ratio']:g} (aim)",
                bool(target["met"]),
            ),
            Row(
                "B7",
                "CPU µs per raw record: process (broker)",
                f"{ours['cpu_us_per_record']:.0f} ({ours['broker_cpu_us_per_record']:.0f})",
                f"quixstreams {theirs['cpu_us_per_record']:.0f} "
                f"({theirs['broker_cpu_us_per_record']:.0f})",
                f"{ratio['cpu']:.2f} (theirs / ours)",
                "",
                None,
            ),
        ]
    return rows


SUMMARISE: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "B1": b1_rows,
    "B2": b2_rows,
    "B3": b3_rows,
    "B4": b4_rows,
    "B5": b5_rows,
    "B6": b6_rows,
    "B7": b7_rows,
}


def summary(ids: list[str]) -> tuple[list[Row], dict[str, Any]]:
    rows: list[Row] = []
    sources: dict[str, Any] = {}
    for benchmark in BENCHMARKS:
        path = result_path(benchmark.result)
        if benchmark.id not in ids or not path.exists():
            continue
        result = orjson.loads(path.read_bytes())
        rows.extend(SUMMARISE[benchmark.id](result))
        sources[benchmark.id] = {
            "file": str(path.relative_to(ROOT)),
            "machine": result.get("machine", {}),
            "code": result.get("code", {}),
        }
    return rows, sources


def table(rows: list[Row], sources: dict[str, Any], kept: str = "") -> str:
    """The summary table; `kept` is the table now in the docs, whose rows and source lines of
    benchmarks with no result here are carried over (a fresh clone has no results, and one
    benchmark's run must not wipe the others' figures)."""

    def met(value: bool | None) -> str:
        return "" if value is None else ("met" if value else "**missed**")

    lines = [
        "| | figure | measured | baseline (same run) | ratio | target | |",
        "|---|---|---|---|---|---|---|",
    ]
    old_rows, old_sources = kept_lines(kept)
    sourced: list[str] = []
    for benchmark in BENCHMARKS:
        id_ = benchmark.id
        source = sources.get(id_)
        if source is None:
            lines += old_rows.get(id_, [])
            sourced += old_sources.get(id_, [])
            continue
        lines += [
            f"| {r.id} | {r.figure} | {r.measured} | {r.baseline} | {r.ratio} | {r.target} "
            f"| {met(r.met)} |"
            for r in rows
            if r.id == id_
        ]
        m, code = source["machine"], source["code"]
        load = m.get("load_average_at_start")
        sourced.append(
            f"- {id_}: `{source['file']}`, commit {code.get('commit', '?')}"
            f"{' + uncommitted changes' if code.get('uncommitted_changes') else ''}; "
            f"{m.get('cpus', '?')} CPUs, Python {m.get('python', '?')}, "
            f"Kafka {m.get('kafka', '?')}, aiokafka {m.get('aiokafka', '?')}"
            f"{f', quixstreams {q}' if (q := m.get('quixstreams')) else ''}"
            f"{f', load average at start {load[0]}' if load else ''}"
        )
    return "\n".join([*lines, "", *sourced]) + "\n"


def kept_lines(text: str) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """A summary table's row lines and source lines, by benchmark id."""
    rows: dict[str, list[str]] = {}
    sources: dict[str, list[str]] = {}
    for line in text.splitlines():
        row, source = _ROW.match(line), _SOURCE.match(line)
        if row:
            rows.setdefault(row[1], []).append(line)
        elif source:
            sources.setdefault(source[1], []).append(line)
    return rows, sources


def _table_span(doc: str) -> tuple[int, int] | None:
    """Where the summary table sits in `doc`: from the end of BEGIN to the start of END."""
    start, end = doc.find(BEGIN), doc.find(END)
    return (start + len(BEGIN), end) if 0 <= start < end else None


def doc_table() -> str:
    """The summary table now in docs/performance.md (empty without its markers)."""
    doc = DOC.read_text()
    span = _table_span(doc)
    return doc[span[0] : span[1]] if span else ""


def write_doc(text: str) -> None:
    doc = DOC.read_text()
    span = _table_span(doc)
    if span is None:
        raise SystemExit(f"{DOC} lacks the markers {BEGIN!r} ... {END!r}")
    DOC.write_text(doc[: span[0]] + "\n\n" + text + "\n" + doc[span[1] :])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="B1,B2,B3,B4,B5,B6,B7", help="comma-separated ids")
    parser.add_argument("--quick", action="store_true", help="short runs: does it work?")
    parser.add_argument("--summary-only", action="store_true", help="run nothing, re-tabulate")
    parser.add_argument("--no-docs", action="store_true", help="leave docs/performance.md")
    args = parser.parse_args(argv)
    ids = [part.strip().upper() for part in args.only.split(",") if part.strip()]
    unknown = set(ids) - {b.id for b in BENCHMARKS}
    if unknown:
        parser.error(f"unknown benchmark ids: {sorted(unknown)}")
    durations = {}
    failed: list[str] = []
    if not args.summary_only:
        for benchmark in BENCHMARKS:
            if benchmark.id not in ids:
                continue
            try:
                durations[benchmark.id] = round(run_benchmark(benchmark, quick=args.quick), 1)
            except subprocess.CalledProcessError as error:
                # The others' results are still worth tabulating; this one's table rows stay
                # as they were (an older result on disk is tabulated with its own commit).
                print(f"== {benchmark.id} failed: {error}", file=sys.stderr, flush=True)
                failed.append(benchmark.id)
    # Every result on disk, not only those just run: a single benchmark's run keeps the rest.
    rows, sources = summary([benchmark.id for benchmark in BENCHMARKS])
    report = {
        "quick": args.quick,
        "wall_seconds": durations,
        "rows": [row.__dict__ for row in rows],
        "sources": sources,
    }
    result_path("summary").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    text = table(rows, sources, doc_table())
    print(text)
    if not args.no_docs and not args.quick:
        write_doc(text)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
