"""The job manager on a real nats-server, driven by an agent stand-in over the real protocol.

The stand-in is a real NATS client doing what a node agent does: a durable pull
consumer on one pool of P_JOBS, reports through ``P.api.job_manager.report``, acks.
Tests drive it step by step so every interleaving they check is deterministic.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import msgspec
import nats.errors
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig

from services.job_manager.service import JobManagerService
from shared.codec import decode, encode
from shared.contracts import ServiceStatus
from shared.jobs import (
    JobDispatch,
    JobList,
    JobQuery,
    JobRecord,
    JobRef,
    JobResult,
    JobSpec,
    JobState,
    Requirements,
    SelectReply,
    SelectRequest,
)
from shared.provision import jobs_stream_config
from shared.subjects import Subjects
from shared.testing.builders import node_info
from shared.testing.fixtures import ServiceFactory, service_config
from shared.testing.helpers import eventually, stream_events

pytestmark = pytest.mark.anyio

T = TypeVar("T")
S = JobState
FAST = {"reaper_interval": 0.1, "retry_base_s": 0.05, "retry_max_s": 0.2}


async def call(nc: Client, prefix: str, method: str, payload: Any) -> tuple[int, Any]:
    """Request ``P.api.job_manager.<method>``: (code, decoded body); 200 when no error."""
    data = payload if isinstance(payload, bytes) else encode(payload)
    msg = await nc.request(Subjects(prefix).api("job_manager", method), data, timeout=5)
    code = int((msg.headers or {}).get("Nats-Service-Error-Code", 200))
    return code, json.loads(msg.data)


async def ok(nc: Client, prefix: str, method: str, payload: Any, tp: type[T]) -> T:
    code, body = await call(nc, prefix, method, payload)
    assert code == 200, body
    return msgspec.convert(body, tp)


async def events(nc: Client, prefix: str, kind: str) -> list[dict[str, Any]]:
    return [e.data for e in await stream_events(nc, f"{prefix}_EVENTS") if e.type == kind]


async def state_of(nc: Client, prefix: str, job_id: str) -> JobRecord:
    return await ok(nc, prefix, "get", JobRef(job_id=job_id), JobRecord)


class StandIn:
    """An agent stand-in on one pool: pulls dispatches, reports, acks."""

    def __init__(self, nc: Client, prefix: str, pool: str, node_id: str = "standin-1") -> None:
        self.nc, self.prefix, self.pool, self.node_id = nc, prefix, pool, node_id
        self.subjects = Subjects(prefix)

    @asynccontextmanager
    async def pulling(self, *, ack_wait: float = 30.0, max_deliver: int = -1) -> AsyncIterator[Any]:
        self.sub = await self.nc.jetstream().pull_subscribe(
            self.subjects.jobs(self.pool),
            durable=self.pool.replace(".", "-"),
            stream=self.subjects.jobs_stream,
            config=ConsumerConfig(ack_wait=ack_wait, max_deliver=max_deliver),
        )
        try:
            yield self
        finally:
            await self.sub.unsubscribe()

    async def take(self, timeout: float = 10.0) -> tuple[JobDispatch, Msg]:
        with anyio.fail_after(timeout):
            while True:
                try:
                    (msg,) = await self.sub.fetch(1, timeout=0.5)
                except nats.errors.TimeoutError:
                    continue
                return decode(JobDispatch, msg.data), msg

    async def report(self, d: JobDispatch, phase: str, **fields: Any) -> tuple[int, Any]:
        body = {"job_id": d.job_id, "attempt": d.attempt, "fencing": d.fencing}
        body.update(node_id=self.node_id, phase=phase, **fields)
        return await call(self.nc, self.prefix, f"report.{self.node_id}", body)

    async def run_one(self, result: JobResult) -> JobDispatch:
        """Take one dispatch and run it to completion, as a well-behaved agent does."""
        d, msg = await self.take()
        for phase, extra in (("started", {}), ("progress", {"progress": 0.5})):
            code, body = await self.report(d, phase, **extra)
            assert code == 200, body
        code, body = await self.report(d, "completed", result=msgspec.to_builtins(result))
        assert code == 200, body
        await msg.ack()
        return d


async def test_late_binding_to_the_capability_pool_then_completed(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    svc = await start_service(JobManagerService, **FAST)
    spec = JobSpec(type="selfplay", requirements=Requirements(capability="cpu"), labels={"c": "3"})
    rec = await ok(nc, prefix, "submit", spec, JobRecord)
    # No node_selector runs: the job goes to the capability pool for any agent to take.
    assert (rec.state, rec.pool, rec.attempt, rec.fencing) == (S.DISPATCHED, "cap.cpu", 1, 1)
    async with StandIn(nc, prefix, "cap.cpu").pulling() as agent:
        result = JobResult(result={"games": 64})
        d = await agent.run_one(result)
    assert (d.job_id, d.attempt, d.spec) == (rec.job_id, 1, spec)
    done = await state_of(nc, prefix, rec.job_id)
    assert (done.state, done.node_id, done.result, done.progress) == (
        S.COMPLETED,
        "standin-1",
        result,
        1.0,
    )
    (completed,) = await eventually(lambda: events(nc, prefix, "JOB_COMPLETED"))
    assert completed["job_id"] == rec.job_id and completed["result"] == {"games": 64}
    assert completed["labels"] == {"c": "3"} and completed["node_id"] == "standin-1"
    assert len(await events(nc, prefix, "JOB_SUBMITTED")) == 1
    assert len(await events(nc, prefix, "JOB_STARTED")) == 1
    listed = await ok(nc, prefix, "list", JobQuery(state=S.COMPLETED), JobList)
    assert [j.job_id for j in listed.jobs] == [rec.job_id]
    assert (await ok(nc, prefix, "list", JobQuery(state=S.RUNNING), JobList)).total == 0
    health = svc.health_check().details
    assert health["dispatch"]["to_cap"] == 1 and health["jobs"]["RUNNING"] == 0
    assert svc.custom_metrics()["jobs_completed_total"] == 1


async def test_same_idempotency_key_gives_the_same_job(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    await start_service(JobManagerService, **FAST)
    spec = JobSpec(type="train", idempotency_key="train:c3:gen7")
    replies: list[JobRecord] = []

    async def submit() -> None:
        replies.append(await ok(nc, prefix, "submit", spec, JobRecord))

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(submit)
    replies.append(await ok(nc, prefix, "submit", spec, JobRecord))
    assert len({r.job_id for r in replies}) == 1
    other = await ok(nc, prefix, "submit", JobSpec(type="train", idempotency_key="k2"), JobRecord)
    assert other.job_id != replies[0].job_id
    submitted = await events(nc, prefix, "JOB_SUBMITTED")
    assert sorted(e["job_id"] for e in submitted) == sorted([replies[0].job_id, other.job_id])
    info = await nc.jetstream().stream_info(f"{prefix}_JOBS")
    assert info.state.messages == 2  # one dispatch per job, not per submit


async def test_a_report_from_an_old_attempt_is_refused_and_counted(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    svc = await start_service(JobManagerService, **FAST)
    rec = await ok(nc, prefix, "submit", JobSpec(type="selfplay"), JobRecord)
    async with StandIn(nc, prefix, "cap.cpu").pulling() as agent:
        first, msg = await agent.take()
        assert (await agent.report(first, "started"))[0] == 200
        code, body = await agent.report(first, "failed", error="exit 1")
        assert code == 200 and body["state"] == "PENDING"
        await msg.ack()
        second, _ = await agent.take()  # the retry, after the backoff
        assert (second.attempt, second.fencing) == (2, 2)
        code, body = await agent.report(first, "progress", progress=0.9)
        assert code == 409 and "not the live one" in body["error"]["message"]
        assert svc.health_check().details["stale_reports"] == 1
        assert (await agent.report(second, "started"))[0] == 200
    (failed,) = await events(nc, prefix, "JOB_FAILED")
    assert (failed["attempt"], failed["permanent"], failed["error"]) == (1, False, "exit 1")
    (retried,) = await events(nc, prefix, "JOB_RETRIED")
    assert retried["attempt"] == 2 and 0 < retried["delay_s"] <= 0.2
    assert (await state_of(nc, prefix, rec.job_id)).state is S.RUNNING


async def test_a_report_from_another_node_is_refused_and_counted(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    # Node "a" holds its own credential: it can only publish on report.a. Reports
    # about node "b"'s pinned attempt are refused whichever node the body names.
    svc = await start_service(JobManagerService, **FAST)
    spec = JobSpec(type="train", requirements=Requirements(node_id="b"))
    rec = await ok(nc, prefix, "submit", spec, JobRecord)
    assert (rec.pool, rec.node_id) == ("node.b", "b")
    async with StandIn(nc, prefix, "node.b", node_id="b").pulling() as b:
        d, msg = await b.take()
        forged = {"job_id": d.job_id, "attempt": d.attempt, "fencing": d.fencing}
        forged.update(node_id="b", phase="completed")
        code, body = await call(nc, prefix, "report.a", forged)
        assert code == 403 and "names node 'b'" in body["error"]["message"]
        forged["node_id"] = "a"
        code, body = await call(nc, prefix, "report.a", forged)
        assert code == 409 and "another node" in body["error"]["message"]
        refused = svc.health_check().details["refused_reports"]
        assert refused == {"forged_node": 1, "wrong_node": 1}
        assert (await state_of(nc, prefix, rec.job_id)).state is S.DISPATCHED
        assert (await b.report(d, "started"))[0] == 200  # the right node still may
        await msg.ack()
    assert not await events(nc, prefix, "JOB_COMPLETED")


async def test_lease_expiry_retries_then_the_next_attempt_completes(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    svc = await start_service(JobManagerService, lease_s=0.5, **FAST)
    rec = await ok(nc, prefix, "submit", JobSpec(type="selfplay"), JobRecord)
    async with StandIn(nc, prefix, "cap.cpu").pulling() as agent:
        first, _ = await agent.take()
        assert (await agent.report(first, "started"))[0] == 200
        # The stand-in goes quiet: no progress, so the lease lapses.
        (retried,) = await eventually(lambda: events(nc, prefix, "JOB_RETRIED"), what="retry")
        assert retried["reason"] == "lease expired"
        await agent.run_one(JobResult())
        assert (await agent.report(first, "completed"))[0] == 409
    done = await state_of(nc, prefix, rec.job_id)
    assert (done.state, done.attempt) == (S.COMPLETED, 2)
    assert svc.health_check().details["reaped"] == {"lease expired": 1}
    assert len(await events(nc, prefix, "JOB_COMPLETED")) == 1


async def test_max_attempts_exhausted_fails_for_good(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    await start_service(JobManagerService, **FAST)
    rec = await ok(nc, prefix, "submit", JobSpec(type="evaluate", max_attempts=2), JobRecord)
    async with StandIn(nc, prefix, "cap.cpu").pulling() as agent:
        for n in (1, 2):
            d, msg = await agent.take()
            assert d.attempt == n
            assert (await agent.report(d, "started"))[0] == 200
            assert (await agent.report(d, "failed", error=f"exit {n}"))[0] == 200
            await msg.ack()
    final = await state_of(nc, prefix, rec.job_id)
    assert (final.state, final.permanent, final.error) == (S.FAILED, True, "exit 2")
    failed = await events(nc, prefix, "JOB_FAILED")
    assert [(e["attempt"], e["permanent"]) for e in failed] == [(1, False), (2, True)]
    assert len(await events(nc, prefix, "JOB_RETRIED")) == 1


async def test_cancel_a_running_job(start_service: ServiceFactory, nc: Client, prefix: str) -> None:
    await start_service(JobManagerService, **FAST)
    rec = await ok(nc, prefix, "submit", JobSpec(type="selfplay"), JobRecord)
    async with StandIn(nc, prefix, "cap.cpu").pulling() as agent:
        d, _ = await agent.take()
        assert (await agent.report(d, "started"))[0] == 200
        ref = JobRef(job_id=rec.job_id, reason="operator")
        cancelled = await ok(nc, prefix, "cancel", ref, JobRecord)
        assert cancelled.state is S.CANCELLED
        code, body = await agent.report(d, "progress", progress=0.3)
        assert code == 409 and "cancelled" in body["error"]["message"]
        assert (await agent.report(d, "completed"))[0] == 409
    assert (await call(nc, prefix, "cancel", ref))[0] == 409
    assert (await state_of(nc, prefix, rec.job_id)).state is S.CANCELLED
    (event,) = await events(nc, prefix, "JOB_CANCELLED")
    assert event == {"job_id": rec.job_id, "reason": "operator"}
    assert await events(nc, prefix, "JOB_COMPLETED") == []


async def test_a_silent_node_gets_its_job_retried(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    svc = await start_service(JobManagerService, node_lost_after_s=0.5, **FAST)
    info = node_info("ghost", slots=1, free_slots=1)
    silent = anyio.Event()

    async def beat() -> None:
        while not silent.is_set():
            await nc.publish(Subjects(prefix).node("ghost"), encode(info))
            await anyio.sleep(0.1)

    async with anyio.create_task_group() as tg:
        tg.start_soon(beat)
        await eventually(lambda: "ghost" in svc.index.node_seen, what="NodeInfo seen")
        spec = JobSpec(type="selfplay", max_attempts=2, requirements=Requirements(node_id="ghost"))
        rec = await ok(nc, prefix, "submit", spec, JobRecord)
        assert (rec.pool, rec.node_id) == ("node.ghost", "ghost")
        async with StandIn(nc, prefix, "node.ghost", node_id="ghost").pulling() as agent:
            d, _ = await agent.take()
            assert (await agent.report(d, "started"))[0] == 200
            silent.set()  # the node stops publishing NodeInfo
            (retried,) = await eventually(lambda: events(nc, prefix, "JOB_RETRIED"))
            assert retried["reason"] == "node lost"
            # Still pinned to a lost node, the second attempt fails too: for good.
            final = await eventually(
                lambda: _in_state(nc, prefix, rec.job_id, S.FAILED), what="FAILED"
            )
    assert (final.error, final.attempt, final.permanent) == ("node lost", 2, True)
    # The reaper counts after its write lands: wait for the count, not just the record.
    await eventually(
        lambda: svc.health_check().details["reaped"].get("node lost") == 2,
        what="two node-lost reapings counted",
    )
    # Dead attempts' messages were taken out of the lost node's pool.
    info_ = await nc.jetstream().stream_info(f"{prefix}_JOBS")
    assert info_.state.messages == 0


async def _in_state(nc: Client, prefix: str, job_id: str, state: S) -> JobRecord | None:
    rec = await state_of(nc, prefix, job_id)
    return rec if rec.state is state else None


async def test_garbage_is_refused_with_400_and_counted(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    svc = await start_service(JobManagerService, **FAST)
    assert (await call(nc, prefix, "submit", b"not json"))[0] == 400
    assert (await call(nc, prefix, "submit", {"type": "Bad Type!"}))[0] == 400
    assert (await call(nc, prefix, "submit", {"type": "t", "max_attempts": 0}))[0] == 400
    bad_pool = {"type": "t", "requirements": {"capability": "a.b"}}
    assert (await call(nc, prefix, "submit", bad_pool))[0] == 400
    for bad in ({"gpus": -1}, {"gpus": 1000}, {"gpu_memory_mb": -5}):
        code, body = await call(nc, prefix, "submit", {"type": "t", "requirements": bad})
        assert code == 400 and "requirements." in body["error"]["message"], body
    assert (await call(nc, prefix, "report.n", {"job_id": 7}))[0] == 400
    report = {"job_id": "x", "attempt": 1, "fencing": 1, "node_id": "n", "phase": "exploded"}
    assert (await call(nc, prefix, "report.n", report))[0] == 400
    report["phase"] = "started"
    assert (await call(nc, prefix, "report.n", report))[0] == 404
    assert (await call(nc, prefix, "get", JobRef(job_id="nope")))[0] == 404
    assert (await call(nc, prefix, "cancel", JobRef(job_id="nope")))[0] == 404
    details = svc.health_check().details
    invalid = details["framework"]["intake"]["invalid"]
    assert invalid["submit:malformed"] == 1 and invalid["submit:wrong_schema"] == 5
    assert invalid["report:wrong_schema"] == 1
    assert details["counts"]["bad_submits"] == 1 and details["counts"]["bad_reports"] == 1
    # Still serving.
    rec = await ok(nc, prefix, "submit", JobSpec(type="t"), JobRecord)
    assert rec.state is S.DISPATCHED


async def test_the_selectors_choice_routes_to_a_node_pool(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    asked: list[SelectRequest] = []

    async def select(msg: Msg) -> None:
        asked.append(decode(SelectRequest, msg.data))
        await msg.respond(encode(SelectReply(nodes=["n7", "n8"])))

    sub = await nc.subscribe(Subjects(prefix).api("node_selector", "select"), cb=select)
    try:
        svc = await start_service(JobManagerService, **FAST)
        req = Requirements(capability="gpu", gpu=True, min_memory_mb=512)
        rec = await ok(nc, prefix, "submit", JobSpec(type="train", requirements=req), JobRecord)
        assert (rec.pool, rec.node_id) == ("node.n7", "n7")
        # Asked before the record was written: it was created DISPATCHED, one write.
        (written,) = await svc.kv.history(rec.job_id)
        assert decode(JobRecord, written.value or b"").state is S.DISPATCHED
        assert [a.requirement for a in asked] == [req] and asked[0].count == 1
        async with StandIn(nc, prefix, "node.n7", node_id="n7").pulling() as agent:
            await agent.run_one(JobResult())
        pooled = JobSpec(type="train", requirements=Requirements(capability="gpu", pooled=True))
        rec2 = await ok(nc, prefix, "submit", pooled, JobRecord)
        assert rec2.pool == "cap.gpu" and len(asked) == 1  # pooled: the selector not asked
    finally:
        await sub.unsubscribe()
    assert (await state_of(nc, prefix, rec.job_id)).state is S.COMPLETED


async def test_messages_past_max_deliver_fail_their_attempt(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    svc = await start_service(JobManagerService, **FAST)
    async with StandIn(nc, prefix, "cap.poison").pulling(ack_wait=0.3, max_deliver=2) as agent:
        spec = JobSpec(type="t", max_attempts=1, requirements=Requirements(capability="poison"))
        rec = await ok(nc, prefix, "submit", spec, JobRecord)

        async def never_acked() -> JobRecord | None:
            # An agent that takes the message and dies each time: no report, no ack.
            with anyio.move_on_after(0.5):
                await agent.take()
            return await _in_state(nc, prefix, rec.job_id, S.FAILED)

        final = await eventually(never_acked, what="the attempt failed by the advisory")
    assert final.permanent and "2 deliveries" in final.error
    assert svc.health_check().details["counts"]["max_deliveries"] == 1
    info = await nc.jetstream().stream_info(f"{prefix}_JOBS")
    assert info.state.messages == 0


async def test_a_restarted_manager_rebuilds_its_index_and_reaps(
    nc: Client, nats_url: str, prefix: str
) -> None:
    cfg = service_config(
        JobManagerService, nats_url, prefix, lease_s=0.5, reaper_lease_ttl_s=1.0, **FAST
    )
    async with JobManagerService(cfg).running():
        rec = await ok(nc, prefix, "submit", JobSpec(type="selfplay"), JobRecord)
        async with StandIn(nc, prefix, "cap.cpu").pulling() as agent:
            d, _ = await agent.take()
            assert (await agent.report(d, "started"))[0] == 200
    # Down while the job's lease lapses; the next instance finds it in the bucket.
    await anyio.sleep(0.6)
    cfg2 = msgspec.structs.replace(cfg, instance=cfg.instance + "-2")
    async with JobManagerService(cfg2).running() as svc:
        await eventually(lambda: _in_state(nc, prefix, rec.job_id, S.DISPATCHED), what="retry")
        assert svc.health_check().details["reaped"] == {"lease expired": 1}


async def test_a_failed_dispatch_publish_degrades_and_is_retried(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    svc = await start_service(JobManagerService, **FAST)
    js = nc.jetstream()
    await js.delete_stream(f"{prefix}_JOBS")  # nothing stores P.jobs.> now
    spec = JobSpec(type="t", requirements=Requirements(pooled=True))
    rec = await ok(nc, prefix, "submit", spec, JobRecord)
    # The attempt is given back, its fencing token is not.
    assert (rec.state, rec.attempt, rec.fencing) == (S.PENDING, 0, 1)
    health = svc.health_check()
    assert health.status is ServiceStatus.DEGRADED and "dispatch" in health.message
    assert health.details["dispatch_failures"] >= 1
    await js.add_stream(jobs_stream_config(Subjects(prefix), svc.config))
    again = await eventually(lambda: _in_state(nc, prefix, rec.job_id, S.DISPATCHED))
    assert (again.attempt, again.pool) == (1, "cap.cpu") and again.fencing >= 2
    assert svc.health_check().status is ServiceStatus.RUNNING
    async with StandIn(nc, prefix, "cap.cpu").pulling() as agent:
        d, msg = await agent.take()
        assert (d.attempt, d.fencing) == (again.attempt, again.fencing)
        await msg.ack()
