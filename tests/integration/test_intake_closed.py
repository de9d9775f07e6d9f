"""Answering over a connection that closed under the handler: counted, never fatal.

``reply_error`` runs inside ``except`` blocks; if it raised there (the connection is
closed or draining), the exception would escape the handler and end the service's
task group, so one late request could take a whole service down.
"""

from __future__ import annotations

import anyio
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from shared.errors import BadRequest
from shared.intake import Intake
from shared.micro import EndpointStats
from shared.window import SlidingWindow

pytestmark = pytest.mark.anyio


def no_stats() -> EndpointStats | None:
    return None


async def closed_client(nats_url: str) -> Client:
    client = Client()
    await client.connect(nats_url, allow_reconnect=False)
    await client.close()
    return client


async def test_error_replies_on_a_closed_connection_are_counted_not_raised(
    nats_url: str,
) -> None:
    client = await closed_client(nats_url)
    intake = Intake(window=SlidingWindow(60.0), max_bytes=1024, concurrency=4)

    async def refuse(_: dict[str, object]) -> None:
        raise BadRequest("no")

    async def crash(_: dict[str, object]) -> None:
        raise RuntimeError("bug")

    async def note(_: dict[str, object], _msg: Msg) -> None:
        raise AssertionError("garbage must not reach the handler")

    handlers = [
        intake.request_handler("refuse", dict, refuse, no_stats),
        intake.request_handler("crash", dict, crash, no_stats),
        intake.request_handler("garbage", dict, refuse, no_stats),
        intake.message_handler("note", dict, note),
    ]
    bodies = [b"{}", b"{}", b"\xff", b"\xff"]
    # Every one of these answers with an error over the closed connection. A raise
    # would end this task group and fail the test.
    async with anyio.create_task_group() as tg:
        intake.bind(tg, client)
        for handler, body in zip(handlers, bodies, strict=True):
            await handler(Msg(_client=client, subject="x", reply="_INBOX.gone", data=body))
    assert intake.inflight == 0
    assert intake.stats()["replies_failed"] == 4
    # The direct call, as the orchestrator's beacon handler makes it, does not raise either.
    await intake.reply_error(Msg(_client=client, subject="x", reply="_INBOX.gone"), 400, "bad")
    assert intake.stats()["replies_failed"] == 5
