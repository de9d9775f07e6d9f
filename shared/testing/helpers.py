"""Small helpers for tests: waiting on conditions, reading events from the stream."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
from nats.aio.client import Client
from nats.js.api import ConsumerConfig, DeliverPolicy

from shared.codec import decode
from shared.contracts import Event

T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T | None]] | Callable[[], T | None],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll ``check`` until it returns something truthy; fail the test after ``timeout``.

    The bound is generous on purpose: it detects a hang, it does not time anything.
    """
    last: Any = None
    with anyio.move_on_after(timeout):
        while True:
            last = check()
            if isinstance(last, Awaitable):
                last = await last
            if last:
                return last  # type: ignore[no-any-return]
            await anyio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


async def stream_events(nc: Client, stream: str, subject: str = ">") -> list[Event]:
    """Every event stored in ``stream`` (optionally filtered), in stream order."""
    return [event for event, _ in await stream_events_with_headers(nc, stream, subject)]


async def stream_events_with_headers(
    nc: Client, stream: str, subject: str = ">"
) -> list[tuple[Event, dict[str, str]]]:
    """Every event stored in ``stream`` with its headers (trace context), in stream order."""
    js = nc.jetstream()
    info = await js.stream_info(stream)
    total = info.state.messages
    if total == 0:
        return []
    sub = await js.pull_subscribe(
        subject if subject != ">" else "",
        stream=stream,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, inactive_threshold=10.0),
    )
    events: list[tuple[Event, dict[str, str]]] = []
    try:
        while len(events) < total:
            try:
                msgs = await sub.fetch(min(500, total - len(events)), timeout=1.0)
            except TimeoutError:
                break
            for msg in msgs:
                events.append((decode(Event, msg.data), dict(msg.headers or {})))
                await msg.ack()
    finally:
        await sub.unsubscribe()
    return events
