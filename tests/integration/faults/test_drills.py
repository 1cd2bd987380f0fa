"""The README's two promises on the topology users deploy, through the faults they meet.

"A postback answered 200 is already in Kafka" and "read_committed readers see every
notification exactly once": each test runs the real edge, processor(s) and metrics service as
processes on a three-node cluster (replication 3, min ISR 2), drives the edge with the provider
simulator on four keep-alive connections with lost answers (so stored postbacks come back as
retries), strikes mid-run, repairs, and audits the topics (testkit/faults.py). The same drills
run at larger counts with `python -m bench.faults` (docs/reliability.md).
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from devstack.cluster import LocalCluster
from testkit import faults

pytestmark = pytest.mark.kafka

BASE_ENV = {
    "EDGE_KAFKA_PROBE_SECONDS": "1",
    "PROCESSOR_SESSION_TIMEOUT_MS": "6000",
    "KAFKA_STARTUP_TIMEOUT_SECONDS": "60",
}


async def drill(
    cluster: LocalCluster, scenario: faults.Scenario, tmp_path: Path
) -> faults.DrillReport:
    report = await faults.run_drill(cluster, scenario, tmp_path / "logs", base_env=BASE_ENV)
    shown = orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode()
    assert report.problems == [], shown
    assert report.acknowledged > 0, shown
    assert report.dead_letters_expected > 0, shown
    return report


@pytest.mark.timeout(300)
async def test_killing_the_leader_of_most_raw_partitions_loses_and_repeats_nothing(
    kafka_cluster: LocalCluster, tmp_path: Path
) -> None:
    """kill -9 of a leader: its partitions answer 503 until the controller moves leadership,
    every acknowledged notification becomes one event, and the node rejoins."""
    report = await drill(
        kafka_cluster, faults.Scenario("leader_kill", faults.leader_kill), tmp_path
    )
    assert report.processor_exits == []


@pytest.mark.timeout(300)
async def test_a_rolling_restart_of_every_broker_loses_and_repeats_nothing(
    kafka_cluster: LocalCluster, tmp_path: Path
) -> None:
    """The monthly broker roll, one clean restart after another, costs no postback and no
    duplicate, and no service needs restarting."""
    report = await drill(
        kafka_cluster, faults.Scenario("rolling_restart", faults.rolling_restart), tmp_path
    )
    assert report.processor_exits == []


@pytest.mark.timeout(300)
async def test_a_frozen_processor_thawed_after_losing_its_partitions_is_fenced(
    kafka_cluster: LocalCluster, tmp_path: Path
) -> None:
    """A processor paused past its session timeout comes back holding an open transaction
    over partitions another instance now owns: it is fenced and exits (status 3), and the
    output stays exactly once."""
    report = await drill(
        kafka_cluster,
        faults.Scenario("zombie_processor", faults.zombie_processor, processors=2),
        tmp_path,
    )
    assert report.processor_exits == [3]


@pytest.mark.timeout(420)
async def test_the_pipeline_recovers_by_itself_after_the_cluster_was_down_for_a_minute(
    kafka_cluster: LocalCluster, tmp_path: Path
) -> None:
    """Every broker down for longer than the producer's request timeout (40 s) and the
    processor's transaction timeout (here 30 s), postbacks arriving on every partition the
    whole time: afterwards every partition answers 200 again without restarting the edge
    (before, the edge's producer was wedged on a sequence gap: OutOfOrderSequenceNumber
    forever), and the processor resumes by itself."""
    scenario = faults.Scenario(
        "long_outage",
        faults.long_outage(50, how="down"),
        # A refused postback comes back 15 s later, five times: the retries outlast the outage.
        plan=faults.TrafficPlan(retry_delay_s=15),
        env=(("PROCESSOR_TRANSACTION_TIMEOUT_MS", "30000"),),
    )
    report = await drill(kafka_cluster, scenario, tmp_path)
    assert report.refused > 0  # the outage was met by traffic, and answered 503
    assert report.edge_starts == 1
    # The processor resumed by itself: its open transactions outlived their timeout and were
    # fenced by the coordinator, and it rewound rather than exit (nobody else had taken over).
    assert report.processor_exits == []
    # The outage is said once, then once a minute with counts: a few hundred lines in all
    # (the client's reconnect errors alone were 20,000 lines per service before).
    assert max(report.log_lines.values()) < 1000, report.log_lines
