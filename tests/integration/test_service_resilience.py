"""A service under bad input and a server restart: nothing lost, nothing fatal."""

from __future__ import annotations

import os

import anyio
import msgspec
import pytest
from nats.aio.client import Client

from shared.codec import decode, encode
from shared.config import BaseConfig
from shared.contracts import ControlCommand, ControlReply, Empty, ServiceStatus
from shared.embedded import EmbeddedServer
from shared.events import EventData
from shared.service import Service
from shared.testing.fixtures import ServiceFactory, service_config
from shared.testing.helpers import eventually, stream_events

pytestmark = pytest.mark.anyio


class Tick(EventData, frozen=True, kw_only=True):
    """A test event carrying its own counter."""

    TYPE = "TICK_EMITTED"
    n: int


class Echo(msgspec.Struct, frozen=True):
    """The request of the test endpoint."""

    text: str
    times: int = 1


class Garbage(Service[BaseConfig]):
    """A service with a typed endpoint and a typed subscription, to throw garbage at."""

    name = "garbage_target"
    description = "takes bad input in tests"

    async def setup(self) -> None:
        self.seen: list[Echo] = []

        async def echo(req: Echo) -> Echo:
            return Echo(text=req.text * req.times)

        async def on_note(note: Echo, _msg: object) -> None:
            self.seen.append(note)

        await self.add_endpoint("echo", Echo, echo)
        await self.subscribe(self.subjects.api(self.name, "notes"), Echo, on_note, kind="notes")


GARBAGE = {
    "random": os.urandom(64),
    "wrong_schema": b'{"text": 5, "times": "x"}',
    "empty": b"",
    "not_json": b"\xff\xfe{",
    "oversized": b'{"text": "' + b"a" * 70_000 + b'"}',
}


async def test_garbage_on_every_subject_is_counted_and_answered(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    svc = await start_service(Garbage, max_message_bytes=65_536)
    listened = [
        svc.subjects.api("garbage_target", "echo"),
        svc.subjects.api("garbage_target", "notes"),
        svc.subjects.ctl("garbage_target", svc.instance),
        svc.subjects.ctl_all("garbage_target"),
        svc.subjects.instance_api("garbage_target", svc.instance, "metrics"),
    ]
    expected_invalid = 0
    for subject in listened:
        for kind, payload in GARBAGE.items():
            if subject.endswith("metrics") and kind in ("empty", "wrong_schema"):
                # Valid for a request without fields: unknown fields are ignored on
                # purpose (a newer client may send fields an older service lacks).
                continue
            reply = await nc.request(subject, payload, timeout=5)
            assert reply.headers is not None, (subject, kind)
            assert reply.headers["Nats-Service-Error-Code"] == "400", (subject, kind)
            assert b'"code":400' in reply.data
            expected_invalid += 1
    assert sum(svc.intake.invalid.values()) == expected_invalid
    assert svc.seen == []
    # It still works, and says so.
    good = await nc.request(svc.subjects.api("garbage_target", "echo"), encode(Echo("ab", 2)))
    assert decode(Echo, good.data) == Echo("abab", 1)
    health = await nc.request(
        svc.subjects.ctl("garbage_target", svc.instance), encode(ControlCommand(command="health"))
    )
    answer = decode(ControlReply, health.data)
    assert answer.status is ServiceStatus.RUNNING
    assert answer.health is not None
    counted = answer.health.details["framework"]["intake"]["invalid_total"]
    assert counted == expected_invalid


async def test_events_survive_a_server_restart_in_order(
    nats_server: EmbeddedServer, prefix: str
) -> None:
    config = service_config(Garbage, nats_server.url, prefix, ack_timeout=1.0)
    svc = Garbage(config)
    total = 300
    async with svc.running():
        for n in range(total // 3):
            svc.emit_nowait(Tick(n=n))
        await svc.outbox.flush(10)
        nats_server.kill()
        for n in range(total // 3, 2 * total // 3):
            svc.emit_nowait(Tick(n=n))  # queued while the server is away
            await anyio.sleep(0.002)
        assert svc.outbox.pending > 0
        nats_server.start()
        for n in range(2 * total // 3, total):
            svc.emit_nowait(Tick(n=n))
        assert await svc.outbox.flush(30), svc.outbox.stats()
        assert svc.outbox.stats().failed_attempts > 0
    import nats

    client = await nats.connect(nats_server.url)
    try:
        events = await stream_events(client, f"{prefix}_EVENTS")
    finally:
        await client.close()
    ticks = [e.data["n"] for e in events if e.type == "TICK_EMITTED"]
    assert ticks == list(range(total))
    sequences = [e.sequence for e in events]
    assert sequences == list(range(1, len(events) + 1))
    assert events[0].type == "SERVICE_STARTED" and events[-1].type == "SERVICE_STOPPED"


async def test_cannot_reach_nats_fails_within_connect_timeout(prefix: str) -> None:
    from shared.embedded import free_port
    from shared.errors import ConnectError

    config = service_config(Garbage, f"nats://127.0.0.1:{free_port()}", prefix, connect_timeout=1.0)
    with pytest.raises(ConnectError, match=r"cannot reach NATS at nats://127\.0\.0\.1:"):
        async with Garbage(config).running():
            pass


async def test_metrics_endpoint_reports_counters(start_service: ServiceFactory, nc: Client) -> None:
    svc = await start_service(Garbage)
    await nc.request(svc.subjects.api("garbage_target", "echo"), b"nope", timeout=5)
    reply = await nc.request(
        svc.subjects.instance_api("garbage_target", svc.instance, "metrics"), encode(Empty())
    )
    from shared.contracts import ServiceMetrics

    metrics = decode(ServiceMetrics, reply.data)
    assert metrics.invalid == 1
    assert metrics.events_acked >= 1
    assert metrics.rss_bytes > 0
    await eventually(lambda: svc.outbox.pending == 0, what="outbox drained")


class Crashy(Service[BaseConfig]):
    """A service one of whose tasks fails: a bug that must stop it, not hang it."""

    name = "crashy"

    async def setup(self) -> None:
        async def boom() -> None:
            await anyio.sleep(0.2)
            raise RuntimeError("a bug in a background task")

        self.spawn(boom)


async def test_a_failing_task_stops_the_service_in_order_instead_of_hanging(
    nats_url: str, nc: Client, prefix: str
) -> None:
    svc = Crashy(service_config(Crashy, nats_url, prefix, shutdown_timeout=2.0))
    with pytest.raises(BaseExceptionGroup) as caught:
        async with svc.running():
            await anyio.sleep(60)  # cancelled by the failure
    assert caught.group_contains(RuntimeError, match="a bug in a background task")
    assert svc.status is ServiceStatus.STOPPED
