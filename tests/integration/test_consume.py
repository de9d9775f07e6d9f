"""Durable event consumption: nothing missed while down, failures come back, bad ones counted."""

from __future__ import annotations

import anyio
import pytest
from nats.aio.client import Client

from shared.codec import encode
from shared.config import BaseConfig, convert_config
from shared.consume import EventConsumer
from shared.contracts import Event
from shared.events import JobCancelled, build_event
from shared.provision import ensure_stream, events_stream_config
from shared.subjects import Subjects
from shared.testing.helpers import eventually

pytestmark = pytest.mark.anyio


async def publish(nc: Client, subjects: Subjects, seq: int) -> None:
    event = build_event(
        subjects.prefix, "job_manager", "jm-1", seq, JobCancelled(job_id=f"job-{seq}")
    )
    await nc.jetstream().publish(subjects.event("job_manager", "JOB_CANCELLED"), encode(event))


async def test_consumer_sees_every_event_once_even_across_a_restart(
    nc: Client, prefix: str
) -> None:
    subjects = Subjects(prefix)
    config = convert_config(BaseConfig, {"prefix": prefix, "events_max_bytes": 1 << 20})
    await ensure_stream(nc.jetstream(), events_stream_config(subjects, config))
    seen: list[str] = []
    failed_once: set[str] = set()

    async def handler(event: Event) -> None:
        job = str(event.data["job_id"])
        if job == "job-2" and job not in failed_once:
            failed_once.add(job)
            raise RuntimeError("transient")  # comes back later
        seen.append(job)

    def consumer() -> EventConsumer:
        return EventConsumer(
            nc.jetstream(),
            stream=subjects.events_stream,
            durable="t-consumer",
            filter_subjects=[subjects.events_of("job_manager")],
            handler=handler,
            retry_delay_s=0.1,
        )

    for seq in (1, 2, 3):
        await publish(nc, subjects, seq)
    first = consumer()
    async with anyio.create_task_group() as tg:
        await tg.start(first.run)
        await eventually(lambda: len(seen) == 3, what="three events handled")
        tg.cancel_scope.cancel()
    assert sorted(seen) == ["job-1", "job-2", "job-3"]
    assert first.stats()["handler_errors"] == 1
    # While nobody consumes: two more events and a message that is not an event.
    await publish(nc, subjects, 4)
    await nc.jetstream().publish(subjects.event("job_manager", "JOB_CANCELLED"), b"garbage")
    await publish(nc, subjects, 5)
    second = consumer()
    async with anyio.create_task_group() as tg:
        await tg.start(second.run)
        await eventually(lambda: len(seen) == 5, what="the two new events")
        await anyio.sleep(0.3)  # room for a wrong redelivery to show up
        tg.cancel_scope.cancel()
    assert sorted(seen) == [f"job-{n}" for n in range(1, 6)]
    assert second.stats()["invalid"] == 1


async def test_garbage_events_are_each_counted_but_logged_once(
    nc: Client, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    subjects = Subjects(prefix)
    config = convert_config(BaseConfig, {"prefix": prefix, "events_max_bytes": 1 << 20})
    await ensure_stream(nc.jetstream(), events_stream_config(subjects, config))
    for _ in range(20):
        await nc.jetstream().publish(subjects.event("job_manager", "JOB_CANCELLED"), b"\x00junk")
    await publish(nc, subjects, 1)

    seen: list[Event] = []

    async def handler(event: Event) -> None:
        seen.append(event)

    consumer = EventConsumer(
        nc.jetstream(),
        stream=subjects.events_stream,
        durable="t-garbage",
        filter_subjects=[subjects.events_of("job_manager")],
        handler=handler,
    )
    with caplog.at_level("WARNING", logger="ringmaster"):
        async with anyio.create_task_group() as tg:
            await tg.start(consumer.run)
            await eventually(lambda: len(seen) == 1, what="the one real event")
            tg.cancel_scope.cancel()
    assert consumer.stats()["invalid"] == 20
    assert sum("undecodable event" in r.getMessage() for r in caplog.records) == 1


async def test_poison_events_are_terminated_after_bounded_deliveries(
    nc: Client, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    subjects = Subjects(prefix)
    config = convert_config(BaseConfig, {"prefix": prefix, "events_max_bytes": 1 << 20})
    await ensure_stream(nc.jetstream(), events_stream_config(subjects, config))
    # More poison than the consumer may have unacknowledged (4 x batch): unbounded
    # redelivery would hold every slot and the good event behind them would never come.
    for seq in range(1, 21):
        await publish(nc, subjects, seq)
    await publish(nc, subjects, 100)
    attempts: list[str] = []
    handled: list[str] = []

    async def handler(event: Event) -> None:
        job = str(event.data["job_id"])
        if job != "job-100":
            attempts.append(job)
            raise RuntimeError("this event always breaks the handler")
        handled.append(job)

    consumer = EventConsumer(
        nc.jetstream(),
        stream=subjects.events_stream,
        durable="t-poison",
        filter_subjects=[subjects.events_of("job_manager")],
        handler=handler,
        batch=4,
        retry_delay_s=0.05,
        max_deliveries=3,
    )
    with caplog.at_level("WARNING", logger="ringmaster"):
        async with anyio.create_task_group() as tg:
            await tg.start(consumer.run)
            await eventually(lambda: handled, timeout=20.0, what="the event behind the poison")
            await eventually(lambda: consumer.stats().get("poison") == 20, what="20 terminated")
            await anyio.sleep(0.3)  # room for a wrong redelivery to show up
            tg.cancel_scope.cancel()
    assert len(attempts) == 20 * 3
    assert consumer.stats()["handler_errors"] == 60
    assert sum("gave up on" in r.getMessage() for r in caplog.records) == 1
