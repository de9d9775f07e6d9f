"""Two job managers on one real nats-server: requests split, jobs owned by compare-and-set.

Both instances serve the same endpoints in one queue group, so each submit and each
report reaches exactly one of them; the record's compare-and-set decides every change
whichever instance makes it, and the reaper lease gives one reaper. The checks are on
outcomes (each job terminal once, each announcement once), never on timing.
"""

from __future__ import annotations

from collections import Counter

import anyio
import nats.errors
import pytest
from nats.aio.client import Client

from services.job_manager.service import JobManagerService
from shared.codec import decode
from shared.jobs import JobDispatch, JobRecord, JobResult, JobSpec, JobState, Requirements
from shared.testing.fixtures import ServiceFactory, service_config
from shared.testing.helpers import eventually
from tests.integration.test_job_manager import FAST, StandIn, events, ok, state_of

pytestmark = pytest.mark.anyio

JOBS = 40
POOLED = Requirements(capability="cpu")


async def _two(start_service: ServiceFactory) -> tuple[JobManagerService, JobManagerService]:
    first = await start_service(JobManagerService, instance="jm-a", **FAST)
    second = await start_service(JobManagerService, instance="jm-b", **FAST)
    return first, second


async def test_two_managers_split_submits_and_run_every_job_once(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    managers = await _two(start_service)
    ids: list[str] = []

    async def submit(n: int) -> None:
        rec = await ok(nc, prefix, "submit", JobSpec(type="t", requirements=POOLED), JobRecord)
        ids.append(rec.job_id)

    async with anyio.create_task_group() as tg:
        for n in range(JOBS):
            tg.start_soon(submit, n)
    assert len(set(ids)) == JOBS
    # One queue group: every submit went to one instance, and both took some.
    submitted = [m.counts["submitted_total"] for m in managers]
    assert sum(submitted) == JOBS and min(submitted) > 0, submitted

    async with StandIn(nc, prefix, "cap.cpu").pulling() as agent:
        ran = [await agent.run_one(JobResult(result={"n": n})) for n in range(JOBS)]
    assert sorted(d.job_id for d in ran) == sorted(ids)
    assert {(d.attempt, d.fencing) for d in ran} == {(1, 1)}  # no job dispatched twice

    for job_id in ids:
        assert (await state_of(nc, prefix, job_id)).state is JobState.COMPLETED
    done = await eventually(
        lambda: _all_of(nc, prefix, "JOB_COMPLETED"), what="every JOB_COMPLETED"
    )
    assert Counter(e["job_id"] for e in done) == Counter(ids)  # each exactly once
    assert Counter(e["job_id"] for e in await events(nc, prefix, "JOB_SUBMITTED")) == Counter(ids)
    # The reports were split too, and every one was accepted by whichever instance got it.
    assert all(sum(m.api.refused.values()) == 0 for m in managers)
    assert sum(m.counts["completed_total"] for m in managers) == JOBS


async def _all_of(nc: Client, prefix: str, kind: str) -> list[dict[str, object]] | None:
    found = await events(nc, prefix, kind)
    return found if len(found) >= JOBS else None


async def test_one_reaper_among_two_and_the_other_takes_over_at_stop(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    managers = await _two(start_service)

    def holders() -> list[JobManagerService]:
        return [m for m in managers if m.api.reaper.lease.held]

    (holder,) = await eventually(lambda: holders() or None, what="a reaper lease holder")
    # Several reaper ticks later there is still exactly one.
    ticks = holder.api.reaper.lease.revision or 0
    await eventually(
        lambda: (holder.api.reaper.lease.revision or 0) >= ticks + 3, what="three renewals"
    )
    assert holders() == [holder]
    other = next(m for m in managers if m is not holder)
    # A job whose agent stays silent is reaped by the one holder, once.
    rec = await ok(nc, prefix, "submit", JobSpec(type="t", requirements=POOLED), JobRecord)
    await holder.api.reaper.release()  # as at stop: the lease is given up
    await eventually(lambda: other.api.reaper.lease.held or None, what="the other reaps")
    assert not holder.api.reaper.lease.held
    assert (await state_of(nc, prefix, rec.job_id)).state is JobState.DISPATCHED


async def test_two_managers_two_agents_retries_and_one_stopped_end_every_job_once(
    start_service: ServiceFactory, nc: Client, prefix: str, nats_url: str
) -> None:
    # Both instances take submits and reports at once; every third job's first attempt
    # fails and is retried by whichever holds the reaper lease. Halfway through, one
    # instance stops (giving its lease up): the other finishes every job alone.
    stays = await start_service(JobManagerService, instance="jm-a", **FAST)
    leaving = JobManagerService(
        service_config(JobManagerService, nats_url, prefix, instance="jm-b", **FAST)
    )
    index: dict[str, int] = {}
    taken: list[tuple[str, int]] = []
    done: set[str] = set()

    async def run_agents(until: int) -> None:
        async def agent(node_id: str) -> None:
            stand_in = StandIn(nc, prefix, "cap.cpu", node_id=node_id)
            async with stand_in.pulling():
                while len(done) < until:
                    try:
                        (msg,) = await stand_in.sub.fetch(1, timeout=0.5)
                    except nats.errors.TimeoutError:
                        continue
                    d = decode(JobDispatch, msg.data)
                    taken.append((d.job_id, d.fencing))
                    assert (await stand_in.report(d, "started"))[0] == 200
                    if d.attempt == 1 and index[d.job_id] % 3 == 0:
                        code, body = await stand_in.report(d, "failed", error="exit 1")
                    else:
                        code, body = await stand_in.report(d, "completed", result={})
                        done.add(d.job_id)
                    assert code == 200, body
                    await msg.ack()

        async with anyio.create_task_group() as tg:
            tg.start_soon(agent, "standin-1")
            tg.start_soon(agent, "standin-2")

    async with leaving.running():

        async def submit(n: int) -> None:
            rec = await ok(nc, prefix, "submit", JobSpec(type="t", requirements=POOLED), JobRecord)
            index[rec.job_id] = n

        async with anyio.create_task_group() as tg:
            for n in range(JOBS):
                tg.start_soon(submit, n)
        assert min(m.counts["submitted_total"] for m in (stays, leaving)) > 0
        await run_agents(JOBS // 2)
        assert leaving.counts["completed_total"] > 0  # it took a share of the reports
    await run_agents(JOBS)

    assert len(taken) == len(set(taken))  # no attempt dispatched twice
    failing = {job_id for job_id, n in index.items() if n % 3 == 0}
    for job_id in index:
        rec = await state_of(nc, prefix, job_id)
        assert rec.state is JobState.COMPLETED
        assert rec.attempt == (2 if job_id in failing else 1)
    done_events = await eventually(
        lambda: _all_of(nc, prefix, "JOB_COMPLETED"), what="every JOB_COMPLETED"
    )
    assert Counter(e["job_id"] for e in done_events) == Counter(list(index))  # each exactly once
    failed = await events(nc, prefix, "JOB_FAILED")
    assert Counter(e["job_id"] for e in failed) == Counter(failing)
    assert not any(e["permanent"] for e in failed)
