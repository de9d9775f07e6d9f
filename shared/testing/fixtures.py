"""Fixtures that build services and clients on the real nats-server of the test run.

Every fixture owns its cleanup: services are stopped in order and clients closed at
teardown. Each test has its own cluster prefix, so tests never see each other; the
``prefix`` fixture (shared/testing/server.py) deletes its streams last.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any, TypeVar

import nats
import pytest
from nats.aio.client import Client

from shared.config import convert_config
from shared.service import Service

S = TypeVar("S", bound=Service[Any])

ServiceFactory = Callable[..., Awaitable[Any]]


@pytest.fixture
def anyio_backend() -> str:
    """nats-py runs on asyncio only."""
    return "asyncio"


def service_config(cls: type[Service[Any]], nats_url: str, prefix: str, **overrides: Any) -> Any:
    """A config for ``cls`` pointed at the test server and prefix, with fast beacons."""
    values: dict[str, Any] = {
        "nats_url": nats_url,
        "prefix": prefix,
        "instance": f"{cls.name}-{uuid.uuid4().hex[:6]}",
        "beacon_interval": 0.2,
        "connect_timeout": 5.0,
        "shutdown_timeout": 5.0,
        # JetStream reserves a stream's max_bytes up front: keep each test's small so
        # hundreds of tests fit on one server.
        "events_max_bytes": 16 << 20,
    }
    values.update(overrides)
    return convert_config(cls.config_type, values)


@pytest.fixture
async def start_service(nats_url: str, prefix: str) -> AsyncIterator[ServiceFactory]:
    """``await start_service(Cls, **config)``: a running service, stopped at teardown."""
    async with AsyncExitStack() as stack:

        async def start(cls: type[S], **overrides: Any) -> S:
            service = cls(service_config(cls, nats_url, prefix, **overrides))
            await stack.enter_async_context(service.running())
            return service

        yield start


@pytest.fixture
async def nc(nats_url: str, prefix: str) -> AsyncIterator[Client]:
    """A plain NATS client for the test to observe and poke with.

    It takes ``prefix`` so that it is closed before the prefix's streams are deleted.
    """
    client = await nats.connect(nats_url, connect_timeout=5)
    try:
        yield client
    finally:
        await client.close()
