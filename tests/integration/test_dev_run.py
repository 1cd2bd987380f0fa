"""`make run` (`postback-pipeline dev run`) as a person sees it: readable service lines, then,
once every service is ready, commands that work; Ctrl-C stops it all."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from devstack.console import SAMPLE, SAMPLE_TRACKING_ID
from devstack.kafka import free_port

pytestmark = pytest.mark.kafka

SCRIPT = Path(sys.executable).with_name("postback-pipeline")
BANNER = "postback-pipeline is running"
START_WITHIN_S = 30.0


def test_dev_run_prints_readable_lines_then_the_commands_to_try_once_ready(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Service lines are `name │ time LEVEL message fields`, never JSON nor aiokafka's INFO
    narration; the banner comes once, after every service is ready, and its commands work:
    the sample posts with 200, tail prints as many records as asked, the trace finds it.
    SIGINT stops everything with status 0."""
    run = uuid.uuid4().hex[:8]
    ports = {name: free_port() for name in ("EDGE", "PROCESSOR", "METRICS")}
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("KAFKA_")},
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TOPIC_PARTITIONS": "2",
        "KAFKA_TOPIC_RAW": f"test.dev.{run}.raw",
        "KAFKA_TOPIC_EVENTS": f"test.dev.{run}.events",
        "KAFKA_TOPIC_DLQ": f"test.dev.{run}.dlq",
        "KAFKA_TOPIC_STATE": f"test.dev.{run}.state",
        "PROCESSOR_GROUP_ID": f"dev-processor-{run}",
        "PROCESSOR_TRANSACTIONAL_ID_PREFIX": f"dev-processor-{run}",
        "METRICS_GROUP_ID": f"dev-metrics-{run}",
        "POSTBACK_CACHE_DIR": str(tmp_path),
        **{f"DEVSTACK_{name}_PORT": str(port) for name, port in ports.items()},
    }
    env.pop("LOG_FORMAT", None)
    stack = subprocess.Popen(
        [SCRIPT, "dev", "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert stack.stdout is not None
        for raw in iter(stack.stdout.readline, b""):
            lines.put(raw.decode(errors="replace").rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + START_WITHIN_S
        while not any(BANNER in line for line in seen):
            assert stack.poll() is None, "\n".join(seen)
            try:
                seen.append(lines.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                pytest.fail(f"no banner within {START_WITHIN_S} s:\n" + "\n".join(seen))
        before = seen[:-1]
        # Every service said it was ready before the banner, each line under its name.
        service_lines = [line for line in before if "│" in line]
        for name, ready in (("edge", "edge ready"), ("processor", "processor running")):
            assert any(line.startswith(name) and ready in line for line in service_lines), ready
        assert any(line.startswith("metrics ") for line in service_lines)
        for line in service_lines:
            name, _, text = line.partition(" │ ")
            assert name.strip() in {"edge", "processor", "metrics"}, line
            assert not text.startswith("{"), line
            assert "Joined group" not in text, line
            assert "Started server process" not in text, line

        for _ in range(3):  # the sample, and two provider retries of it
            posted = httpx.post(
                f"http://127.0.0.1:{ports['EDGE']}/postbacks/mt",
                content=SAMPLE,
                headers={"content-type": "application/json"},
                timeout=10,
            )
            assert posted.status_code == 200
        topics = [env["KAFKA_TOPIC_RAW"], env["KAFKA_TOPIC_EVENTS"]]
        tail = subprocess.run(
            [SCRIPT, "dev", "tail", *topics, "--count", "2"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert tail.returncode == 0, tail.stderr
        assert len(tail.stdout.splitlines()) == 2
        trace = subprocess.run(
            [SCRIPT, "trace", SAMPLE_TRACKING_ID],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert trace.returncode == 0, trace.stderr
        assert f"tracking id {SAMPLE_TRACKING_ID}" in trace.stdout

        stack.send_signal(signal.SIGINT)
        assert stack.wait(timeout=40) == 0
    finally:
        if stack.poll() is None:
            stack.kill()
            stack.wait()
    reader.join(timeout=5)
    assert stack.stdout is not None
    stack.stdout.close()
    while not lines.empty():
        seen.append(lines.get())
    banner = "\n".join(seen)
    assert banner.count(BANNER) == 1
    assert "/postbacks/mt -H 'content-type: application/json'" in banner
    assert f"trace {SAMPLE_TRACKING_ID}" in banner
    assert not (tmp_path / "run" / "stack.json").exists(), "the state file outlived the stack"
