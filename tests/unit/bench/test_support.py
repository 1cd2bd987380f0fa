"""The benchmarks' shared tools: their command lines and their percentiles."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.support import parse_options, percentiles, result_path


@dataclass(frozen=True)
class Options:
    rates: tuple[float, ...] = (200.0, 1000.0)
    rounds: int = 2
    commit_interval_ms: int | None = None
    profile: bool = False


def test_a_benchmark_takes_every_option_of_its_dataclass_as_a_typed_flag() -> None:
    """Each field is a --flag of its type; a tuple takes several values; --out names the JSON."""
    options, out = parse_options(
        "demo",
        Options,
        ["--rates", "100", "250.5", "--commit-interval-ms", "20", "--profile", "--out", "x.json"],
        "Demo.",
    )

    assert options == Options(rates=(100.0, 250.5), commit_interval_ms=20, profile=True)
    assert out == Path("x.json")


def test_without_flags_a_benchmark_runs_its_defaults_and_writes_to_bench_results() -> None:
    """No flags: the dataclass's defaults, and the report in bench/results/<name>.json."""
    options, out = parse_options("demo", Options, [], "Demo.")

    assert options == Options()
    assert out == result_path("demo")
    assert out.parts[-3:] == ("bench", "results", "demo.json")


def test_percentiles_are_nearest_rank_over_the_values_given() -> None:
    """p50 of 1..100 is 51 (nearest rank), p99 is 100; min and max bound them."""
    figures = percentiles(float(n) for n in range(100, 0, -1))

    assert figures == {"min": 1.0, "p50": 51.0, "p90": 91.0, "p99": 100.0, "max": 100.0}
    assert percentiles([]) == {}
