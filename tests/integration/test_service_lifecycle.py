"""A service's lifecycle, beacons, events, $SRV answers and control, on a real server."""

from __future__ import annotations

import json

import anyio
import pytest
from nats.aio.client import Client

from shared.codec import decode, encode
from shared.config import BaseConfig
from shared.contracts import Beacon, ControlCommand, ControlReply, ServiceStatus
from shared.service import Service
from shared.srv import decode_info, decode_ping, decode_stats, discover
from shared.testing.fixtures import ServiceFactory
from shared.testing.helpers import eventually, stream_events

pytestmark = pytest.mark.anyio


class Demo(Service[BaseConfig]):
    """The smallest service: the framework and nothing else."""

    name = "demo"
    description = "a demo service for tests"


async def test_beacons_at_interval_and_lifecycle_events(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    beacons: list[Beacon] = []

    async def on_beacon(msg: object) -> None:
        beacons.append(decode(Beacon, msg.data))  # type: ignore[attr-defined]

    await nc.subscribe(f"{prefix}.beacon.demo.*", cb=on_beacon)
    svc = await start_service(Demo, beacon_interval=0.1)
    await eventually(lambda: len(beacons) >= 5, what="five beacons")
    assert all(b.instance == svc.instance for b in beacons)
    assert [b.seq for b in beacons] == sorted(b.seq for b in beacons)
    assert beacons[-1].status is ServiceStatus.RUNNING
    assert beacons[-1].interval_s == 0.1
    events = await stream_events(nc, f"{prefix}_EVENTS")
    assert [e.type for e in events] == ["SERVICE_STARTED"]
    assert events[0].source == f"/{prefix}/demo/{svc.instance}"
    assert events[0].specversion == "1.0"


async def test_stopped_event_after_orderly_stop(nats_url: str, nc: Client, prefix: str) -> None:
    from shared.testing.fixtures import service_config

    svc = Demo(service_config(Demo, nats_url, prefix))
    async with svc.running():
        pass
    events = await stream_events(nc, f"{prefix}_EVENTS")
    assert [e.type for e in events] == ["SERVICE_STARTED", "SERVICE_STOPPED"]
    assert [e.sequence for e in events] == [1, 2]


async def test_srv_ping_info_stats(start_service: ServiceFactory, nc: Client) -> None:
    svc = await start_service(Demo)
    pings = [decode_ping(p) for p in await discover(nc, "PING", "demo", timeout=0.5)]
    mine = [p for p in pings if p.id == svc.instance]
    assert mine and mine[0].version == svc.version
    assert mine[0].metadata and mine[0].metadata["instance"] == svc.instance
    infos = [decode_info(p) for p in await discover(nc, "INFO", "demo", timeout=0.5)]
    info = next(i for i in infos if i.id == svc.instance)
    assert info.description == "a demo service for tests"
    assert any(e.name == "metrics-instance" for e in info.endpoints)
    stats = [decode_stats(p) for p in await discover(nc, "STATS", "demo", timeout=0.5)]
    assert any(s.id == svc.instance for s in stats)


@pytest.mark.parametrize("command", ["health", "pause", "resume", "reload"])
async def test_control_commands(
    start_service: ServiceFactory, nc: Client, prefix: str, command: str
) -> None:
    svc = await start_service(Demo)
    reply = await nc.request(
        f"{prefix}.ctl.demo.{svc.instance}", encode(ControlCommand(command=command)), timeout=2
    )
    if command == "reload":
        # Started from a config object, not a file: reload must refuse, typed and clear.
        body = json.loads(reply.data)
        assert body["error"]["code"] == 409
        assert reply.headers and reply.headers["Nats-Service-Error-Code"] == "409"
        return
    answer = decode(ControlReply, reply.data)
    assert answer.ok and answer.command == command
    expected = {"pause": ServiceStatus.PAUSED}.get(command, ServiceStatus.RUNNING)
    assert answer.status is expected
    if command == "health":
        assert answer.health is not None and answer.health.healthy


async def test_reload_applies_a_new_config_and_refuses_a_new_prefix(
    nats_url: str, nc: Client, prefix: str
) -> None:
    import msgspec

    from shared.testing.fixtures import service_config

    first = service_config(Demo, nats_url, prefix)
    source = [msgspec.structs.replace(first, beacon_interval=0.2)]
    svc = Demo(first, reload_config=lambda: source[0])
    subject = f"{prefix}.ctl.demo.{svc.instance}"
    async with anyio.create_task_group() as tg:
        await tg.start(svc.run)
        reply = await nc.request(subject, encode(ControlCommand(command="reload")), timeout=2)
        assert decode(ControlReply, reply.data).ok
        assert svc.config.beacon_interval == 0.2
        source[0] = msgspec.structs.replace(first, prefix=f"{prefix}x", beacon_interval=0.3)
        reply = await nc.request(subject, encode(ControlCommand(command="reload")), timeout=2)
        assert json.loads(reply.data)["error"]["code"] == 409
        assert svc.config.beacon_interval == 0.2  # the refused config never took effect
        svc.request_stop("test")


async def test_stop_and_drain_commands_stop_the_service(
    nats_url: str, nc: Client, prefix: str
) -> None:
    from shared.testing.fixtures import service_config

    for command in ("stop", "drain"):
        svc = Demo(service_config(Demo, nats_url, prefix))
        async with anyio.create_task_group() as tg:
            await tg.start(svc.run)
            reply = await nc.request(
                f"{prefix}.ctl.demo.{svc.instance}",
                encode(ControlCommand(command=command, reason="test")),  # type: ignore[arg-type]
                timeout=2,
            )
            assert decode(ControlReply, reply.data).ok
        assert svc.status is ServiceStatus.STOPPED
        assert svc.stop_reason == "test"
