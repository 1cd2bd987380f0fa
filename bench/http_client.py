"""A minimal serial HTTP/1.1 client over one keep-alive connection, as the provider sends.

Raw asyncio streams with a prebuilt request, so that the client costs as little as possible
and the same client drives every server compared.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

USER_AGENT: Final = b"bench-serial/1"  # the edge stores it, as it stores the provider's


async def post_serially(
    port: int, bodies: list[bytes], path: str = "/postbacks"
) -> tuple[float, list[float], dict[int, int]]:
    """Post every body in turn; return elapsed seconds, per-request latencies, status counts."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    started = time.perf_counter()
    try:
        for body in bodies:
            request = (
                f"POST {path} HTTP/1.1\r\nHost: bench\r\nUser-Agent: {USER_AGENT.decode()}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            sent = time.perf_counter()
            writer.write(request)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - sent)
            status = int(status_line.split()[1])
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()
    return time.perf_counter() - started, latencies, statuses
