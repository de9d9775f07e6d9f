"""The job manager heals the windows where an attempt can be lost.

- a dispatch cut between its DISPATCHED write and its publish into P_JOBS (the job
  manager killed there) must not spend an attempt: the message is published again
  under the same ``Nats-Msg-Id``, and a job with max_attempts 1 still runs;
- an agent restarted under the same node id (a new incarnation) that does not list
  the attempt recorded with its old incarnation has lost it: failed and retried at
  once, not after the lease.
"""

from __future__ import annotations

import time

import anyio
import msgspec
import pytest
from nats.aio.client import Client

from services.job_manager import policy
from services.job_manager.service import JobManagerService
from shared.codec import encode
from shared.jobs import JobRecord, JobResult, JobSpec, JobState, Requirements
from shared.subjects import Subjects
from shared.testing.builders import node_info
from shared.testing.fixtures import ServiceFactory
from shared.testing.helpers import eventually
from tests.integration.test_job_manager import FAST, StandIn, events, ok, state_of

pytestmark = pytest.mark.anyio


async def test_a_dispatch_cut_before_its_publish_runs_without_spending_an_attempt(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    svc = await start_service(JobManagerService, dispatch_timeout_s=3.0, **FAST)
    now = time.time()
    spec = JobSpec(type="selfplay", max_attempts=1, requirements=Requirements(pooled=True))
    record = policy.dispatched(policy.new_record("cut-1", spec, now), now, "cap.cpu")
    assert record is not None
    # What a job manager killed right after the DISPATCHED write leaves behind: the
    # record says DISPATCHED, attempt 1, and no message was ever published.
    await svc.kv.put("cut-1", encode(record))
    async with StandIn(nc, prefix, "cap.cpu").pulling() as agent:
        taken = await agent.run_one(JobResult(result={"ok": True}))
    assert (taken.attempt, taken.fencing) == (1, 1)
    done = await state_of(nc, prefix, "cut-1")
    assert (done.state, done.attempt) == (JobState.COMPLETED, 1)
    assert svc.health_check().details["dispatch"]["republished"] == 1
    assert await events(nc, prefix, "JOB_FAILED") == []


async def test_a_dispatch_already_published_is_not_duplicated(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    svc = await start_service(JobManagerService, **FAST)
    spec = JobSpec(type="selfplay", requirements=Requirements(pooled=True))
    submitted = await ok(nc, prefix, "submit", spec, JobRecord)
    # A restarted manager does not know the message it published: it publishes again,
    # and the stream's deduplication (same Nats-Msg-Id) keeps one message.
    svc.api.dispatcher.messages.clear()
    await eventually(
        lambda: svc.health_check().details["dispatch"].get("republish_duplicates") == 1,
        what="the republish found a duplicate",
    )
    info = await nc.jetstream().stream_info(f"{prefix}_JOBS")
    assert info.state.messages == 1
    async with StandIn(nc, prefix, "cap.cpu").pulling() as agent:
        taken = await agent.run_one(JobResult())
    assert taken.job_id == submitted.job_id


async def test_an_agent_restarted_without_the_job_gets_it_retried_at_once(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    # A lease far longer than the test: only the incarnation can explain a retry.
    svc = await start_service(JobManagerService, lease_s=600.0, **FAST)
    subject = Subjects(prefix).node("standin-1")

    async def node_says(incarnation: str, running: list[str]) -> None:
        info = node_info("standin-1", slots=1, free_slots=1, running_jobs=running)
        await nc.publish(subject, encode(msgspec.structs.replace(info, incarnation=incarnation)))
        await nc.flush()

    await node_says("first", [])
    spec = JobSpec(type="selfplay", requirements=Requirements(node_id="standin-1"))
    submitted = await ok(nc, prefix, "submit", spec, JobRecord)
    async with StandIn(nc, prefix, "node.standin-1").pulling() as agent:
        d, msg = await agent.take()
        assert (await agent.report(d, "started", incarnation="first"))[0] == 200
        running = await state_of(nc, prefix, submitted.job_id)
        assert (running.state, running.incarnation) == (JobState.RUNNING, "first")
        # The same incarnation not listing it yet, or a new one that does list it
        # (it took the attempt over): neither has lost the job.
        await node_says("first", [])
        await node_says("second", [submitted.job_id])
        await anyio.sleep(0.5)  # five reaper passes
        assert (await state_of(nc, prefix, submitted.job_id)).state is JobState.RUNNING
        # A new incarnation without the job: the agent restarted and lost it.
        started = time.monotonic()
        await node_says("third", [])
        (retried,) = await eventually(lambda: events(nc, prefix, "JOB_RETRIED"), what="retry")
        assert retried["reason"] == "agent restarted" and retried["delay_s"] == 0.0
        second, _ = await agent.take()
        assert time.monotonic() - started < 10.0
        assert (second.attempt, second.fencing) == (2, 2)
        await msg.ack()
    assert svc.health_check().details["reaped"] == {"agent restarted": 1}


async def test_a_pooled_dispatch_whose_message_is_lost_is_retried_not_left_for_an_hour(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    # The pooled timeout is an hour: only the pool's idle consumer can explain a retry.
    svc = await start_service(
        JobManagerService, orphan_after_s=1.0, orphan_check_s=0.3, lease_s=600.0, **FAST
    )
    spec = JobSpec(type="selfplay", max_attempts=3, requirements=Requirements(pooled=True))
    async with StandIn(nc, prefix, "cap.cpu").pulling() as agent:
        submitted = await ok(nc, prefix, "submit", spec, JobRecord)
        # The message leaves the pool without any agent starting it: what a consumer
        # whose acknowledgement floor moved past it (seen after a server restart) does.
        first, msg = await agent.take()
        await msg.ack()
        assert (first.job_id, first.attempt) == (submitted.job_id, 1)
        again = await agent.run_one(JobResult())
    assert (again.job_id, again.attempt) == (submitted.job_id, 2)
    assert again.fencing > first.fencing
    done = await state_of(nc, prefix, submitted.job_id)
    assert (done.state, done.attempt) == (JobState.COMPLETED, 2)
    assert svc.health_check().details["reaped"] == {"dispatch lost": 1}
    failed = await events(nc, prefix, "JOB_FAILED")
    assert [(e["attempt"], e["error"]) for e in failed] == [(1, "dispatch lost")]
