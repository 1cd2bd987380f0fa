"""The summary table in docs/performance.md: one benchmark's run must not wipe the others."""

from __future__ import annotations

from typing import Any

from bench.__main__ import Row, table

OLD = """
| | figure | measured | baseline (same run) | ratio | target | |
|---|---|---|---|---|---|---|
| B1 | serial postbacks/s | 1,290/s | 1,454/s | 0.89 | >= 0.9 | **missed** |
| B3 | processor records/s | 18,755/s | 33,345/s | 0.56 | >= 0.53 | met |
| B3 | bare pass-through ceiling | 35,441/s |  | 0.53 |  |  |

- B1: `bench/results/serial.json`, commit d9e325e; 2 CPUs
- B3: `bench/results/processor.json`, commit ac8cf7e; 2 CPUs
"""


def _source(commit: str) -> dict[str, Any]:
    return {
        "file": "bench/results/processor.json",
        "machine": {"cpus": 2},
        "code": {"commit": commit},
    }


def test_a_benchmark_run_alone_replaces_its_rows_and_keeps_the_others() -> None:
    """B3 run again on a fresh clone (no B1 result on disk): B1's rows and source line stay,
    B3's are the new ones, in benchmark order."""
    rows = [Row("B3", "processor records/s", "20,000/s", "33,000/s", "0.61", ">= 0.53", True)]

    text = table(rows, {"B3": _source("abc1234")}, OLD)

    lines = text.splitlines()
    assert "| B1 | serial postbacks/s | 1,290/s | 1,454/s | 0.89 | >= 0.9 | **missed** |" in lines
    assert "- B1: `bench/results/serial.json`, commit d9e325e; 2 CPUs" in lines
    assert [line for line in lines if line.startswith("| B3")] == [
        "| B3 | processor records/s | 20,000/s | 33,000/s | 0.61 | >= 0.53 | met |"
    ]
    assert [line.split(",")[0] for line in lines if line.startswith("- B")] == [
        "- B1: `bench/results/serial.json`",
        "- B3: `bench/results/processor.json`",
    ]
    assert "ac8cf7e" not in text
    assert [line[:4] for line in lines if line.startswith("| B")] == ["| B1", "| B3"]


def test_without_a_table_in_the_docs_only_results_on_disk_are_tabulated() -> None:
    rows = [Row("B3", "processor records/s", "20,000/s", "33,000/s", "0.61", ">= 0.53", True)]

    text = table(rows, {"B3": _source("abc1234")})

    assert [line[:4] for line in text.splitlines() if line.startswith("| B")] == ["| B3"]
