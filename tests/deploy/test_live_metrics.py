"""The rules and the dashboard against the real services: the edge, the processor and the
metrics service run on loopback against the suite's Kafka, sample postbacks go through, and
their /metrics must export every metric the chart's rules and dashboard name. A real Prometheus
then scrapes them, as the chart's ServiceMonitors would (same job and namespace labels), and the
dashboard's key queries and the recording rules must return data.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest
import pytest_asyncio
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from consumers.metrics.service import MetricsService
from consumers.metrics.settings import MetricsSettings
from devstack import DEVELOPMENT_PSEUDONYM_KEY
from devstack.kafka import free_port
from testkit.samples import all_malformed, all_valid, content_type
from testkit.services import Service
from tests.deploy.support import (
    NAMESPACE,
    RELEASE,
    dashboard,
    dashboard_queries,
    metric_names,
    of_kind,
    render,
    rule_groups,
    tool,
    write_rule_file,
)
from tests.integration.consumers.conftest import wait_caught_up
from tests.integration.ingest.conftest import RunningEdge, running_edge

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio(loop_scope="module")]

JOB_PREFIX = f"{RELEASE}-postback-pipeline"
# Panels a person on call opens first; each of their queries must return data after traffic.
KEY_PANELS = (
    "Accepted postbacks",
    "Answers by status",
    "Kafka acknowledgement time",
    "Kafka outage and provider retry budget",
    "Processor throughput",
    "Dead letters by reason",
    "Consumer lag (raw topic)",
    "Events by status",
    "Final outcomes by status",
    "Time since the newest event",
)
# Their first query counts traffic: it must be above zero, not only present.
MOVING = ("Accepted postbacks", "Processor throughput", "Events by status")


@dataclass
class Stack:
    edge: RunningEdge
    processor_port: int
    metrics_port: int
    env: dict[str, str]
    client: httpx.AsyncClient

    @property
    def targets(self) -> dict[str, str]:
        """job -> host:port, the jobs the chart's scrape resources give each service."""
        return {
            f"{JOB_PREFIX}-edge": f"127.0.0.1:{self.edge.port}",
            f"{JOB_PREFIX}-processor": f"127.0.0.1:{self.processor_port}",
            f"{JOB_PREFIX}-metrics": f"127.0.0.1:{self.metrics_port}",
        }

    async def post(self, kind: str, body: bytes) -> None:
        answer = await self.client.post(
            f"{self.edge.url}/postbacks/mt",
            content=body,
            headers={"content-type": content_type(kind)},
        )
        assert answer.status_code == 200, (kind, answer.text)

    async def exported(self) -> set[str]:
        """Every sample name the three services' /metrics expose (families without samples too)."""
        names: set[str] = set()
        for target in self.targets.values():
            text = (await self.client.get(f"http://{target}/metrics")).text
            for family in text_string_to_metric_families(text):
                names.add(family.name)
                names.update(sample.name for sample in family.samples)
                names.update(
                    family.name + suffix
                    for suffix in {
                        "counter": ("_total",),
                        "histogram": ("_bucket", "_sum", "_count"),
                        "info": ("_info",),
                    }.get(family.type, ())
                )
        return names


@contextlib.asynccontextmanager
async def metrics_service(env: dict[str, str]) -> AsyncIterator[MetricsService]:
    service = MetricsService(MetricsSettings.from_environ(env), CollectorRegistry())
    serving = asyncio.create_task(service.serve())
    deadline = time.monotonic() + 30
    while not service.readiness()[0]:
        if serving.done():
            serving.result()
        assert time.monotonic() < deadline, "the metrics service did not become ready"
        await asyncio.sleep(0.05)
    try:
        yield service
    finally:
        service.request_stop()
        await asyncio.wait_for(serving, timeout=15)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(kafka_bootstrap: str) -> AsyncIterator[Stack]:
    """The three services on this module's topics, with sample traffic already through them."""
    run = uuid.uuid4().hex[:8]
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TOPIC_PARTITIONS": "3",
        "KAFKA_TOPIC_RAW": f"test.deploy.{run}.raw",
        "KAFKA_TOPIC_EVENTS": f"test.deploy.{run}.events",
        "KAFKA_TOPIC_DLQ": f"test.deploy.{run}.dlq",
        "KAFKA_TOPIC_STATE": f"test.deploy.{run}.state",
        "KAFKA_STARTUP_TIMEOUT_SECONDS": "20",
        "PROCESSOR_GROUP_ID": f"deploy-{run}",
        "PROCESSOR_TRANSACTIONAL_ID_PREFIX": f"deploy-{run}",
        "PROCESSOR_COMMIT_INTERVAL_MS": "50",
        "METRICS_GROUP_ID": f"deploy-metrics-{run}",
        "METRICS_PORT": "0",
        "METRICS_AUTO_OFFSET_RESET": "earliest",
        "LOG_LEVEL": "WARNING",
        "EVENTS_PSEUDONYM_KEY": DEVELOPMENT_PSEUDONYM_KEY,
    }
    processor = Service("processor", env, Path(tempfile.mkdtemp(prefix="live-metrics-")))
    async with (
        running_edge({**env, "EDGE_KAFKA_PROBE_SECONDS": "0.5"}) as edge,
        metrics_service(env) as metrics,
        httpx.AsyncClient(timeout=15) as client,
    ):
        await processor.start()
        try:
            yield Stack(edge, processor.port, metrics.port, env, client)
        finally:
            await processor.stop()


async def send_traffic(
    stack: Stack, between_waves: Callable[[], Awaitable[None]] | None = None
) -> None:
    """Every sample postback through the edge, in two waves (so rates have a before): the
    second goes once `between_waves` (say, a scrape of the first wave's counts) is over."""
    valid, malformed = all_valid(), all_malformed()
    for kind, body in [valid[0], malformed[0]]:
        await stack.post(kind, body)
    if between_waves is not None:
        await wait_until_counted(stack, 1)
        await between_waves()
    # One more notification exactly like the first as far as metric labels go (a field of its
    # own makes it new to the dedupe), so the first wave's series grow in the second.
    again = orjson.dumps({**orjson.loads(valid[0][1]), "wave": 2})
    for kind, body in [*valid[1:], (valid[0][0], again), *malformed[1:]]:
        await stack.post(kind, body)
    await wait_caught_up(stack.env, timeout=60)
    await wait_until_counted(stack, len(valid) + 1)


async def wait_until_counted(stack: Stack, events: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        text = (await stack.client.get(f"http://127.0.0.1:{stack.metrics_port}/metrics")).text
        counted = sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "postback_events_total"
        )
        if counted >= events:
            return
        assert time.monotonic() < deadline, f"the metrics service counted {counted} of {events}"
        await asyncio.sleep(0.1)


def recorded_names() -> set[str]:
    return {
        rule["record"] for group in rule_groups() for rule in group["rules"] if "record" in rule
    }


def named_by_rules_and_dashboard() -> dict[str, set[str]]:
    """metric name -> where it is used, for every rule expression and dashboard query."""
    used: dict[str, set[str]] = {}
    for group in rule_groups():
        for rule in group["rules"]:
            for name in metric_names(rule["expr"]):
                used.setdefault(name, set()).add(rule.get("alert") or rule["record"])
    for where, expr in dashboard_queries():
        for name in metric_names(expr):
            used.setdefault(name, set()).add(where)
    return used


@dataclass
class Prometheus:
    url: str
    client: httpx.AsyncClient

    async def query(self, expr: str) -> list[dict[str, object]]:
        answer = await self.client.get(f"{self.url}/api/v1/query", params={"query": expr})
        assert answer.status_code == 200, answer.text
        result: list[dict[str, object]] = answer.json()["data"]["result"]
        return result


@contextlib.asynccontextmanager
async def prometheus(stack: Stack, directory: Path) -> AsyncIterator[Prometheus]:
    """A real Prometheus on loopback scraping the stack every second, with the chart's rules."""
    write_rule_file(directory / "rules.yaml", rule_groups())
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules.yaml"],
        "scrape_configs": [
            {
                "job_name": job,
                "static_configs": [{"targets": [target], "labels": {"namespace": NAMESPACE}}],
            }
            for job, target in stack.targets.items()
        ],
    }
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        tool("prometheus"),
        f"--config.file={directory / 'prometheus.yml'}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
        cwd=directory,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.returncode is None, "prometheus exited at start-up"
            with contextlib.suppress(httpx.TransportError):
                if (await stack.client.get(f"{url}/-/ready")).status_code == 200:
                    break
            assert time.monotonic() < deadline, "prometheus did not become ready"
            await asyncio.sleep(0.1)
        yield Prometheus(url, stack.client)
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), timeout=10)
            except TimeoutError:
                process.kill()
                await process.wait()


@pytest.fixture(scope="module")
def scraped(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prometheus")


async def test_rules_and_dashboard_name_only_exported_metrics(stack: Stack, scraped: Path) -> None:
    """Every metric a rule or panel queries is one the services really export."""
    async with prometheus(stack, scraped) as server:
        await wait_for_scrapes(server, 1)
        # Rates need a sample of each counter before the second wave, not just after it.
        await send_traffic(stack, between_waves=lambda: wait_for_scrapes(server, 1))
        await wait_for_scrapes(server, 2)
        exported = await stack.exported()
        used = named_by_rules_and_dashboard()
        unknown = {
            name: sorted(where)
            for name, where in used.items()
            if name not in exported | recorded_names() | {"up"}
        }

        assert not unknown, f"not exported by any service: {unknown}"
        assert {
            "postback_edge_kafka_outage_seconds",
            "postback_edge_provider_retry_budget_seconds",
        } <= used.keys()

        # The dashboard's key panels show data for this traffic, as Grafana would query them.
        queries = dict(dashboard_queries())
        for panel in dashboard()["panels"]:
            if panel["title"] not in KEY_PANELS:
                continue
            for target in panel["targets"]:
                where = f"panel {panel['title']!r} {target['refId']}"
                result = await server.query(queries[where])
                assert result, f"{where} returned no data: {queries[where]}"
                if panel["title"] in MOVING and target["refId"] == "A":
                    assert max(float(r["value"][1]) for r in result) > 0, where  # type: ignore[index]

        # The recording rules evaluate on the real series.
        for record in (
            "postback:edge_requests:rate5m",
            "postback:events:rate5m",
            "postback:processor_consumer_lag:sum",
        ):
            result = await server.query(record)
            assert result, f"{record} recorded nothing"
            assert result[0]["metric"]["job"].startswith(JOB_PREFIX)  # type: ignore[index]


async def wait_for_scrapes(server: Prometheus, count: int) -> None:
    """Until Prometheus has scraped every target at least `count` more times."""

    async def scrapes() -> float:
        result = await server.query(f'min(count_over_time(up{{job=~"{JOB_PREFIX}-.*"}}[1h]))')
        targets = await server.query(f'count(up{{job=~"{JOB_PREFIX}-.*"}} == 1)')
        if not result or not targets or float(targets[0]["value"][1]) < 3:  # type: ignore[index]
            return 0
        return float(result[0]["value"][1])  # type: ignore[index]

    start = await scrapes()
    deadline = time.monotonic() + 30
    while await scrapes() < start + count:
        assert time.monotonic() < deadline, "prometheus is not scraping the services"
        await asyncio.sleep(0.25)


async def run_helm_test_script(url: str, env: dict[str, str]) -> tuple[int, str]:
    (pod,) = of_kind(render("production-values"), "Pod")
    (container,) = pod["spec"]["containers"]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *container["command"][1:],
        container["args"][0],
        env={"PATH": os.environ["PATH"], "EDGE_URL": url, "TRACKING_ID": "helm-test-pp-1", **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_helm_test_hook_gets_200_and_makes_an_event(stack: Stack) -> None:
    """`helm test`'s script posts a valid postback: the edge says 200 and the processor emits it."""

    async def processor_count(name: str) -> float:
        text = (await stack.client.get(f"http://127.0.0.1:{stack.processor_port}/metrics")).text
        return sum(
            s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == name
        )

    emitted = await processor_count("postback_processor_events_emitted_total")
    dead = await processor_count("postback_processor_dead_letters_total")

    status, output = await run_helm_test_script(f"{stack.edge.url}/postbacks/helm-test", {})
    await wait_caught_up(stack.env, timeout=60)

    assert status == 0, output
    assert "200" in output
    assert await processor_count("postback_processor_events_emitted_total") == emitted + 1
    assert await processor_count("postback_processor_dead_letters_total") == dead


async def test_helm_test_hook_sends_the_basic_credentials(stack: Stack) -> None:
    """With Basic auth on, the hook authenticates from the Secret's values, and fails without."""
    credentials = {"EDGE_BASIC_AUTH_USER": "provider", "EDGE_BASIC_AUTH_PASSWORD": "s3cret pass"}
    async with running_edge({**stack.env, **credentials}) as edge:
        url = f"{edge.url}/postbacks/helm-test"
        status, output = await run_helm_test_script(url, credentials)
        refused, refused_output = await run_helm_test_script(url, {})

    assert status == 0, output
    assert refused != 0
    assert "expected 200" in refused_output
    assert "401" in refused_output
