"""The node agent's pools against a real server: a pull kept waiting on every pool, the
node's own pool first, and what was pulled but not taken given back to the pool."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import anyio
import pytest
from nats.aio.client import Client

from services.node_agent.pools import Pools
from services.node_agent.reports import AgentStats
from shared.codec import decode, encode
from shared.config import BaseConfig
from shared.jobs import JobDispatch, JobSpec
from shared.provision import ensure_stream, jobs_stream_config
from shared.subjects import Subjects
from shared.testing.helpers import eventually

pytestmark = pytest.mark.anyio


@pytest.fixture
async def subjects(nc: Client, prefix: str) -> AsyncIterator[Subjects]:
    s = Subjects(prefix)
    await ensure_stream(nc.jetstream(), jobs_stream_config(s, BaseConfig()))
    yield s


async def dispatch(
    nc: Client, subjects: Subjects, pool: str, job_id: str, priority: int = 0
) -> None:
    spec = JobSpec(type="t", priority=priority)
    d = JobDispatch(job_id=job_id, attempt=1, fencing=1, spec=spec, dispatched_at=time.time())
    await nc.jetstream().publish(subjects.jobs(pool), encode(d))


def pools_for(nc: Client, subjects: Subjects, node: str, tg: anyio.abc.TaskGroup) -> Pools:
    def spawn(func: Callable[[], Coroutine[Any, Any, None]]) -> None:
        tg.start_soon(func)

    return Pools(
        nc.jetstream(),
        subjects,
        node,
        ["cpu"],
        ack_wait_s=30,
        max_deliver=5,
        stats=AgentStats(),
        spawn=spawn,
        pull_s=0.5,
    )


async def test_own_pool_first_then_the_capability_pool(nc: Client, subjects: Subjects) -> None:
    async with anyio.create_task_group() as tg:
        pools = pools_for(nc, subjects, "n1", tg)
        await pools.open()
        assert await pools.fetch_one(0.1) is None  # starts a pull on every pool
        await dispatch(nc, subjects, "cap.cpu", "shared-job")
        await dispatch(nc, subjects, "node.n1", "pinned-job")
        await eventually(
            lambda: all(p.held is not None for p in pools.pools), what="both pools pulled"
        )
        got = []
        for _ in range(2):
            msg = await pools.fetch_one(5.0)
            assert msg is not None
            got.append(decode(JobDispatch, msg.data).job_id)
            await msg.ack()
        assert got == ["pinned-job", "shared-job"]
        assert await pools.fetch_one(0.2) is None
        await pools.close()
        tg.cancel_scope.cancel()


async def test_a_message_pulled_while_waiting_is_taken_at_the_next_fetch(
    nc: Client, subjects: Subjects
) -> None:
    async with anyio.create_task_group() as tg:
        pools = pools_for(nc, subjects, "n2", tg)
        await pools.open()
        assert await pools.fetch_one(0.1) is None  # the pulls stay waiting after it returns
        await dispatch(nc, subjects, "cap.cpu", "late-job")
        cap = pools.pools[1]
        await eventually(lambda: cap.held is not None, what="the waiting pull got the job")
        msg = await pools.fetch_one(0.1)
        assert msg is not None and decode(JobDispatch, msg.data).job_id == "late-job"
        await msg.ack()
        await pools.close()
        tg.cancel_scope.cancel()


async def test_what_is_held_when_the_node_stops_wanting_work_goes_to_another_node(
    nc: Client, subjects: Subjects
) -> None:
    async with anyio.create_task_group() as tg:
        full = pools_for(nc, subjects, "full", tg)
        other = pools_for(nc, subjects, "other", tg)
        await full.open()
        assert await full.fetch_one(0.1) is None
        await dispatch(nc, subjects, "cap.cpu", "handed-job")
        await eventually(lambda: full.pools[1].held is not None, what="held by the first node")
        await full.give_back()  # its slots filled up meanwhile
        assert full.stats.given_back == 1 and full.pools[1].held is None
        await other.open()
        msg = await other.fetch_one(10.0)
        assert msg is not None and decode(JobDispatch, msg.data).job_id == "handed-job"
        assert msg.metadata.num_delivered == 2
        await msg.ack()
        await full.close()
        await other.close()
        tg.cancel_scope.cancel()


async def test_a_full_node_prefetches_and_a_freed_slot_takes_the_highest_priority(
    nc: Client, subjects: Subjects
) -> None:
    """No one waits in fetch_one (every slot busy) yet the pulls go on; the held jobs'
    leases are kept, and the next fetch returns the urgent job before the bulk one."""
    async with anyio.create_task_group() as tg:
        pools = pools_for(nc, subjects, "busy", tg)
        await pools.open()
        pools.prefetch = True
        pools.start_pulls()
        await dispatch(nc, subjects, "cap.cpu", "bulk-job")
        await eventually(lambda: pools.held() == 1, what="the bulk job held")
        await anyio.sleep(0.7)  # past pull_s: without prefetch the pulls would have ended
        await dispatch(nc, subjects, "node.busy", "urgent-job", priority=10)
        await eventually(lambda: pools.held() == 2, what="the urgent job held too")
        assert pools.stats.prefetched == 2
        await pools.keep_leases()
        assert pools.stats.settle_errors == 0
        got = []
        for _ in range(2):
            msg = await pools.fetch_one(1.0)
            assert msg is not None
            got.append(decode(JobDispatch, msg.data).job_id)
            await msg.ack()
        assert got == ["urgent-job", "bulk-job"]
        pools.prefetch = False
        await pools.close()
        tg.cancel_scope.cancel()


async def test_priority_beats_pool_order(nc: Client, subjects: Subjects) -> None:
    async with anyio.create_task_group() as tg:
        pools = pools_for(nc, subjects, "n3", tg)
        await pools.open()
        assert await pools.fetch_one(0.1) is None
        await dispatch(nc, subjects, "node.n3", "pinned-low")
        await dispatch(nc, subjects, "cap.cpu", "shared-high", priority=5)
        await eventually(lambda: pools.held() == 2, what="both pools pulled")
        msg = await pools.fetch_one(1.0)
        assert msg is not None and decode(JobDispatch, msg.data).job_id == "shared-high"
        await msg.ack()
        await pools.close()
        tg.cancel_scope.cancel()
