"""The node selector on a real nats-server: live view, ranking, overlay, health."""

from __future__ import annotations

import time
from typing import Any

import anyio
import msgspec
import pytest
from nats.aio.client import Client

from services.node_selector.policy import Candidate, rank
from services.node_selector.service import NodeSelectorService
from shared.codec import decode, encode
from shared.contracts import Empty, ServiceStatus
from shared.events import JobFailed, NodeRecovered, NodeUnhealthy, build_event, decode_data
from shared.jobs import NodeInfo, NodeList, Requirements, SelectReply, SelectRequest
from shared.kv import bucket_config, ensure_bucket
from shared.liveness import LOST_AFTER
from shared.subjects import Subjects
from shared.testing.builders import node_info
from shared.testing.fixtures import ServiceFactory
from shared.testing.helpers import eventually, stream_events

pytestmark = pytest.mark.anyio

FAST = {"sweep_interval_s": 0.1}


def info(
    node_id: str, *, gpus: tuple[str, ...] = (), interval_s: float = 30.0, **kw: Any
) -> NodeInfo:
    fields: dict[str, Any] = {
        "capabilities": ["cpu", "train"],
        "load_1m": 0.5,
        "sent_at": time.time(),
        "interval_s": interval_s,
    }
    fields.update(kw)
    return node_info(node_id, gpus=gpus, gpu_memory_mb=24_000, **fields)


async def call(nc: Client, prefix: str, method: str, request: Any, reply_type: type[Any]) -> Any:
    subject = Subjects(prefix).api(NodeSelectorService.name, method)
    reply = await nc.request(subject, encode(request), timeout=5)
    return decode(reply_type, reply.data)


async def select(nc: Client, prefix: str, count: int = 10, **requirement: Any) -> list[str]:
    request = SelectRequest(requirement=Requirements(**requirement), count=count)
    reply: SelectReply = await call(nc, prefix, "select", request, SelectReply)
    return reply.nodes


async def announce(nc: Client, prefix: str, *infos: NodeInfo) -> None:
    """Publish NodeInfos until the selector lists every one of them as alive."""
    wanted = {i.node_id for i in infos}

    async def seen() -> bool:
        for i in infos:
            await nc.publish(Subjects(prefix).node(i.node_id), encode(i))
        listed: NodeList = await call(nc, prefix, "nodes", Empty(), NodeList)
        return wanted <= {v.info.node_id for v in listed.nodes if v.alive}

    await eventually(seen, what=f"nodes {sorted(wanted)} alive")


async def fail_job(nc: Client, prefix: str, seq: int, node_id: str, event_id: str = "") -> None:
    """Emit JOB_FAILED the way the job manager does: an Event envelope via JetStream."""
    data = JobFailed(
        job_id=f"j{seq}", type="selfplay", attempt=1, node_id=node_id, error="boom", permanent=False
    )
    event = build_event(prefix, "job_manager", "jm-test", seq, data)
    if event_id:
        event = msgspec.structs.replace(event, id=event_id)
    subject = Subjects(prefix).event("job_manager", JobFailed.TYPE)
    await nc.jetstream().publish(subject, encode(event))


async def events_of(nc: Client, prefix: str, kind: str) -> list[Any]:
    events = await stream_events(nc, Subjects(prefix).events_stream)
    return [decode_data(e) for e in events if e.type == kind]


async def test_select_ranks_nodes_as_the_policy_says(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    svc = await start_service(NodeSelectorService, **FAST)
    nodes = [
        info("cpu-idle", load_1m=0.1),
        info("cpu-busy", free_slots=1, load_1m=3.0),
        info("t4", gpus=("Tesla T4",)),
        info("h100", gpus=("NVIDIA H100 80GB HBM3",), free_slots=2),
        info("full", free_slots=0),
        info("small", memory_available_mb=100, capabilities=["cpu"]),
    ]
    await announce(nc, prefix, *nodes)
    assert await select(nc, prefix, gpu=True) == ["h100", "t4"]
    assert await select(nc, prefix) == ["cpu-idle", "small", "cpu-busy", "t4", "h100"]
    assert await select(nc, prefix, count=2, min_memory_mb=1000) == ["cpu-idle", "cpu-busy"]
    # h100's one GPU went to the first GPU pick above until its next NodeInfo.
    assert await select(nc, prefix, capability="train", gpu=True, count=1) == ["t4"]
    request = SelectRequest(
        requirement=Requirements(capability="train"), count=5, exclude=["cpu-idle"]
    )
    reply: SelectReply = await call(nc, prefix, "select", request, SelectReply)
    assert reply.nodes == rank([Candidate(info=n) for n in nodes], request, svc.power_table)
    assert reply.nodes == ["cpu-busy", "t4", "h100"]
    listed: NodeList = await call(nc, prefix, "nodes", Empty(), NodeList)
    assert [v.info.node_id for v in listed.nodes] == sorted(n.node_id for n in nodes)
    assert listed.alive == 6 and listed.unhealthy == 0
    assert svc.custom_metrics()["gpu_nodes"] == 2 and svc.custom_metrics()["nodes_alive"] == 6


async def test_a_silent_node_drops_out(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    await start_service(NodeSelectorService, **FAST)
    chatty = info("chatty", interval_s=0.1)
    quiet = info("quiet", interval_s=0.1, load_1m=0.0)
    async with anyio.create_task_group() as tg:

        async def keep_publishing() -> None:
            while True:
                await nc.publish(Subjects(prefix).node("chatty"), encode(chatty))
                await anyio.sleep(0.05)

        tg.start_soon(keep_publishing)
        await announce(nc, prefix, chatty, quiet)

        async def quiet_gone() -> bool:
            return await select(nc, prefix) == ["chatty"]

        await eventually(quiet_gone, what="the silent node to drop out")
        listed: NodeList = await call(nc, prefix, "nodes", Empty(), NodeList)
        views = {v.info.node_id: v for v in listed.nodes}
        assert views["chatty"].alive and not views["quiet"].alive
        assert views["quiet"].age_s > LOST_AFTER * 0.1  # LOST past 3 silent intervals
        tg.cancel_scope.cancel()


async def test_a_restarted_selector_knows_the_nodes_from_the_bucket(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    kv = await ensure_bucket(nc.jetstream(), bucket_config(Subjects(prefix).bucket("nodes")))
    await kv.put("fresh", encode(info("fresh")))
    await kv.put("old", encode(info("old", sent_at=time.time() - 600)))
    await kv.put("garbled", b"{")
    svc = await start_service(NodeSelectorService, **FAST)
    # No NodeInfo was published: the fresh node is known and selectable at once.
    assert await select(nc, prefix) == ["fresh"]
    listed: NodeList = await call(nc, prefix, "nodes", Empty(), NodeList)
    assert {v.info.node_id: v.alive for v in listed.nodes} == {"fresh": True, "old": False}
    assert svc.counts["bucket_invalid"] == 1


async def test_repeated_job_failures_make_a_node_unhealthy(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    svc = await start_service(NodeSelectorService, unhealthy_cooldown_s=600.0, **FAST)
    await announce(nc, prefix, info("n1", load_1m=0.0), info("n2", load_1m=2.0))
    assert await select(nc, prefix) == ["n1", "n2"]
    await fail_job(nc, prefix, 1, "n1", event_id="same")
    await fail_job(nc, prefix, 1, "n1", event_id="same")  # a redelivery counts once
    await fail_job(nc, prefix, 2, "n1")
    await eventually(
        lambda: svc.counts["failure_duplicates"] == 1 and svc.counts["failures_counted"] == 2,
        what="two failures counted, one duplicate",
    )
    assert svc.overlay.recent_failures("n1", time.monotonic()) == 2
    # Still selectable (the first select's pick now counts against n1's free slots).
    assert sorted(await select(nc, prefix)) == ["n1", "n2"]
    await fail_job(nc, prefix, 3, "n1")
    (unhealthy,) = await eventually(
        lambda: events_of(nc, prefix, NodeUnhealthy.TYPE), what="NODE_UNHEALTHY"
    )
    assert unhealthy.node_id == "n1" and "3 failed jobs" in unhealthy.reason
    assert unhealthy.until > time.time() + 500
    assert await select(nc, prefix) == ["n2"]
    listed: NodeList = await call(nc, prefix, "nodes", Empty(), NodeList)
    views = {v.info.node_id: v for v in listed.nodes}
    assert views["n1"].unhealthy and views["n1"].alive and not views["n2"].unhealthy
    assert listed.unhealthy == 1 and svc.custom_metrics()["nodes_unhealthy"] == 1


async def test_an_unhealthy_node_recovers_after_the_cooldown(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    await start_service(NodeSelectorService, unhealthy_failures=1, unhealthy_cooldown_s=0.5, **FAST)
    await announce(nc, prefix, info("n1"))
    await fail_job(nc, prefix, 1, "n1")
    await eventually(lambda: events_of(nc, prefix, NodeUnhealthy.TYPE), what="NODE_UNHEALTHY")
    (recovered,) = await eventually(
        lambda: events_of(nc, prefix, NodeRecovered.TYPE), what="NODE_RECOVERED"
    )
    assert recovered.node_id == "n1"
    assert await select(nc, prefix) == ["n1"]


async def test_health_follows_the_nodes(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    svc = await start_service(NodeSelectorService, **FAST)
    health = svc.health_check()
    assert health.status is ServiceStatus.ERROR and "no node alive" in health.message
    await announce(nc, prefix, info("cpu"))
    assert svc.health_check().status is ServiceStatus.RUNNING
    # A caller that only prefers a GPU (it falls back to a CPU node) leaves no GPU work waiting.
    preferred = SelectRequest(requirement=Requirements(gpu=True), preference=True)
    assert (await call(nc, prefix, "select", preferred, SelectReply)).nodes == []
    assert svc.health_check().status is ServiceStatus.RUNNING
    assert await select(nc, prefix, gpu=True) == []
    health = svc.health_check()
    assert health.status is ServiceStatus.DEGRADED and "GPU work waits" in health.message
    await announce(nc, prefix, info("gpu", gpus=("NVIDIA A100-SXM4-40GB",)))
    assert svc.health_check().status is ServiceStatus.RUNNING
