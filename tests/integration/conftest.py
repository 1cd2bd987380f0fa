"""What integration tests of several services share: the services as child processes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from testkit.services import Service

StartService = Callable[..., Service]


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[StartService]:
    """`services("processor", env)` makes a service process (not started) whose log goes to
    the test's directory; every one is stopped at the end of the test, whatever happened."""
    made: list[Service] = []

    def make(kind: str, env: dict[str, str], name: str = "") -> Service:
        service = Service(kind, env, tmp_path, name=name or f"{kind}-{len(made) + 1}")
        made.append(service)
        return service

    yield make
    for service in made:
        await service.kill()
