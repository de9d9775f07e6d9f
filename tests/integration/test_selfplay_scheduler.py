"""The selfplay scheduler with the real job manager on a real nats-server.

The test plays the node agents' part only as far as the scheduler sees them: it
publishes NodeInfo for fake selfplay nodes with some free slots. No agent pulls the
jobs, so whatever the scheduler queues stays queued, and the job manager's ``list``
shows exactly what it submitted.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import msgspec
import pytest
from nats.aio.client import Client

from services.job_manager.service import JobManagerService
from services.selfplay_scheduler.api import Priorities
from services.selfplay_scheduler.service import SelfplaySchedulerService
from shared.codec import encode
from shared.contracts import ServiceStatus
from shared.events import EventData, TrainingCompleted, TrainingStarted, build_event
from shared.jobs import DataRef, JobList, JobQuery, JobRecord, JobRef, JobState, NodeInfo
from shared.kv import bucket_config, ensure_bucket
from shared.provision import BUCKET_SPECS
from shared.subjects import Subjects
from shared.testing.builders import node_info as build_node
from shared.testing.fixtures import ServiceFactory, service_config
from shared.testing.helpers import eventually, stream_events
from shared.training import Champion

pytestmark = pytest.mark.anyio

T = TypeVar("T")
JM = {"reaper_interval": 0.1, "dispatch_timeout_s": 600.0}
# The free-slot rules alone: no backlog beyond the free slots (its own test sets one).
FAST = {"interval_s": 0.2, "breaker_recovery_s": 0.5, "backlog_per_slot": 0}
SHA = "ab" * 32


async def call(nc: Client, prefix: str, svc: str, method: str, payload: Any) -> tuple[int, Any]:
    msg = await nc.request(Subjects(prefix).api(svc, method), encode(payload), timeout=5)
    return int((msg.headers or {}).get("Nats-Service-Error-Code", 200)), json.loads(msg.data)


async def ok(nc: Client, prefix: str, svc: str, method: str, payload: Any, tp: type[T]) -> T:
    code, body = await call(nc, prefix, svc, method, payload)
    assert code == 200, body
    return msgspec.convert(body, tp)


async def queued(nc: Client, prefix: str) -> list[JobRecord]:
    """Selfplay jobs PENDING or DISPATCHED (one moving between the two lists counts once)."""
    jobs: dict[str, JobRecord] = {}
    for state in (JobState.PENDING, JobState.DISPATCHED):
        query = JobQuery(state=state, type="selfplay", limit=1000)
        found = await ok(nc, prefix, "job_manager", "list", query, JobList)
        jobs.update((j.job_id, j) for j in found.jobs)
    return list(jobs.values())


async def priorities(nc: Client, prefix: str) -> Priorities:
    return await ok(nc, prefix, "selfplay_scheduler", "priorities", {}, Priorities)


async def publish_event(nc: Client, prefix: str, seq: int, data: EventData) -> None:
    event = build_event(prefix, "training_coordinator", "tc-1", seq, data)
    subject = Subjects(prefix).event("training_coordinator", data.TYPE)
    await nc.jetstream().publish(subject, encode(event))


async def event_data(nc: Client, prefix: str, kind: str) -> list[dict[str, Any]]:
    return [e.data for e in await stream_events(nc, f"{prefix}_EVENTS") if e.type == kind]


def node_info(node_id: str, free: int) -> NodeInfo:
    return build_node(
        node_id,
        capabilities=["selfplay", "cpu"],
        slots=8,
        free_slots=free,
        cpu_count=8,
        sent_at=time.time(),
        interval_s=0.2,
    )


@asynccontextmanager
async def fake_nodes(nc: Client, prefix: str, **free: int) -> AsyncIterator[dict[str, int]]:
    """Publish NodeInfo for each node every 0.2 s; change the yielded dict to change slots."""
    subjects = Subjects(prefix)
    stop = anyio.Event()

    async def beat() -> None:
        while not stop.is_set():
            for node_id, slots in free.items():
                await nc.publish(subjects.node(node_id), encode(node_info(node_id, slots)))
            with anyio.move_on_after(0.2):
                await stop.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(beat)
        try:
            yield free
        finally:
            # Ended by the event, not by cancelling the group: the test's own task is
            # inside the group's scope, and a cancel must not reach it.
            stop.set()


async def exactly(nc: Client, prefix: str, n: int) -> list[JobRecord]:
    async def check() -> list[JobRecord] | None:
        jobs = await queued(nc, prefix)
        return jobs if len(jobs) == n else None

    return await eventually(check, what=f"{n} queued selfplay jobs")


async def rounds(svc: SelfplaySchedulerService, count: int) -> None:
    start = svc.round_loop.stats().runs
    await eventually(lambda: svc.round_loop.stats().runs >= start + count, what="rounds")


async def test_queues_free_slots_plus_buffer_and_never_more(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    await start_service(JobManagerService, **JM)
    svc = await start_service(SelfplaySchedulerService, **FAST)
    async with fake_nodes(nc, prefix, n1=3, n2=3) as free:
        jobs = await exactly(nc, prefix, 7)  # 6 free slots + a buffer of 1
        for _ in range(5):  # nothing runs them: every later round must submit nothing
            await rounds(svc, 1)
            assert len(await queued(nc, prefix)) == 7
        free["n1"] = 6
        jobs = await exactly(nc, prefix, 10)
        await rounds(svc, 3)
        assert len(await queued(nc, prefix)) == 10
    specs = [j.spec for j in jobs]
    assert {s.requirements.capability for s in specs} == {"selfplay"}
    assert all(s.requirements.pooled and s.max_attempts == 2 for s in specs)
    assert len({s.idempotency_key for s in specs}) == 10
    assert len({s.args["seed"] for s in specs}) == 10
    games = {"3x3k3": 200, "4x4k3": 100, "5x5k4": 50}
    for s in specs:
        assert s.labels == {"kind": "selfplay", "game": s.args["game"], "model_id": ""}
        assert s.args["games"] == games[s.args["game"]] and s.args["exploration"] == 0.2
        assert s.inputs == []  # no champion yet
    assert set(Counter(s.args["game"] for s in specs)) == set(games)  # every game served
    view = await priorities(nc, prefix)
    assert (view.target, view.queued, view.free_slots, view.nodes_alive) == (10, 10, 9, 2)
    targets = [e["target"] for e in await event_data(nc, prefix, "SELFPLAY_TARGET_UPDATED")]
    assert targets[-2:] == [7, 10]
    splits = await event_data(nc, prefix, "SELFPLAY_ALLOCATION_UPDATED")
    assert splits and sum(splits[-1]["allocation"].values()) == 10
    assert set(splits[-1]["priorities"]) == set(games)
    assert len(splits) <= 3  # announced on change only, not every round


async def test_keeps_a_backlog_ahead_of_busy_slots(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    """Every slot busy: one queued job per slot plus the buffer waits ahead of them."""
    await start_service(JobManagerService, **JM)
    await start_service(SelfplaySchedulerService, **{**FAST, "backlog_per_slot": 1})
    async with fake_nodes(nc, prefix, n1=0, n2=0):
        await exactly(nc, prefix, 17)  # 2 nodes of 8 slots, all busy, + a buffer of 1
        view = await priorities(nc, prefix)
        assert (view.target, view.slots, view.free_slots) == (17, 16, 0)


async def test_an_override_makes_its_config_dominate(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    await start_service(JobManagerService, **JM)
    await start_service(SelfplaySchedulerService, **FAST)
    async with fake_nodes(nc, prefix, n1=3, n2=3) as free:
        before = {j.job_id for j in await exactly(nc, prefix, 7)}
        code, body = await call(
            nc, prefix, "selfplay_scheduler", "override", {"game": "nope", "weight": 2.0}
        )
        assert code == 400 and "unknown game" in body["error"]["message"]
        reply = await ok(
            nc, prefix, "selfplay_scheduler", "override", {"game": "5x5k4", "weight": 50.0}, dict
        )
        assert reply == {"weights": {"5x5k4": 50.0}}

        async def dominated() -> Priorities | None:
            view = await priorities(nc, prefix)
            alloc = view.allocation
            return view if alloc["5x5k4"] > alloc["3x3k3"] + alloc["4x4k3"] else None

        view = await eventually(dominated, what="5x5k4 dominating the allocation")
        assert view.overrides == {"5x5k4": 50.0} and view.shares["5x5k4"] == pytest.approx(0.8)
        free["n2"] = 9
        jobs = await exactly(nc, prefix, 13)
    new = Counter(j.spec.args["game"] for j in jobs if j.job_id not in before)
    assert new["5x5k4"] >= 4 and new["5x5k4"] > new["3x3k3"] + new["4x4k3"], new
    cleared = await ok(
        nc, prefix, "selfplay_scheduler", "override", {"game": "5x5k4", "weight": None}, dict
    )
    assert cleared == {"weights": {}}


async def test_training_lowers_a_config_and_the_signal_survives_a_restart(
    start_service: ServiceFactory, nc: Client, nats_url: str, prefix: str
) -> None:
    await start_service(JobManagerService, **JM)
    config = service_config(SelfplaySchedulerService, nats_url, prefix, **FAST)
    async with fake_nodes(nc, prefix, n1=2):
        async with SelfplaySchedulerService(config).running():
            first = await eventually(lambda: _updated(nc, prefix, 0.0), what="a first round")
            await publish_event(
                nc, prefix, 1, TrainingStarted(game="4x4k3", job_id="t1", games=500)
            )

            async def lowered() -> Priorities | None:
                view = await priorities(nc, prefix)
                return view if "4x4k3" in view.in_training else None

            view = await eventually(lowered, what="4x4k3 in training")
            assert view.priorities["4x4k3"] < 0.5 * first.priorities["4x4k3"]
            assert view.terms["4x4k3"]["training"] == pytest.approx(0.3)
            assert view.priorities["3x3k3"] == pytest.approx(first.priorities["3x3k3"], rel=0.01)
            jobs = await exactly(nc, prefix, 3)
        # Restarted: the signal comes from the bucket, and the submit rounds go on from
        # where they were (the old idempotency keys would name the old, cancelled jobs).
        for job in jobs:
            await ok(nc, prefix, "job_manager", "cancel", JobRef(job_id=job.job_id), dict)
        async with SelfplaySchedulerService(config).running():
            again = await exactly(nc, prefix, 3)
            assert not {j.job_id for j in again} & {j.job_id for j in jobs}
            view = await priorities(nc, prefix)
            assert view.in_training == ["4x4k3"]
            done = TrainingCompleted(game="4x4k3", job_id="t1", model_id="m1")
            await publish_event(nc, prefix, 2, done)

            async def finished() -> Priorities | None:
                view = await priorities(nc, prefix)
                return view if not view.in_training else None

            view = await eventually(finished, what="training finished")
            assert view.terms["4x4k3"]["staleness"] < 0.01  # just trained: fresh


async def _updated(nc: Client, prefix: str, after: float) -> Priorities | None:
    view = await priorities(nc, prefix)
    return view if view.updated_at > after else None


async def test_new_jobs_carry_the_champion_as_model_npz(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    await start_service(JobManagerService, **JM)
    await start_service(SelfplaySchedulerService, games=["3x3k3"], **FAST)
    async with fake_nodes(nc, prefix, n1=1) as free:
        assert all(j.spec.inputs == [] for j in await exactly(nc, prefix, 2))
        history, ttl = BUCKET_SPECS["models"]
        models = await ensure_bucket(
            nc.jetstream(),
            bucket_config(Subjects(prefix).bucket("models"), history=history, ttl=ttl),
        )
        ref = DataRef(name="models/abc.npz", sha256=SHA, size=1234)
        champion = Champion(
            game="3x3k3", model_id="m7", ref=ref, generation=7, elo=800.0, since=time.time()
        )
        await models.put("champion.3x3k3", encode(champion))
        await eventually(
            lambda: _elo_known(nc, prefix), what="the champion's Elo in the priorities"
        )
        free["n1"] = 3
        jobs = await exactly(nc, prefix, 4)
    fresh = [j for j in jobs if j.spec.inputs]
    assert len(fresh) == 2
    for job in fresh:
        assert job.spec.inputs == [DataRef(name="model.npz", sha256=SHA, size=1234)]
        assert job.spec.labels["model_id"] == "m7"


async def _elo_known(nc: Client, prefix: str) -> bool:
    view = await priorities(nc, prefix)
    return view.terms["3x3k3"]["elo_gap"] == pytest.approx((1000 - 800) / 500)


async def test_degraded_while_the_job_manager_is_away_then_it_catches_up(
    start_service: ServiceFactory, nc: Client, nats_url: str, prefix: str
) -> None:
    svc = await start_service(SelfplaySchedulerService, breaker_failures=2, **FAST)
    async with fake_nodes(nc, prefix, n1=2):
        await eventually(
            lambda: svc.health_check().status is ServiceStatus.DEGRADED, what="degraded"
        )
        health = svc.health_check()
        assert health.message == "job manager does not answer"
        assert health.details["target"] == 3 and health.details["queued"] is None
        assert "consumer" in health.details and "priorities" in health.details
        # Started here, it must also stop here: a service outlives no task group it began in.
        async with JobManagerService(
            service_config(JobManagerService, nats_url, prefix, **JM)
        ).running():
            await exactly(nc, prefix, 3)
            await eventually(
                lambda: svc.health_check().status is ServiceStatus.RUNNING, what="running again"
            )
