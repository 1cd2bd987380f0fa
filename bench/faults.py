"""`python -m bench.faults`: the fault drills of `make test`, longer and busier, as a table.

    python -m bench.faults [--scenarios leader_kill rolling_restart ...] [--connections 8]

Runs each drill of `testkit.faults` on a fresh three-node cluster (replication 3, min ISR 2)
with the real edge, processor(s) and metrics service as processes, the provider simulator on
`--connections` keep-alive connections with lost answers, and writes
bench/results/faults.json and the table between the markers in docs/reliability.md. Not a
ratio against a baseline: these are promises (nothing lost, nothing repeated, every answer a
200 or a 503 within 10 s), and the figures say what keeping them cost (503s, slowest answer,
time to recover). Takes about 15 minutes with the defaults.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bench.support import ROOT, BenchError, command, machine
from devstack.cluster import LocalCluster
from testkit import faults

DOC: Final = ROOT / "docs" / "reliability.md"
BEGIN: Final = "<!-- faults:table:begin (written by python -m bench.faults) -->"
END: Final = "<!-- faults:table:end -->"
BASE_ENV: Final = {"EDGE_KAFKA_PROBE_SECONDS": "1", "PROCESSOR_SESSION_TIMEOUT_MS": "6000"}


@dataclass(frozen=True)
class Options:
    scenarios: tuple[str, ...] = (
        "leader_kill",
        "rolling_restart",
        "zombie_processor",
        "long_outage_down",
        "long_outage_frozen",
    )
    connections: int = 8
    rate_per_connection: float = 20.0
    tail: int = 200  # postbacks each connection sends after the pipeline recovered
    outage_s: float = 100.0  # past the request timeout (40 s) and the transaction timeout (60 s)
    docs: bool = False  # write the table into docs/reliability.md


def scenarios(options: Options) -> dict[str, faults.Scenario]:
    plan = faults.TrafficPlan(
        connections=options.connections,
        rate_per_connection=options.rate_per_connection,
        tail=options.tail,
    )
    # A refused postback comes back a fifth of the outage later, five times: the retries
    # outlast the outage, as the provider's five retries five minutes apart outlast a restart.
    outage_plan = faults.TrafficPlan(
        connections=options.connections,
        rate_per_connection=options.rate_per_connection,
        tail=options.tail,
        retry_delay_s=options.outage_s / 4,
    )
    every = [
        faults.Scenario("leader_kill", faults.leader_kill, plan=plan),
        faults.Scenario("rolling_restart", faults.rolling_restart, plan=plan),
        faults.Scenario("zombie_processor", faults.zombie_processor, processors=2, plan=plan),
        faults.Scenario(
            "long_outage_down", faults.long_outage(options.outage_s, how="down"), plan=outage_plan
        ),
        faults.Scenario(
            "long_outage_frozen",
            faults.long_outage(options.outage_s, how="freeze"),
            plan=outage_plan,
        ),
    ]
    return {scenario.name: scenario for scenario in every}


def run(options: Options) -> dict[str, Any]:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        raise BenchError("the drills kill and pause brokers: they need the local cluster")
    chosen = scenarios(options)
    unknown = set(options.scenarios) - set(chosen)
    if unknown:
        raise BenchError(f"unknown scenarios {sorted(unknown)}; known: {sorted(chosen)}")
    reports = []
    logs = Path(tempfile.mkdtemp(prefix="postback-faults-"))
    for name in options.scenarios:
        started = time.monotonic()
        with LocalCluster(3) as cluster:
            report = asyncio.run(
                faults.run_drill(cluster, chosen[name], logs / name, base_env=BASE_ENV)
            )
        reports.append(report.as_dict())
        print(f"{name}: {len(report.problems)} problems, {time.monotonic() - started:.0f} s")
    result = {
        "machine": machine(),
        "options": {**options.__dict__, "scenarios": list(options.scenarios)},
        "logs": str(logs),
        "drills": reports,
    }
    if options.docs:
        write_table(result)
    return result


def table(result: dict[str, Any]) -> str:
    header = (
        "| scenario | acknowledged | events | duplicates | missing | dead letters | 503s "
        "| other answers | slowest answer | seconds to recover | processor exits "
        "| log lines (edge / processor) |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n"
    )
    rows = []
    for drill in result["drills"]:
        others = sum(v for k, v in drill["statuses"].items() if k not in ("200", "503"))
        others += sum(drill["failures"].values())
        recover = drill["recover_s"]
        dead = drill["dead_letters_expected"]
        dead_wrong = drill["dead_letters_missing"] + drill["dead_letters_duplicated"]
        rows.append(
            f"| {drill['scenario']} | {drill['acknowledged']:,} | {drill['events']:,} "
            f"| {drill['duplicates']} | {drill['missing']} "
            f"| {dead} ({dead_wrong} wrong) | {drill['statuses'].get('503', 0):,} | {others} "
            f"| {drill['slowest_answer_s']:.1f} s "
            f"| {'never' if recover is None else f'{recover:.1f}'} "
            f"| {', '.join(map(str, drill['processor_exits'])) or 'none'} "
            f"| {drill['log_lines'].get('edge', 0):,} / "
            f"{max(v for k, v in drill['log_lines'].items() if k.startswith('processor')):,} |"
        )
    return header + "\n".join(rows)


def write_table(result: dict[str, Any]) -> None:
    text = DOC.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    options = result["options"]
    when = time.strftime("%Y-%m-%d", time.gmtime())
    body = (
        f"\n{table(result)}\n\n"
        f"Measured {when} with `python -m bench.faults --docs` ({options['connections']} "
        f"connections at up to {options['rate_per_connection']:g} postbacks/s each, outages of "
        f"{options['outage_s']:g} s) on {result['machine']['cpus']} CPUs.\n"
    )
    DOC.write_text(head + BEGIN + body + END + tail)


def main(argv: list[str] | None = None) -> int:
    return command("faults", Options, run, argv, __doc__, table)


if __name__ == "__main__":
    raise SystemExit(main())
