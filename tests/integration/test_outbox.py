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
    outbox = Outbox(nc, window=8)  # small windows: 25 of them for 200 events
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


async def test_an_unpublishable_event_is_dropped_and_counted_not_retried_forever(
    nc: Client, prefix: str
) -> None:
    # Failed before the fix: the event over max_payload stayed at the head of the queue,
    # retried for ever, and every event behind it waited with it.
    js = nc.jetstream()
    stream, subject = f"{prefix}_OB", f"{prefix}.ob.e"
    # The stream refuses more than 1 KiB; the client refuses more than the server's max.
    await js.add_stream(name=stream, subjects=[f"{prefix}.ob.>"], max_msg_size=1024)
    outbox = Outbox(nc, window=8, ack_timeout=1.0)
    async with anyio.create_task_group() as tg:
        await tg.start(outbox.run)
        outbox.put(subject, b"before", "m-0")
        too_big = await outbox.publish(subject, b"x" * (nc.max_payload + 1), "m-1")
        refused = await outbox.publish(subject, b"y" * 2048, "m-2")
        for n in range(3, 20):
            outbox.put(subject, str(n).encode(), f"m-{n}")
        assert await outbox.flush(10), outbox.stats()
        tg.cancel_scope.cancel()
    assert not too_big and not refused
    stats = outbox.stats()
    assert (stats.acked, stats.dropped, stats.unpublishable, stats.pending) == (18, 2, 2, 0)
    assert "BadRequestError" in stats.last_error
    assert (await js.stream_info(stream)).state.messages == 18


async def test_a_transient_failure_is_retried_in_order(nc: Client, prefix: str) -> None:
    js = nc.jetstream()
    stream, subject = f"{prefix}_OB", f"{prefix}.ob.e"
    outbox = Outbox(nc, window=8, ack_timeout=0.5, max_backoff=0.2)
    async with anyio.create_task_group() as tg:
        await tg.start(outbox.run)
        # No stream yet: nothing can be stored, but nothing is dropped either.
        assert not await outbox.publish(subject, b"0", "m-0")
        for n in range(1, 5):
            outbox.put(subject, str(n).encode(), f"m-{n}")
        await anyio.sleep(0.5)
        assert outbox.stats().dropped == 0 and outbox.pending == 5 and outbox.failing
        await js.add_stream(name=stream, subjects=[f"{prefix}.ob.>"])
        assert await outbox.flush(10)
        tg.cancel_scope.cancel()
    sub = await js.pull_subscribe(subject, stream=stream)
    got = [int(m.data) for m in await sub.fetch(5, timeout=5)]
    assert got == [0, 1, 2, 3, 4] and outbox.stats().dropped == 0
