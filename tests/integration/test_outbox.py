"""The outbox against a real server: many windows in flight, every event stored once, in order."""

from __future__ import annotations

import anyio
import pytest
from nats.aio.client import Client

from shared.outbox import Outbox

pytestmark = pytest.mark.anyio


async def test_windows_in_flight_keep_order_and_store_each_event_once(
    nc: Client, prefix: str
) -> None:
    js = nc.jetstream()
    stream, subject = f"{prefix}_OB", f"{prefix}.ob.e"
    await js.add_stream(name=stream, subjects=[f"{prefix}.ob.>"])
    outbox = Outbox(js, window=8)  # small windows: 25 of them for 200 events
    async with anyio.create_task_group() as tg:
        await tg.start(outbox.run)
        for n in range(200):
            assert outbox.put(subject, str(n).encode(), f"m-{n}") is not None
        assert await outbox.publish(subject, b"200", "m-200")  # waits for its own ack
        assert await outbox.flush(30)
        tg.cancel_scope.cancel()
    stats = outbox.stats()
    assert (stats.acked, stats.pending, stats.dropped) == (201, 0, 0)
    sub = await js.pull_subscribe(subject, stream=stream)
    got: list[int] = []
    while len(got) < 201:
        got += [int(m.data) for m in await sub.fetch(201 - len(got), timeout=5)]
    assert got == list(range(201))
    assert (await js.stream_info(stream)).state.messages == 201
