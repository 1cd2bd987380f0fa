"""No service logs a subscriber's number or message, and the events topic does not publish them."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import orjson
import pytest

from consumers.processor.privacy import Privacy
from devstack import DEVELOPMENT_PSEUDONYM_KEY
from testkit.kafka_tools import read_all_committed
from tests.integration.conftest import StartService
from tests.integration.consumers.conftest import wait_caught_up, with_processor_settings

pytestmark = pytest.mark.kafka

# A subscriber's number in the provider's writing and in others, and a message only they wrote.
NUMBER = "4915112345698"
NEEDLES = (NUMBER, "+49 151 12345698", "15112345698", "Meet me by the old mill", "mill-8R2Q")
TEXT = "Meet me by the old mill at nine, mill-8R2Q"
POSTBACKS = [
    (  # an inbound SMS: the subscriber's number in `from`, their text
        "application/json",
        orjson.dumps(
            {
                "origin": "SMS_MO",
                "code": "N211",
                "from": NUMBER,
                "to": "60856",
                "message-text": TEXT,
                "tracking-id": "logs-mo-1",
                "timestamp": "2026-03-05T14:22:47Z",
            }
        ),
    ),
    (  # a delivery report: the number in `to`, written the international way
        "application/json",
        orjson.dumps(
            {
                "origin": "SMS_MT",
                "code": "N202",
                "status": "Delivered",
                "from": "60856",
                "to": "+49 151 12345698",
                "tracking-id": "logs-mt-1",
                "timestamp": "2026-03-05T14:22:48Z",
            }
        ),
    ),
    (  # a v1 inbound MMS with a subject
        "text/xml",
        (
            f"<POSTBACK><ORIGIN>MMS_MO</ORIGIN><CODE>N401</CODE><FROM>{NUMBER}</FROM>"
            f"<TO>60856</TO><SUBJECT>{TEXT}</SUBJECT><TRACKINGID>logs-mo-2</TRACKINGID>"
            "<CONTENT><FILE>https://media.example.net/mill-8R2Q.jpg</FILE></CONTENT></POSTBACK>"
        ).encode(),
    ),
    (  # malformed (cut short), carrying both: dead-lettered, its detail never logged
        "application/json",
        f'{{"origin":"SMS_MO","code":"N211","from":"{NUMBER}","message-text":"{TEXT}"'.encode(),
    ),
]


async def consumed_by_metrics(port: int, client: httpx.AsyncClient) -> float:
    text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    for line in text.splitlines():
        if line.startswith("postback_events_consumed_total "):
            return float(line.split()[1])
    return 0.0


async def test_no_log_line_of_any_service_holds_a_number_or_a_message(
    base_env: dict[str, str], tmp_path: Path, services: StartService
) -> None:
    """Edge, processor and metrics service at DEBUG (a superset of every INFO line) handle a
    known number and text, also in a dead-lettered body: none of their output contains either,
    nor does the events topic, whose metrics still count the subscriber's country; the raw
    topic and the DLQ keep them (the archive)."""
    env = {
        **with_processor_settings(base_env),
        "LOG_LEVEL": "DEBUG",
        "METRICS_AUTO_OFFSET_RESET": "earliest",
        "METRICS_GROUP_ID": f"metrics-{tmp_path.name}",
        "EDGE_KAFKA_PROBE_SECONDS": "0.5",
    }
    edge, processor, metrics = (services(kind, env) for kind in ("edge", "processor", "metrics"))
    for service in (edge, processor, metrics):
        await service.start()
    async with httpx.AsyncClient(timeout=10) as client:
        for content_type, body in POSTBACKS:
            answer = await client.post(
                f"http://127.0.0.1:{edge.port}/postbacks/mt",
                content=body,
                headers={"content-type": content_type},
            )
            assert answer.status_code == 200, answer.text
        await wait_caught_up(env)
        deadline = time.monotonic() + 30
        while await consumed_by_metrics(metrics.port, client) < len(POSTBACKS) - 1:
            assert time.monotonic() < deadline, "the metrics service did not count the events"
            await asyncio.sleep(0.1)
        # Pseudonymised events still count by the subscriber's country.
        exported = (await client.get(f"http://127.0.0.1:{metrics.port}/metrics")).text
        assert 'postback_operator_events_total{country="DE",operator_id="none"} 3.0' in exported
    for service in (edge, processor, metrics):
        # uvicorn re-raises the SIGTERM it handled once the edge has drained.
        assert await service.stop() in (0, -signal.SIGTERM), service.name

    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    raw = b"".join(r.value for r in await read_all_committed(bootstrap, env["KAFKA_TOPIC_RAW"]))
    dlq = await read_all_committed(bootstrap, env["KAFKA_TOPIC_DLQ"])
    events = await read_all_committed(bootstrap, env["KAFKA_TOPIC_EVENTS"])
    assert NUMBER.encode() in raw  # the needles were really sent
    assert TEXT.encode() in raw
    assert [record.value for record in dlq] == [POSTBACKS[-1][1]]
    assert len(events) == len(POSTBACKS) - 1
    pseudonym = Privacy(DEVELOPMENT_PSEUDONYM_KEY.encode(), include_content=False).pseudonym(NUMBER)
    published = b"".join(record.value for record in events)
    assert published.count(pseudonym.encode()) == len(events)  # one subscriber, one pseudonym
    for service in (edge, processor, metrics):
        name, output = service.name, service.log_path.read_text(errors="replace")
        assert '"level": "debug"' in output or '"level":"debug"' in output, name
        for needle in (*NEEDLES, "media.example.net"):
            assert needle not in output, f"{name} logged {needle!r}"
            assert needle.encode() not in published, f"the events topic holds {needle!r}"
