"""The edge against a real broker: what is answered 200 is in Kafka, what is refused is not."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import time
import uuid
from typing import Any

import httpx
import pytest
from aiokafka.partitioner import DefaultPartitioner

from ingest.keys import body_hash_key
from ingest.server import GC_THRESHOLDS, build_server
from ingest.settings import EdgeSettings
from testkit.kafka_tools import ReadTopic, topic_size
from tests.integration.ingest.conftest import EdgeFactory, RunningEdge

pytestmark = pytest.mark.kafka

BODIES = {
    "v2-json": (
        b'{"origin":"MMS_MT","code":"N102","status":"Delivered","tracking-id":"TU1TXzU5Nzg3OQ==",'
        b'"to":"17743199144","timestamp":"2021-01-26T18:00:07.990498+00:00"}',
        b"TU1TXzU5Nzg3OQ==",
    ),
    "v1-xml": (
        b"<?xml version='1.0'?><POSTBACK><ORIGIN>SMS_MT</ORIGIN><CODE>N202</CODE>"
        b"<TRACKINGID>U01TXzkxMjM0NTY3</TRACKINGID></POSTBACK>",
        b"U01TXzkxMjM0NTY3",
    ),
    "v1-sms-mo": (
        b"<POSTBACK><ORIGIN>SMS_MO</ORIGIN><CODE>N211</CODE><TEXT>STOP</TEXT>"
        b"<TRANSACTIONID>604KD-11833-720QP-915C2</TRANSACTIONID></POSTBACK>",
        b"604KD-11833-720QP-915C2",
    ),
    "truncated-json": (b'{"origin":"SMS_MT","code":"N2', None),
    "invalid-utf8": (b"\xff\xfe\x00garbage\x80", None),
    "empty": (b"", None),
}


async def post(
    client: httpx.AsyncClient,
    edge: RunningEdge,
    body: bytes,
    path: str = "/postbacks/mt",
    **kw: Any,
) -> httpx.Response:
    return await client.post(edge.url + path, content=body, **kw)


async def raw_status(edge: RunningEdge, head: bytes, body_parts: list[bytes]) -> bytes:
    """Send a raw request and return its status line; the edge may hang up while we write."""
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    try:
        writer.write(head)
        for part in body_parts:
            writer.write(part)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        return await asyncio.wait_for(reader.readline(), timeout=10)
    finally:
        writer.close()


async def test_every_accepted_postback_is_in_the_raw_topic_byte_for_byte(
    edge: RunningEdge, client: httpx.AsyncClient, read_topic: ReadTopic
) -> None:
    """A 200 means the exact body, its key and the request's facts are stored in Kafka."""
    sent = {}
    before_ms = time.time_ns() // 1_000_000
    for name, (body, _) in BODIES.items():
        request_id = f"req-{name}-{uuid.uuid4().hex[:6]}"
        response = await post(
            client,
            edge,
            body,
            headers={
                "content-type": "application/json",
                "user-agent": "provider/1.0",
                "x-request-id": request_id,
            },
        )
        assert response.status_code == 200, name
        sent[request_id] = name
    after_ms = time.time_ns() // 1_000_000

    records = await read_topic(edge.settings.topics.raw.name, len(sent))
    assert len(records) == len(sent)
    for record in records:
        headers = dict(record.headers)
        name = sent[headers["request-id"].decode()]
        body, tracking_id = BODIES[name]
        assert record.value == body, name
        assert record.key == (tracking_id or body_hash_key(body)), name
        assert before_ms <= int(headers["received-at"]) <= after_ms
        assert record.timestamp == int(headers["received-at"])
        assert headers["source"] == b"mt"
        assert headers["content-type"] == b"application/json"
        assert headers["user-agent"] == b"provider/1.0"
        assert headers["client-addr"] == b"127.0.0.1"
    assert edge.metric("postback_edge_requests_total", source="mt", status="200") == len(sent)


async def test_a_retry_and_every_notification_of_a_message_share_a_partition(
    edge: RunningEdge, client: httpx.AsyncClient, read_topic: ReadTopic
) -> None:
    """Notifications of one message (and their retries) stay ordered in one partition: the
    one Kafka's default partitioner gives their key, as for any other producer of the topic."""
    notifications = [
        b'{"origin":"MMS_MT","code":"N101","tracking-id":"same-message"}',
        b'{"origin":"MMS_MT","code":"N102","tracking-id":"same-message"}',
        b'{"origin":"MMS_MT","code":"N102","tracking-id":"same-message"}',  # a retry
    ] + [f'{{"origin":"SMS_MT","tracking-id":"other-{i}"}}'.encode() for i in range(12)]
    for body in notifications:
        assert (await post(client, edge, body, path="/postbacks")).status_code == 200

    records = await read_topic(edge.settings.topics.raw.name, len(notifications))
    same = [record for record in records if record.key == b"same-message"]
    assert len(same) == 3
    assert len({record.partition for record in same}) == 1
    assert [record.value for record in same] == notifications[:3]
    assert len({record.partition for record in records}) > 1, "keys should spread"
    assert {dict(record.headers)["source"] for record in records} == {b"default"}
    every = list(range(edge.settings.topics.raw.partitions))
    for record in records:
        assert record.key is not None
        assert record.partition == DefaultPartitioner()(record.key, every, every), record.key


async def test_oversized_bodies_are_refused_with_413_and_not_stored(
    start_edge: EdgeFactory, client: httpx.AsyncClient, kafka_bootstrap: str
) -> None:
    """Bodies over the limit get 413, declared or chunked, and nothing reaches Kafka."""
    async with start_edge(EDGE_MAX_BODY_BYTES=1000) as edge:
        declared = await post(client, edge, b"x" * 1001)
        assert declared.status_code == 413

        # No Content-Length: the edge must count as it reads and stop at the limit.
        chunked = await raw_status(
            edge,
            b"POST /postbacks HTTP/1.1\r\nHost: edge\r\nTransfer-Encoding: chunked\r\n\r\n",
            [b"C8\r\n" + b"y" * 200 + b"\r\n"] * 10,
        )
        assert chunked.startswith(b"HTTP/1.1 413")
        at_limit = await post(client, edge, b"z" * 1000)
        assert at_limit.status_code == 200

        assert edge.metric("postback_edge_refusals_total", reason="body_too_large") == 2
        assert await topic_size(kafka_bootstrap, edge.settings.topics.raw.name) == 1


async def test_a_declared_oversized_body_is_refused_before_it_is_sent(edge: RunningEdge) -> None:
    """413 comes back on the headers alone: the edge never waits for 50 MB to arrive."""
    status_line = await raw_status(
        edge,
        b"POST /postbacks HTTP/1.1\r\nHost: edge\r\nContent-Length: 52428800\r\n\r\n",
        [],
    )
    assert status_line.startswith(b"HTTP/1.1 413")


async def test_a_stalled_body_is_answered_within_the_deadline(edge: RunningEdge) -> None:
    """A client that stops sending mid-body is cut off at the answer deadline, not held open."""
    started = time.monotonic()
    status_line = await raw_status(
        edge, b"POST /postbacks HTTP/1.1\r\nHost: edge\r\nContent-Length: 100\r\n\r\n", [b"0123"]
    )
    elapsed = time.monotonic() - started
    assert status_line.startswith(b"HTTP/1.1 408")
    assert elapsed < edge.settings.answer_deadline_s + 1
    assert edge.metric("postback_edge_refusals_total", reason="body_timeout") == 1


async def test_clients_outside_the_allowlist_get_403(
    start_edge: EdgeFactory, client: httpx.AsyncClient, kafka_bootstrap: str
) -> None:
    """Only allowlisted senders are heard; a forged X-Forwarded-For from them changes nothing."""
    async with start_edge(EDGE_ALLOWED_CIDRS="10.0.0.0/8") as edge:
        refused = await post(client, edge, b"{}")
        assert refused.status_code == 403
        forged = await post(client, edge, b"{}", headers={"x-forwarded-for": "10.1.2.3"})
        assert forged.status_code == 403
        assert edge.metric("postback_edge_refusals_total", reason="client_not_allowed") == 2
        # A client refused by the allowlist cannot make up source labels: `other`, not `mt`.
        labels = {"source": "other", "status": "403"}
        assert edge.metric("postback_edge_requests_total", **labels) == 2
        assert edge.metric("postback_edge_requests_total", source="mt", status="403") == 0
        assert (await client.get(edge.url + "/healthz")).status_code == 200
        assert await topic_size(kafka_bootstrap, edge.settings.topics.raw.name) == 0


async def test_forwarded_for_is_believed_only_from_trusted_proxies(
    start_edge: EdgeFactory, client: httpx.AsyncClient, read_topic: ReadTopic
) -> None:
    """Behind a trusted proxy the client is the last untrusted hop of X-Forwarded-For."""
    async with start_edge(
        EDGE_ALLOWED_CIDRS="203.0.113.0/24", EDGE_TRUSTED_PROXIES="127.0.0.1/32"
    ) as edge:
        accepted = await post(client, edge, b"{}", headers={"x-forwarded-for": "203.0.113.5"})
        assert accepted.status_code == 200
        spoofed = await post(
            client, edge, b"{}", headers={"x-forwarded-for": "203.0.113.5, 198.51.100.7"}
        )
        assert spoofed.status_code == 403
        (record,) = await read_topic(edge.settings.topics.raw.name, 1)
        assert dict(record.headers)["client-addr"] == b"203.0.113.5"


async def test_basic_credentials_are_required_when_configured(
    start_edge: EdgeFactory, client: httpx.AsyncClient
) -> None:
    """With credentials configured, a missing or wrong Authorization gets 401, the right 200."""
    async with start_edge(
        EDGE_BASIC_AUTH_USER="provider", EDGE_BASIC_AUTH_PASSWORD="s3cret:with-colon"
    ) as edge:
        missing = await post(client, edge, b"{}")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"].startswith("Basic")
        wrong = await post(client, edge, b"{}", auth=("provider", "guess"))
        assert wrong.status_code == 401
        garbage = await post(client, edge, b"{}", headers={"authorization": "Basic !!!"})
        assert garbage.status_code == 401
        right = await post(client, edge, b"{}", auth=("provider", "s3cret:with-colon"))
        assert right.status_code == 200
        token = base64.b64encode(b"provider:s3cret:with-colon").decode()
        lowercase_scheme = await post(
            client, edge, b"{}", headers={"authorization": f"basic {token}"}
        )
        assert lowercase_scheme.status_code == 200
        assert edge.metric("postback_edge_refusals_total", reason="bad_credentials") == 3


async def test_other_methods_and_paths_are_refused(
    start_edge: EdgeFactory, client: httpx.AsyncClient
) -> None:
    """GET on the postback URL is 405; unknown paths and malformed or unknown sources are 404."""
    async with start_edge(EDGE_SOURCES="mt,mo") as edge:
        wrong_method = await client.get(edge.url + "/postbacks/mt")
        assert wrong_method.status_code == 405
        assert wrong_method.headers["allow"] == "POST"
        assert (await client.put(edge.url + "/postbacks", content=b"{}")).status_code == 405
        for path in ("/", "/postback", "/postbacks/mt/extra", "/postbacks/MT", "/postbacks/xx"):
            assert (await client.post(edge.url + path, content=b"{}")).status_code == 404, path
        assert (await client.post(edge.url + "/postbacks/mo", content=b"{}")).status_code == 200
        assert edge.metric("postback_edge_refusals_total", reason="method_not_allowed") == 2
        assert edge.metric("postback_edge_refusals_total", reason="not_found") == 5


async def test_health_readiness_and_metrics_endpoints(
    edge: RunningEdge, client: httpx.AsyncClient
) -> None:
    """Probes and Prometheus get plain answers: alive, ready with Kafka, metrics as text."""
    assert (await client.get(edge.url + "/healthz")).json() == {"status": "alive"}
    ready = await client.get(edge.url + "/readyz")
    assert ready.status_code == 200
    assert ready.json()["kafka_up"] is True
    await post(client, edge, b"{}")
    metrics = await client.get(edge.url + "/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    for name in (
        'postback_edge_requests_total{source="mt",status="200"} 1.0',
        "postback_edge_request_duration_seconds_count 1.0",
        "postback_edge_produce_duration_seconds_count 1.0",
        "postback_edge_body_size_bytes_sum 2.0",
        "postback_edge_requests_in_flight 0.0",
        "postback_edge_kafka_up 1.0",
        "postback_edge_kafka_outage_seconds 0.0",
    ):
        assert name in metrics.text


async def test_a_served_edge_freezes_its_start_up_objects_and_collects_rarely(
    edge_env: dict[str, str],
) -> None:
    """As its own process (`python -m ingest` asks for it), the edge keeps what start-up made
    out of the garbage collector's scans and collects young objects about once per thousand
    requests: the defaults cost ~5% of its CPU under load."""
    thresholds = gc.get_threshold()
    settings = EdgeSettings.from_environ({**edge_env, "EDGE_PORT": "0"})
    server = build_server(settings, tune_gc=True)
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:  # uvicorn offers a flag, not an event, for "listening"
            assert not serving.done(), "the edge exited during start-up"
            await asyncio.sleep(0.01)
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 10_000
    finally:
        server.should_exit = True
        await serving
        gc.unfreeze()
        gc.set_threshold(*thresholds)
