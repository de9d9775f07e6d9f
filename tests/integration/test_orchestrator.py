"""The orchestrator on a real nats-server: registry, liveness, events, status, HTTP."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import msgspec
import psutil
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from services.orchestrator.service import OrchestratorService
from shared.codec import decode, encode
from shared.config import BaseConfig
from shared.contracts import (
    Beacon,
    ClusterStatus,
    ControlReply,
    Empty,
    InstanceView,
    Liveness,
    ServiceStatus,
)
from shared.service import Service
from shared.subjects import Subjects
from shared.testing.fixtures import ServiceFactory, service_config
from shared.testing.helpers import eventually, stream_events

pytestmark = pytest.mark.anyio

FAST: dict[str, Any] = {
    "beacon_interval": 0.1,
    "check_interval": 0.05,
    "probe_timeout": 1.0,
    "http_port": -1,
}


class Demo(Service[BaseConfig]):
    """The smallest service the orchestrator can watch."""

    name = "demo"
    description = "a demo service for orchestrator tests"


async def start_orchestrator(start: ServiceFactory, **overrides: Any) -> OrchestratorService:
    svc: OrchestratorService = await start(OrchestratorService, **{**FAST, **overrides})
    return svc


async def cluster_status(nc: Client, prefix: str) -> ClusterStatus:
    reply = await nc.request(
        Subjects(prefix).api("orchestrator", "status"), encode(Empty()), timeout=2
    )
    return decode(ClusterStatus, reply.data)


async def find(nc: Client, prefix: str, instance: str) -> InstanceView | None:
    status = await cluster_status(nc, prefix)
    return next((v for v in status.services if v.instance == instance), None)


async def event_types(nc: Client, prefix: str, instance: str) -> list[str]:
    events = await stream_events(nc, Subjects(prefix).events_stream)
    return [e.type for e in events if e.data.get("instance") == instance]


def fake_beacon(
    instance: str, seq: int, status: ServiceStatus = ServiceStatus.RUNNING, **fields: Any
) -> Beacon:
    now = time.time()
    values: dict[str, Any] = {
        "service": "ghost",
        "instance": instance,
        "version": "0",
        "host": "nowhere",
        "pid": 1,
        "status": status,
        "healthy": True,
        "started_at": now - 1,
        "sent_at": now,
        "seq": seq,
        "interval_s": 0.1,
        **fields,
    }
    return Beacon(**values)


@asynccontextmanager
async def beaconing(nc: Client, prefix: str, instance: str) -> AsyncIterator[Callable[[], int]]:
    """Publish hand-made beacons while the context is open; yields how many so far."""
    seq = 0
    subject = Subjects(prefix).beacon("ghost", instance)

    async def publish() -> None:
        nonlocal seq
        while True:
            seq += 1
            await nc.publish(subject, encode(fake_beacon(instance, seq)))
            # Twice per claimed interval, so a busy test machine does not look silent.
            await anyio.sleep(0.05)

    async with anyio.create_task_group() as tg:
        tg.start_soon(publish)
        yield lambda: seq
        tg.cancel_scope.cancel()


async def test_a_service_is_registered_and_alive(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    orch = await start_orchestrator(start_service)
    demo = await start_service(Demo, beacon_interval=0.1)
    # The very first beacon may still say STARTING; the next ones say RUNNING.
    view = await eventually(
        lambda: _status_is(nc, prefix, demo.instance, ServiceStatus.RUNNING),
        what="demo RUNNING in status",
    )
    assert view.liveness is Liveness.ALIVE
    assert (view.service, view.pid, view.interval_s) == ("demo", demo.pid, 0.1)
    status = await cluster_status(nc, prefix)
    keys = [(v.service, v.instance) for v in status.services]
    assert keys == sorted(keys) and ("orchestrator", orch.instance) in keys
    assert status.orchestrator == orch.instance and status.children == []
    types = await eventually(lambda: event_types(nc, prefix, demo.instance))
    assert types.count("SERVICE_REGISTERED") == 1
    assert orch.health_check().status is ServiceStatus.RUNNING
    assert orch.custom_metrics()["beacons_ingested_total"] > 0


async def test_silent_instance_goes_suspect_then_lost_then_recovers(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    orch = await start_orchestrator(start_service)
    async with beaconing(nc, prefix, "ghost-1") as sent:
        await eventually(lambda: sent() >= 3)
        await eventually(lambda: find(nc, prefix, "ghost-1"))
    # Nobody answers ghost-1's control subject, so the probe fails and it is LOST.
    view = await eventually(
        lambda: _liveness_is(nc, prefix, "ghost-1", Liveness.LOST), what="ghost LOST"
    )
    assert view.status is ServiceStatus.RUNNING
    health = orch.health_check()
    assert health.status is ServiceStatus.DEGRADED and "ghost-1" in health.message
    assert orch.probes["unanswered"] >= 1
    types = await eventually(lambda: _has(nc, prefix, "ghost-1", "SERVICE_LOST"))
    assert types[0] == "SERVICE_REGISTERED"
    assert types.index("SERVICE_SUSPECT") < types.index("SERVICE_LOST")
    async with beaconing(nc, prefix, "ghost-1"):
        await eventually(lambda: _liveness_is(nc, prefix, "ghost-1", Liveness.ALIVE))
        types = await eventually(lambda: _has(nc, prefix, "ghost-1", "SERVICE_RECOVERED"))
    assert types.count("SERVICE_REGISTERED") == 1
    recovered = [
        e
        for e in await stream_events(nc, Subjects(prefix).events_stream)
        if e.type == "SERVICE_RECOVERED" and e.data["instance"] == "ghost-1"
    ]
    assert recovered[-1].data["was"] == "LOST"
    await eventually(lambda: orch.health_check().status is ServiceStatus.RUNNING)


async def test_silent_instance_that_answers_the_probe_is_not_lost(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    orch = await start_orchestrator(start_service)

    async def answer(msg: Msg) -> None:
        reply = ControlReply(
            ok=True,
            command="health",
            service="ghost",
            instance="quiet",
            status=ServiceStatus.RUNNING,
        )
        await msg.respond(encode(reply))

    await nc.subscribe(Subjects(prefix).ctl("ghost", "quiet"), cb=answer)
    async with beaconing(nc, prefix, "quiet") as sent:
        await eventually(lambda: sent() >= 3)
        await eventually(lambda: find(nc, prefix, "quiet"))
    await eventually(lambda: _liveness_is(nc, prefix, "quiet", Liveness.SUSPECT))
    # Several probe rounds (each after 2 silent intervals), all answered.
    await eventually(lambda: orch.probes["answered"] >= 3, what="three answered probes")
    view = await find(nc, prefix, "quiet")
    assert view is not None and view.liveness is Liveness.SUSPECT
    assert orch.probes["unanswered"] == 0
    types = await event_types(nc, prefix, "quiet")
    assert "SERVICE_SUSPECT" in types and "SERVICE_LOST" not in types


async def test_orderly_stop_removes_the_instance_without_lost(
    start_service: ServiceFactory, nats_url: str, nc: Client, prefix: str
) -> None:
    orch = await start_orchestrator(start_service)
    demo = Demo(service_config(Demo, nats_url, prefix, beacon_interval=0.1))
    async with demo.running():
        await eventually(lambda: find(nc, prefix, demo.instance))
    await eventually(lambda: orch.registry.left == 1, what="the STOPPED beacon")
    assert await find(nc, prefix, demo.instance) is None
    # Longer than SUSPECT (2 intervals) plus a probe: nothing is announced.
    await anyio.sleep(0.6)
    assert await find(nc, prefix, demo.instance) is None
    types = await event_types(nc, prefix, demo.instance)
    assert "SERVICE_REGISTERED" in types
    assert not {"SERVICE_SUSPECT", "SERVICE_LOST"} & set(types)
    assert orch.health_check().status is ServiceStatus.RUNNING


async def test_garbage_beacons_are_counted_and_harmless(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    orch = await start_orchestrator(start_service, max_message_bytes=4096)
    subjects = Subjects(prefix)
    subject = subjects.beacon("ghost", "junk")
    garbage = [
        b"\x00\xff\x13 not json",
        b"",
        b"{}",
        b'{"service": 1}',
        b"[" * 3000,  # deep nesting, within the size limit
        b"x" * 10_000,
        encode(fake_beacon("someone-else", 1)),  # valid, but not from its own subject
        encode(fake_beacon("junk", 1, interval_s=0)),
    ]
    for payload in garbage:
        await nc.publish(subject, payload)
    await nc.publish(subject, encode(fake_beacon("junk", 2)))  # a good one still counts
    view = await eventually(lambda: find(nc, prefix, "junk"))
    assert view.beacon_seq == 2
    invalid = orch.health_check().details["beacons"]["invalid"]
    assert set(invalid) == {
        "beacon:malformed",
        "beacon:empty",
        "beacon:wrong_schema",
        "beacon:oversized",
        "beacon:subject_mismatch",
        "beacon:bad_interval",
    }
    assert sum(invalid.values()) == len(garbage)
    assert orch.custom_metrics()["beacons_invalid_total"] == len(garbage)
    assert orch.effective_status() is ServiceStatus.RUNNING
    assert await find(nc, prefix, "someone-else") is None


async def test_http_healthz_status_and_bad_requests(
    start_service: ServiceFactory, prefix: str
) -> None:
    orch = await start_orchestrator(start_service, http_port=0, http_timeout=0.5)
    assert orch.http is not None and orch.http.port
    port = orch.http.port
    code, body = await http(port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert code == 200
    assert msgspec.json.decode(body)["status"] == "RUNNING"
    code, body = await http(port, b"GET /status?verbose=1 HTTP/1.1\r\nHost: t\r\n\r\n")
    status = msgspec.json.decode(body, type=ClusterStatus)
    assert code == 200 and status.prefix == prefix
    assert any(v.instance == orch.instance for v in status.services)
    assert (await http(port, b"GET /nope HTTP/1.1\r\n\r\n"))[0] == 404
    assert (await http(port, b"POST /status HTTP/1.1\r\n\r\n"))[0] == 405
    assert (await http(port, b"this is not http\r\n\r\n"))[0] == 400
    assert (await http(port, b"GET /healthz HTTP/1.1\r\nno colon\r\n\r\n"))[0] == 400
    assert (await http(port, b"GET /healthz HTTP/1.1\r\nX: " + b"a" * 9000))[0] == 431
    # A client that connects and says nothing is cut off; others are served meanwhile.
    async with await anyio.connect_tcp("127.0.0.1", port) as silent:
        assert (await http(port, b"GET /healthz HTTP/1.0\r\n\r\n"))[0] == 200
        with anyio.fail_after(5):
            assert await _read_all(silent) == b""
    assert orch.http.stats["timeouts"] == 1
    assert orch.effective_status() is ServiceStatus.RUNNING


async def test_restarted_orchestrator_has_the_whole_picture_again(
    start_service: ServiceFactory, nats_url: str, nc: Client, prefix: str
) -> None:
    demo = await start_service(Demo, beacon_interval=0.1)
    first = OrchestratorService(service_config(OrchestratorService, nats_url, prefix, **FAST))
    async with first.running():
        await eventually(lambda: find(nc, prefix, demo.instance))
    second = OrchestratorService(service_config(OrchestratorService, nats_url, prefix, **FAST))
    async with second.running():
        # Nothing carried over: the new registry fills from the next beacons alone.
        view = await eventually(lambda: second.registry.get("demo", demo.instance))
        assert view.state.liveness is Liveness.ALIVE
        status = await cluster_status(nc, prefix)
        assert status.orchestrator == second.instance
        assert demo.instance in {v.instance for v in status.services}


async def test_supervises_the_services_of_a_cluster_file(
    nats_url: str, nc: Client, prefix: str, tmp_path: Path
) -> None:
    cluster_file = tmp_path / "ringmaster.toml"
    cluster_file.write_text(
        f'[cluster]\nprefix = "{prefix}"\nbeacon_interval = 0.2\n\n'
        '[services.orchestrator]\nrestart = "temporary"\n'
        "[services.orchestrator.config]\nhttp_port = -1\n"
    )
    config = service_config(
        OrchestratorService,
        nats_url,
        prefix,
        **FAST,
        cluster_file=str(cluster_file),
        data_dir=str(tmp_path),
    )
    orch = OrchestratorService(config)
    async with orch.running():
        status = await cluster_status(nc, prefix)
        assert [(c.service, c.instance) for c in status.children] == [
            ("orchestrator", "orchestrator-0")
        ]
        # The child is a second orchestrator: its beacons reach the registry like any.
        view = await eventually(
            lambda: _status_is(nc, prefix, "orchestrator-0", ServiceStatus.RUNNING),
            timeout=30,
            what="the supervised child's beacons",
        )
        assert view.liveness is Liveness.ALIVE and view.pid == status.children[0].pid
        assert orch.supervisor is not None and orch.supervisor.gave_up == []
        assert orch.health_check().status is ServiceStatus.RUNNING
    # Stopping the orchestrator stops its children, in order (a STOPPED beacon).
    assert (
        not psutil.pid_exists(view.pid) or psutil.Process(view.pid).status() == psutil.STATUS_ZOMBIE
    )
    assert (tmp_path / "logs" / "orchestrator-0.log").exists()


# -- helpers ------------------------------------------------------------------------


async def _liveness_is(
    nc: Client, prefix: str, instance: str, liveness: Liveness
) -> InstanceView | None:
    view = await find(nc, prefix, instance)
    return view if view is not None and view.liveness is liveness else None


async def _status_is(
    nc: Client, prefix: str, instance: str, status: ServiceStatus
) -> InstanceView | None:
    view = await find(nc, prefix, instance)
    return view if view is not None and view.status is status else None


async def _has(nc: Client, prefix: str, instance: str, event_type: str) -> list[str] | None:
    types = await event_types(nc, prefix, instance)
    return types if event_type in types else None


async def _read_all(stream: Any) -> bytes:
    data = b""
    while True:
        try:
            data += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return data


async def http(port: int, request: bytes) -> tuple[int, bytes]:
    """Send ``request`` on a fresh connection; the status code and body of the answer."""
    with anyio.fail_after(5):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(request)
            raw = await _read_all(stream)
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body
