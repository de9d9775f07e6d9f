"""The sync planner on a real nats-server, driven by real job events and real blobs.

Tests publish JOB_COMPLETED and JOB_FAILED events exactly as the job manager does
(``build_event`` into JetStream on ``P.event.job_manager.job.*``), put real blobs in
the object store, and read what the sync planner did from its API, the manifests
bucket, the object store and the events stream.
"""

from __future__ import annotations

import json
import time
from itertools import count
from typing import Any, TypeVar

import msgspec
import pytest
from nats.aio.client import Client

from services.job_manager.service import JobManagerService
from services.sync_planner.service import SyncPlannerService
from shared.blobs import BlobStore, ensure_store
from shared.codec import encode
from shared.events import EventData, JobCompleted, JobFailed, build_event
from shared.jobs import DataRef, JobRecord, JobSpec, JobState
from shared.kv import bucket_config, ensure_bucket
from shared.provision import BUCKET_SPECS
from shared.subjects import Subjects
from shared.testing.fixtures import ServiceFactory, service_config
from shared.testing.helpers import eventually, stream_events
from shared.training import (
    Champion,
    GameRef,
    Manifest,
    ModelRecord,
    PrefetchRequest,
    TrainingData,
    TrainingDataRequest,
)

pytestmark = pytest.mark.anyio

T = TypeVar("T")
GAME = "3x3k3"
QUIET = {"retention_interval_s": 3600.0}  # retention runs only when a test says so
_seq = count(1)


async def call(nc: Client, prefix: str, method: str, payload: Any) -> tuple[int, Any]:
    """Request ``P.api.sync_planner.<method>``: (code, decoded body); 200 when no error."""
    msg = await nc.request(Subjects(prefix).api("sync_planner", method), encode(payload), timeout=5)
    code = int((msg.headers or {}).get("Nats-Service-Error-Code", 200))
    return code, json.loads(msg.data)


async def ok(nc: Client, prefix: str, method: str, payload: Any, tp: type[T]) -> T:
    code, body = await call(nc, prefix, method, payload)
    assert code == 200, body
    return msgspec.convert(body, tp)


async def publish(nc: Client, prefix: str, data: EventData) -> None:
    """Publish a job manager event into P_EVENTS, as the job manager does."""
    event = build_event(prefix, "job_manager", "jm-test", next(_seq), data)
    subject = Subjects(prefix).event("job_manager", data.TYPE)
    await nc.jetstream().publish(subject, encode(event))


async def events(nc: Client, prefix: str, kind: str) -> list[dict[str, Any]]:
    return [e.data for e in await stream_events(nc, f"{prefix}_EVENTS") if e.type == kind]


async def blob_store(nc: Client, prefix: str) -> BlobStore:
    return BlobStore(await ensure_store(nc.jetstream(), Subjects(prefix).data_store))


async def bucket(nc: Client, prefix: str, name: str) -> Any:
    history, ttl = BUCKET_SPECS[name]
    config = bucket_config(Subjects(prefix).bucket(name), history=history, ttl=ttl)
    return await ensure_bucket(nc.jetstream(), config)


async def selfplay_done(
    nc: Client, prefix: str, blobs: BlobStore, job_id: str, games: int = 10
) -> DataRef:
    """A selfplay job's games in the object store and its JOB_COMPLETED on the bus."""
    ref = await blobs.put_bytes("games.npz", f"games of {job_id}".encode())
    done = JobCompleted(
        job_id=job_id,
        type="selfplay",
        attempt=1,
        node_id="n1",
        outputs=[ref],
        result={"game": GAME, "games": games, "x_wins": 1, "o_wins": 1, "draws": 8},
        labels={"kind": "selfplay", "game": GAME, "model_id": "m0"},
    )
    await publish(nc, prefix, done)
    return ref


async def manifest_of(nc: Client, prefix: str, entries: int) -> Manifest:
    """The game's manifest, once it lists ``entries`` entries."""

    async def listed() -> Manifest | None:
        m = await ok(nc, prefix, "manifest", GameRef(game=GAME), Manifest)
        return m if len(m.entries) == entries else None

    return await eventually(listed, what=f"{entries} manifest entries")


async def test_selfplay_games_are_recorded_once_and_announced(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    svc = await start_service(SyncPlannerService, **QUIET)
    blobs = await blob_store(nc, prefix)
    refs = [await selfplay_done(nc, prefix, blobs, f"sp-{i}", games=10 + i) for i in range(3)]
    m = await manifest_of(nc, prefix, 3)
    assert [(e.ref, e.games, e.job_id, e.model_id) for e in m.entries] == [
        (ref, 10 + i, f"sp-{i}", "m0") for i, ref in enumerate(refs)
    ]
    assert m.games_total == 33
    announced = await eventually(lambda: _at_least(events(nc, prefix, "DATA_AVAILABLE"), 3))
    assert [(a["sha256"], a["games"], a["games_total"]) for a in announced] == [
        (refs[0].sha256, 10, 10),
        (refs[1].sha256, 11, 21),
        (refs[2].sha256, 12, 33),
    ]
    # The same completion again (a redelivery, or the job manager re-publishing it).
    await selfplay_done(nc, prefix, blobs, "sp-1", games=11)
    await eventually(lambda: svc.consumer.stats().get("handled", 0) >= 4, what="4th event")
    again = await ok(nc, prefix, "manifest", GameRef(game=GAME), Manifest)
    assert again == m
    assert len(await events(nc, prefix, "DATA_AVAILABLE")) == 3
    assert svc.parts[1].counts["duplicates"] == 1
    # Every game at once: a list.
    code, every = await call(nc, prefix, "manifest", GameRef())
    assert code == 200 and [x["game"] for x in every] == [GAME]
    code, _ = await call(nc, prefix, "manifest", GameRef(game="no.such>"))
    assert code == 400
    details = svc.health_check().details
    assert details["manifests"][GAME] == {"entries": 3, "games": 33, "games_total": 33}


async def _at_least(found: Any, n: int) -> Any:
    items = await found
    return items if len(items) >= n else None


async def test_unusable_events_are_counted_and_skipped(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    svc = await start_service(SyncPlannerService, **QUIET)
    no_games = JobCompleted(
        job_id="bad-1", type="selfplay", attempt=1, node_id="n1", labels={"game": GAME}
    )
    await publish(nc, prefix, no_games)
    blobs = await blob_store(nc, prefix)
    await selfplay_done(nc, prefix, blobs, "good-1")
    await manifest_of(nc, prefix, 1)
    assert svc.parts[1].counts["bad_selfplay"] == 1
    assert svc.consumer.stats().get("handler_errors", 0) == 0


async def test_training_data_is_the_newest_window(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    await start_service(SyncPlannerService, **QUIET)
    blobs = await blob_store(nc, prefix)
    refs = [await selfplay_done(nc, prefix, blobs, f"sp-{i}", games=10) for i in range(5)]
    await manifest_of(nc, prefix, 5)
    data = await ok(
        nc, prefix, "training_data", TrainingDataRequest(game=GAME, max_games=35), TrainingData
    )
    assert data == TrainingData(game=GAME, refs=refs[2:], games=30, games_total=50)
    for ref in data.refs:  # what it hands out is really there
        assert await blobs.get_bytes(ref)
    empty = await ok(nc, prefix, "training_data", TrainingDataRequest(game="4x4k3"), TrainingData)
    assert (empty.refs, empty.games, empty.games_total) == ([], 0, 0)
    code, _ = await call(nc, prefix, "training_data", {"game": GAME, "max_games": 0})
    assert code == 400


async def test_prefetch_submits_a_pinned_job_and_reports_its_end(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    await start_service(JobManagerService, node_lost_after_s=600.0, dispatch_timeout_s=600.0)
    svc = await start_service(SyncPlannerService, **QUIET)
    blobs = await blob_store(nc, prefix)
    refs = [await blobs.put_bytes(f"data-{i}.npz", b"x" * (i + 1)) for i in range(2)]
    request = PrefetchRequest(game=GAME, node_id="gpu-1", refs=refs)
    record = await ok(nc, prefix, "prefetch", request, JobRecord)
    spec = record.spec
    assert (spec.type, spec.inputs, spec.labels) == (
        "prefetch",
        refs,
        {"kind": "prefetch", "game": GAME},
    )
    assert (spec.requirements.capability, spec.requirements.node_id) == ("prefetch", "gpu-1")
    assert record.pool == "node.gpu-1"  # the real job manager pinned it to the node
    (started,) = await eventually(lambda: events(nc, prefix, "DATA_SYNC_STARTED"))
    assert (started["game"], started["node_id"], started["blobs"], started["bytes"]) == (
        GAME,
        "gpu-1",
        2,
        3,
    )
    done = JobCompleted(
        job_id=record.job_id,
        type="prefetch",
        attempt=1,
        node_id="gpu-1",
        labels=dict(spec.labels),
    )
    await publish(nc, prefix, done)
    await publish(nc, prefix, done)  # redelivered: still one DATA_SYNC_COMPLETED
    (completed,) = await eventually(lambda: events(nc, prefix, "DATA_SYNC_COMPLETED"))
    assert (completed["game"], completed["node_id"], completed["blobs"]) == (GAME, "gpu-1", 2)
    await eventually(lambda: svc.consumer.stats().get("handled", 0) >= 2, what="both events")
    assert len(await events(nc, prefix, "DATA_SYNC_COMPLETED")) == 1

    second = await ok(nc, prefix, "prefetch", request, JobRecord)
    for permanent in (False, True):
        failed = JobFailed(
            job_id=second.job_id,
            type="prefetch",
            attempt=1,
            node_id="gpu-1",
            error="disk full",
            permanent=permanent,
        )
        await publish(nc, prefix, failed)
    (sync_failed,) = await eventually(lambda: events(nc, prefix, "DATA_SYNC_FAILED"))
    assert (sync_failed["game"], sync_failed["node_id"], sync_failed["error"]) == (
        GAME,
        "gpu-1",
        "disk full",
    )
    assert svc.health_check().details["prefetches"]["submitted"] == 2


async def test_prefetch_without_a_job_manager_is_unavailable(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    await start_service(SyncPlannerService, **QUIET, submit_timeout_s=0.5)
    ref = DataRef(name="d.npz", sha256="a" * 64, size=1)
    code, body = await call(
        nc, prefix, "prefetch", PrefetchRequest(game=GAME, node_id="n", refs=[ref])
    )
    assert code == 503, body
    code, body = await call(
        nc, prefix, "prefetch", PrefetchRequest(game=GAME, node_id="n", refs=[])
    )
    assert code == 400, body
    assert await events(nc, prefix, "DATA_SYNC_STARTED") == []


def job_record(job_id: str, state: JobState, inputs: list[DataRef]) -> JobRecord:
    spec = JobSpec(type="train", inputs=inputs, labels={"kind": "train", "game": GAME})
    now = time.time()
    return JobRecord(job_id=job_id, spec=spec, state=state, submitted_at=now, updated_at=now)


async def test_retention_never_deletes_referenced_data(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    svc = await start_service(SyncPlannerService, retention_interval_s=3600.0, retain_games=20)
    blobs = await blob_store(nc, prefix)
    jobs, models = await bucket(nc, prefix, "jobs"), await bucket(nc, prefix, "models")
    refs = [await selfplay_done(nc, prefix, blobs, f"sp-{i}") for i in range(6)]
    await manifest_of(nc, prefix, 6)
    # Old blobs in use: a PENDING training job needs sp-0's, a model record names
    # sp-1's and the champion sp-2's. A finished job's inputs (sp-3) protect nothing.
    await jobs.put("pending-1", encode(job_record("pending-1", JobState.PENDING, [refs[0]])))
    await jobs.put("done-1", encode(job_record("done-1", JobState.COMPLETED, [refs[3]])))
    await jobs.put("idem-" + "0" * 40, b"pending-1")
    model = ModelRecord(
        game=GAME, model_id="m1", ref=refs[1], generation=1, status="candidate", created_at=0
    )
    await models.put(f"model.{GAME}.m1", encode(model))
    champion = Champion(game=GAME, model_id="m2", ref=refs[2], generation=2, elo=0, since=0)
    await models.put(f"champion.{GAME}", encode(champion))
    await models.put("elo.table", b'["not a record", 1]')

    retention = svc.loops[0]
    assert await retention.run_once()
    m = await ok(nc, prefix, "manifest", GameRef(game=GAME), Manifest)
    # The window (the newest 20 games: sp-4, sp-5) and every referenced blob stay.
    assert [e.job_id for e in m.entries] == ["sp-0", "sp-1", "sp-2", "sp-4", "sp-5"]
    assert m.games_total == 60
    for i, ref in enumerate(refs):
        assert await blobs.exists(ref.sha256) == (i != 3), f"sp-{i}"
    (completed,) = await eventually(lambda: events(nc, prefix, "DATA_SYNC_COMPLETED"))
    assert (completed["game"], completed["blobs"], completed["deleted"]) == (GAME, 1, 1)
    assert completed["bytes"] == refs[3].size

    # The training job finished: its input is free; the model records still hold theirs.
    await jobs.put("pending-1", encode(job_record("pending-1", JobState.COMPLETED, [refs[0]])))
    assert await retention.run_once()
    m = await ok(nc, prefix, "manifest", GameRef(game=GAME), Manifest)
    assert [e.job_id for e in m.entries] == ["sp-1", "sp-2", "sp-4", "sp-5"]
    assert [await blobs.exists(r.sha256) for r in refs] == [False, True, True, False, True, True]
    assert svc.parts[3].totals["blobs_deleted"] == 2
    # Idle passes delete nothing more and announce nothing.
    assert await retention.run_once()
    assert len(await events(nc, prefix, "DATA_SYNC_COMPLETED")) == 2
    details = svc.health_check().details
    assert details["retention"]["blobs_deleted"] == 2
    assert details["references"]["undecodable_models"] >= 1


async def test_handed_out_training_data_survives_retention(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    svc = await start_service(SyncPlannerService, retention_interval_s=3600.0, retain_games=10)
    blobs = await blob_store(nc, prefix)
    refs = [await selfplay_done(nc, prefix, blobs, f"sp-{i}") for i in range(3)]
    await manifest_of(nc, prefix, 3)
    request = TrainingDataRequest(game=GAME, max_games=30)
    data = await ok(nc, prefix, "training_data", request, TrainingData)
    assert data.refs == refs
    # The training job is not submitted yet: only the handout protects the old blobs.
    assert await svc.loops[0].run_once()
    assert all([await blobs.exists(r.sha256) for r in refs])
    assert len((await manifest_of(nc, prefix, 3)).entries) == 3


async def test_restart_resumes_from_the_durable_consumer(
    nats_url: str, nc: Client, prefix: str
) -> None:
    blobs: BlobStore | None = None
    first = SyncPlannerService(service_config(SyncPlannerService, nats_url, prefix, **QUIET))
    async with first.running():
        blobs = await blob_store(nc, prefix)
        for i in range(2):
            await selfplay_done(nc, prefix, blobs, f"sp-{i}")
        await manifest_of(nc, prefix, 2)
    # While it is down: one new completion and a repeat of an old one.
    await selfplay_done(nc, prefix, blobs, "sp-2")
    await selfplay_done(nc, prefix, blobs, "sp-0")
    second = SyncPlannerService(service_config(SyncPlannerService, nats_url, prefix, **QUIET))
    async with second.running():
        m = await manifest_of(nc, prefix, 3)
        assert [e.job_id for e in m.entries] == ["sp-0", "sp-1", "sp-2"]
        assert m.games_total == 30
        consumer = second.consumer
        assert consumer is not None
        await eventually(lambda: consumer.stats().get("handled", 0) >= 2, what="the backlog")
        # Only what came while it was down was delivered again, not the whole stream.
        assert consumer.stats()["handled"] == 2
        assert second.parts[1].counts["duplicates"] == 1
    assert len(await events(nc, prefix, "DATA_AVAILABLE")) == 3


async def test_two_planners_at_once_record_every_completion_once(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    planners = [await start_service(SyncPlannerService, **QUIET) for _ in "ab"]
    blobs = await blob_store(nc, prefix)
    published = 0
    for i in range(12):
        # A third of the completions come twice (the job manager publishing one again).
        for _ in range(2 if i % 3 == 0 else 1):
            await selfplay_done(nc, prefix, blobs, f"sp-{i}", games=10 + i)
            published += 1

    def handled() -> bool:
        return sum(p.consumer.stats().get("handled", 0) for p in planners) >= published

    await eventually(handled, what="every event handled by one planner or the other")
    m = await ok(nc, prefix, "manifest", GameRef(game=GAME), Manifest)
    assert sorted(e.job_id for e in m.entries) == sorted(f"sp-{i}" for i in range(12))
    assert m.games_total == sum(10 + i for i in range(12))
    announced = await events(nc, prefix, "DATA_AVAILABLE")
    assert sorted(a["sha256"] for a in announced) == sorted(e.ref.sha256 for e in m.entries)
    assert sum(p.parts[1].counts["duplicates"] for p in planners) == published - 12
