"""The loop manager on a real nats-server: its API, LOOP_* events and health."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from nats.aio.client import Client

from services.loop_manager.config import LoopManagerConfig
from services.loop_manager.registry import REGISTRY, LoopContext, LoopDef
from services.loop_manager.service import LoopManagerService
from shared.codec import decode, encode
from shared.config import convert_config
from shared.contracts import (
    ControlCommand,
    ControlReply,
    Empty,
    Event,
    LoopList,
    LoopRequest,
    ServiceStatus,
)
from shared.errors import ConfigError
from shared.events import LoopCompleted, LoopFailed, decode_data
from shared.loops import LoopStats
from shared.subjects import Subjects
from shared.testing.fixtures import ServiceFactory
from shared.testing.helpers import eventually, stream_events

pytestmark = pytest.mark.anyio

USAGE = "event_stream_usage"
# Long intervals: only the first run and the runs a test triggers happen.
QUIET = {"loops": {USAGE: 3600.0}}


async def call(nc: Client, prefix: str, method: str, request: Any) -> Any:
    """Call a loop manager endpoint; the decoded JSON reply."""
    subject = Subjects(prefix).api(LoopManagerService.name, method)
    reply = await nc.request(subject, encode(request), timeout=2)
    return json.loads(reply.data)


async def loop_events(nc: Client, prefix: str, kind: str) -> list[Event]:
    return [e for e in await stream_events(nc, f"{prefix}_EVENTS") if e.type == kind]


async def test_list_and_trigger_emit_started_and_completed(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    svc = await start_service(LoopManagerService, **QUIET)
    listed = decode(LoopList, encode(await call(nc, prefix, "list", Empty())))
    assert listed.instance == svc.instance
    assert [loop.name for loop in listed.loops] == [USAGE]
    # The first run happens at start; wait for it so the trigger makes run 2.
    await eventually(lambda: loop_events(nc, prefix, "LOOP_COMPLETED"), what="first run")
    stats = decode(LoopStats, encode(await call(nc, prefix, "trigger", LoopRequest(loop=USAGE))))
    assert stats.name == USAGE

    async def second_run() -> list[Event]:
        done = await loop_events(nc, prefix, "LOOP_COMPLETED")
        return [e for e in done if e.data["run"] == 2]

    (completed,) = await eventually(second_run, what="LOOP_COMPLETED of the triggered run")
    started = [e for e in await loop_events(nc, prefix, "LOOP_STARTED") if e.data["run"] == 2]
    assert len(started) == 1 and started[0].sequence < completed.sequence
    data = decode_data(completed)
    assert isinstance(data, LoopCompleted) and data.loop == USAGE and data.duration_s >= 0
    assert data.result["stream"] == f"{prefix}_EVENTS"
    assert data.result["messages"] >= 1 and data.result["max_bytes"] == svc.config.events_max_bytes
    assert data.result["warnings"] == []
    assert svc.health_check().status is ServiceStatus.RUNNING
    listed = decode(LoopList, encode(await call(nc, prefix, "list", Empty())))
    assert listed.loops[0].runs == 2 and listed.results[USAGE]["stream"] == f"{prefix}_EVENTS"


async def test_pause_and_resume_show_in_list(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    svc = await start_service(LoopManagerService, **QUIET)
    paused = await call(nc, prefix, "pause", LoopRequest(loop=USAGE))
    assert paused["paused"] is True
    listed = await call(nc, prefix, "list", Empty())
    assert listed["loops"][0]["paused"] is True

    # Pausing and resuming the whole service keeps the loop the operator paused paused.
    for command in ("pause", "resume"):
        reply = await nc.request(
            Subjects(prefix).ctl(svc.name, svc.instance),
            encode(ControlCommand(command=command)),
            timeout=2,
        )
        assert decode(ControlReply, reply.data).ok
    assert (await call(nc, prefix, "list", Empty()))["loops"][0]["paused"] is True

    resumed = await call(nc, prefix, "resume", LoopRequest(loop=USAGE))
    assert resumed["paused"] is False
    assert (await call(nc, prefix, "list", Empty()))["loops"][0]["paused"] is False


async def test_unknown_loop_is_404(start_service: ServiceFactory, nc: Client, prefix: str) -> None:
    await start_service(LoopManagerService, **QUIET)
    for method in ("pause", "resume", "trigger"):
        subject = Subjects(prefix).api(LoopManagerService.name, method)
        reply = await nc.request(subject, encode(LoopRequest(loop="nope")), timeout=2)
        body = json.loads(reply.data)
        assert body["error"]["code"] == 404 and "nope" in body["error"]["message"]
        assert reply.headers and reply.headers["Nats-Service-Error-Code"] == "404"


def test_config_refuses_unknown_loop_names() -> None:
    with pytest.raises(ConfigError, match="unknown loops nope"):
        convert_config(LoopManagerConfig, {"disabled_loops": ["nope"]})
    with pytest.raises(ConfigError, match="unknown loops other"):
        convert_config(LoopManagerConfig, {"loops": {"other": 5.0}})
    assert convert_config(LoopManagerConfig, {"disabled_loops": [USAGE]}).disabled_loops


async def test_stream_near_its_limit_degrades(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    # A tiny P_EVENTS: a few LOOP_* events fill it past 80% (discard-old keeps it full).
    svc = await start_service(LoopManagerService, events_max_bytes=4096, loops={USAGE: 0.2})
    health = await eventually(
        lambda: (h := svc.health_check()).status is ServiceStatus.DEGRADED and h,
        what="DEGRADED from stream usage",
    )
    assert f"{prefix}_EVENTS bytes at" in health.message
    result = health.details["results"][USAGE]
    assert result["max_bytes"] == 4096 and result["bytes_ratio"] > 0.8
    assert result["over"] == ["bytes"]


async def test_failing_loop_emits_failed_and_service_lives_on(
    start_service: ServiceFactory, nc: Client, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def boom() -> dict[str, Any]:
        raise RuntimeError("housekeeping broke")

    async def slow() -> dict[str, Any]:
        await anyio.sleep(30)
        return {}

    def boom_factory(ctx: LoopContext) -> LoopDef:
        return LoopDef(boom, interval=0.1, timeout=5.0)

    def slow_factory(ctx: LoopContext) -> LoopDef:
        return LoopDef(slow, interval=3600.0, timeout=0.2)

    monkeypatch.setitem(REGISTRY, "boom", boom_factory)
    monkeypatch.setitem(REGISTRY, "slow", slow_factory)
    svc = await start_service(LoopManagerService, **QUIET)

    async def failures() -> dict[str, LoopFailed]:
        found = {}
        for event in await loop_events(nc, prefix, "LOOP_FAILED"):
            data = decode_data(event)
            assert isinstance(data, LoopFailed)
            found[data.loop] = data
        return found if {"boom", "slow"} <= found.keys() else {}

    failed = await eventually(failures, what="LOOP_FAILED of both test loops")
    assert failed["boom"].error == "RuntimeError: housekeeping broke"
    assert failed["slow"].error.startswith("TimeoutError")
    health = await eventually(
        lambda: (h := svc.health_check()).status is ServiceStatus.DEGRADED and h,
        what="DEGRADED after repeated failures",
    )
    assert "loop boom failed" in health.message
    # Still serving: the API answers and the other loop still completes its runs.
    await call(nc, prefix, "trigger", LoopRequest(loop=USAGE))

    async def usage_completed() -> bool:
        done = [decode_data(e) for e in await loop_events(nc, prefix, "LOOP_COMPLETED")]
        return any(isinstance(d, LoopCompleted) and d.loop == USAGE and d.run == 2 for d in done)

    await eventually(usage_completed, what="the healthy loop still running")
    names = {loop["name"] for loop in (await call(nc, prefix, "list", Empty()))["loops"]}
    assert names == {"boom", "slow", USAGE}
    assert svc.status is ServiceStatus.RUNNING
