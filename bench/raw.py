"""Raw JetStream publishing from one nats-py client: the limits events and jobs are set beside."""

from __future__ import annotations

import asyncio
import time
import uuid

from nats.js.client import JetStreamContext


async def raw_pipelined(
    js: JetStreamContext, subject: str, payload: bytes, count: int
) -> tuple[float, float]:
    """``publish_async`` ``count`` messages, wait for every ack; acks/s, CPU s per ack."""
    cpu = time.process_time()
    start = time.perf_counter()
    futures = [await js.publish_async(subject, payload) for _ in range(count)]
    await asyncio.gather(*futures)
    return count / (time.perf_counter() - start), (time.process_time() - cpu) / count


async def raw_pipelined_msgid(
    js: JetStreamContext, subject: str, payload: bytes, count: int
) -> float:
    """As :func:`raw_pipelined`, with a ``Nats-Msg-Id`` per message (as the outbox sends)."""
    tag = uuid.uuid4().hex[:8]
    start = time.perf_counter()
    futures = [
        await js.publish_async(subject, payload, headers={"Nats-Msg-Id": f"{tag}-{i}"})
        for i in range(count)
    ]
    await asyncio.gather(*futures)
    return count / (time.perf_counter() - start)


async def raw_awaited(js: JetStreamContext, subject: str, payload: bytes, count: int) -> float:
    """``js.publish`` awaited one by one; acks per second."""
    start = time.perf_counter()
    for _ in range(count):
        await js.publish(subject, payload)
    return count / (time.perf_counter() - start)
