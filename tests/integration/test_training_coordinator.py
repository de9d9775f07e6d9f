"""The training coordinator on a real nats-server, with the real job manager, node
selector and node agent: jobs run as a small script (written here) that plays the
workload, so every byte, event and record goes through the real protocol.

The script's behaviour is steered through files in a control directory: the bytes a
training writes as its model, the tally an evaluation reports, and a hold that keeps
a job running until the test lets it go.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio
import msgspec
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from services.job_manager.service import JobManagerService
from services.node_agent.service import NodeAgentService
from services.node_selector.service import NodeSelectorService
from services.training_coordinator.policy import promoted_elo, train_inputs, train_key
from services.training_coordinator.records import CoordinatorState, EloReply, ModelsReply
from services.training_coordinator.service import TrainingCoordinatorService
from shared.blobs import BlobStore, ensure_store
from shared.codec import decode, encode
from shared.jobs import DataRef, JobRecord, JobRef, JobSpec, Requirements
from shared.kv import bucket_config, ensure_bucket, read
from shared.provision import BUCKET_SPECS
from shared.subjects import Subjects
from shared.testing.fixtures import ServiceFactory, service_config
from shared.testing.helpers import eventually, stream_events
from shared.training import (
    Champion,
    GameRef,
    Manifest,
    ManifestEntry,
    ModelRecord,
    PrefetchRequest,
    TrainingData,
    TrainingDataRequest,
)

pytestmark = pytest.mark.anyio

T = TypeVar("T")
GAME = "3x3k3"
WAIT = 30.0

#: Plays the workload: ``train`` writes model.npz, ``evaluate`` reports a tally.
WORKLOAD = """
import json, os, pathlib, sys, time
kind, control = sys.argv[1], pathlib.Path(sys.argv[2])
inputs = pathlib.Path(os.environ["RINGMASTER_INPUTS_DIR"])
out = pathlib.Path(os.environ["RINGMASTER_OUTPUTS_DIR"])
args = json.loads(os.environ["RINGMASTER_JOB_ARGS"])
names = sorted(p.name for p in inputs.iterdir())
with open(control / "ran", "a") as log:
    log.write(kind + "\\n")
if (control / f"hold-{kind}").exists():
    while not (control / f"go-{kind}").exists():
        time.sleep(0.05)
if kind == "train":
    model = control / "model"
    data = model.read_bytes() if model.exists() else os.environ["RINGMASTER_JOB_ID"].encode()
    (out / "model.npz").write_bytes(data)
    result = {"game": args["game"], "samples": 9, "losses": [0.9, 0.5], "inputs": names}
else:
    tally = json.loads((control / "outcome").read_text())
    result = {"game": args["game"], "games": args["games"], "inputs": names, **tally}
(out / "result.json").write_text(json.dumps(result))
"""

FAST_JM = {"reaper_interval": 0.1, "retry_base_s": 0.05, "retry_max_s": 0.2}
COORDINATOR = {
    "games": [GAME],
    "min_new_games": {GAME: 100},
    "games_per_node": 10,
    "cooldown_s": 0.0,
    "interval_s": 0.2,
    "eval_batch_games": 40,
    "max_eval_games": 80,
    "job_max_attempts": 2,
    "request_timeout_s": 1.0,
}


class Cluster:
    """The services a coordinator needs, a control directory and helpers to look."""

    def __init__(self, nc: Client, prefix: str, control: Path) -> None:
        self.nc, self.prefix, self.control = nc, prefix, control
        self.subjects = Subjects(prefix)
        self.js = nc.jetstream()

    async def start(self, start_service: ServiceFactory, tmp_path: Path) -> None:
        await start_service(JobManagerService, **FAST_JM)
        await start_service(NodeSelectorService)
        script = tmp_path / "workload.py"
        script.write_text(WORKLOAD)
        self.agent = await start_service(
            NodeAgentService,
            node_id=f"n-{uuid.uuid4().hex[:6]}",
            capabilities=["train", "evaluate"],
            work_dir=str(tmp_path / "work"),
            slots=2,
            min_free_disk_mb=0,
            min_memory_mb=0,
            fetch_timeout_s=0.3,
            progress_interval_s=0.2,
            commands={
                kind: [sys.executable, str(script), kind, str(self.control)]
                for kind in ("train", "evaluate")
            },
        )
        self.blobs = BlobStore(await ensure_store(self.js, self.subjects.data_store))
        self.models = await self.bucket("models")

    async def bucket(self, name: str) -> KeyValue:
        history, ttl = BUCKET_SPECS[name]
        config = bucket_config(self.subjects.bucket(name), history=history, ttl=ttl)
        return await ensure_bucket(self.js, config)

    async def games(self, total: int = 500) -> DataRef:
        """A games blob and a manifest that counts ``total`` games."""
        ref = await self.blobs.put_bytes("games.npz", b"selfplay games " * 64)
        entry = ManifestEntry(ref=ref, games=total, job_id="sp-1", created_at=time.time())
        manifest = Manifest(game=GAME, games_total=total, entries=[entry])
        await (await self.bucket("manifests")).put(GAME, encode(manifest))
        return ref

    def outcome(self, wins: int, losses: int, draws: int) -> None:
        (self.control / "outcome").write_text(
            json.dumps(dict(wins=wins, losses=losses, draws=draws))
        )

    async def events(self, kind: str) -> list[dict[str, Any]]:
        return [
            e.data
            for e in await stream_events(self.nc, self.subjects.events_stream)
            if e.type == kind
        ]

    async def one(self, kind: str) -> dict[str, Any]:
        (event,) = await eventually(lambda: self.events(kind), timeout=WAIT, what=kind)
        return event

    async def api(self, service: str, method: str, payload: Any, tp: type[T]) -> T:
        msg = await self.nc.request(self.subjects.api(service, method), encode(payload), timeout=5)
        assert "Nats-Service-Error-Code" not in (msg.headers or {}), msg.data
        return decode(tp, msg.data)

    async def jobs(self, kind: str) -> list[JobRecord]:
        """Every job of ``kind`` ever submitted (one JOB_SUBMITTED each), oldest first."""
        submitted = [e["job_id"] for e in await self.events("JOB_SUBMITTED") if e["type"] == kind]
        return [
            await self.api("job_manager", "get", JobRef(job_id=j), JobRecord) for j in submitted
        ]

    async def champion(self) -> tuple[Champion, int] | None:
        return await read(self.models, f"champion.{GAME}", Champion)

    async def state(self) -> CoordinatorState:
        found = await read(self.models, f"state.{GAME}", CoordinatorState)
        assert found is not None
        return found[0]


async def started_cluster(
    start_service: ServiceFactory, nc: Client, prefix: str, tmp_path: Path
) -> Cluster:
    """A Cluster with its control directory under ``tmp_path``, started."""
    control = tmp_path / "control"
    control.mkdir()
    c = Cluster(nc, prefix, control)
    await c.start(start_service, tmp_path)
    return c


@pytest.fixture
async def cluster(
    start_service: ServiceFactory, nc: Client, prefix: str, tmp_path: Path
) -> Cluster:
    return await started_cluster(start_service, nc, prefix, tmp_path)


async def test_full_cycle_promotes_the_candidate_by_one_champion_switch(
    cluster: Cluster, start_service: ServiceFactory
) -> None:
    games = await cluster.games(500)
    model = b"a better model"
    (cluster.control / "model").write_bytes(model)
    cluster.outcome(38, 1, 1)
    planner = PlannerStandIn(cluster, games)
    async with planner.serving():
        svc = await start_service(TrainingCoordinatorService, **COORDINATOR)
        promoted = await cluster.one("MODEL_PROMOTED")
    asked, prefetched = planner.asked, planner.prefetched
    model_id = hashlib.sha256(model).hexdigest()[:16]
    elo = promoted_elo(0.0, 38.5 / 40, 400.0)
    assert promoted == {
        "game": GAME,
        "model_id": model_id,
        "generation": 1,
        "elo": pytest.approx(elo),
        "previous": "",
    }
    node = cluster.agent.node_id
    (started,) = await cluster.events("TRAINING_STARTED")
    assert (started["games"], started["parent"]) == (500, "")
    (train,) = await cluster.jobs("train")
    # The selector found no GPU node, then the agent's node: the job is pinned there.
    assert (train.job_id, train.spec.requirements.node_id, train.node_id) == (
        started["job_id"],
        node,
        node,
    )
    assert train.result is not None and train.result.result["inputs"] == ["data-0.npz"]
    assert asked == [TrainingDataRequest(game=GAME)]
    assert [(p.node_id, p.refs) for p in prefetched] == [(node, [games])]
    (trained,) = await cluster.events("TRAINING_COMPLETED")
    assert (trained["model_id"], trained["losses"]) == (model_id, [0.9, 0.5])
    (evaluate,) = await cluster.jobs("evaluate")
    assert evaluate.spec.labels["candidate"] == model_id and evaluate.spec.args["games"] == 40
    # No champion yet: the candidate plays the random player.
    assert evaluate.result is not None and evaluate.result.result["inputs"] == ["candidate.npz"]
    (completed,) = await cluster.events("EVALUATION_COMPLETED")
    assert (completed["decision"], completed["wins"], completed["champion"]) == ("accept", 38, "")
    assert "SPRT" in completed["reason"] and completed["llr"] > 2.944
    assert await cluster.events("MODEL_REJECTED") == []

    found = await cluster.champion()
    assert found is not None
    champion, _ = found
    assert (champion.model_id, champion.generation, champion.ref.name) == (model_id, 1, "model.npz")
    assert champion.ref.sha256 == hashlib.sha256(model).hexdigest()
    models = await cluster.api("training_coordinator", "models", GameRef(), ModelsReply)
    (entry,) = models.games
    assert entry.champion == champion and [m.status for m in entry.models] == ["champion"]
    assert entry.models[0].evaluation["games"] == 40
    elo_reply = await cluster.api("training_coordinator", "elo", GameRef(game=GAME), EloReply)
    (table,) = elo_reply.tables
    assert [(e.model_id, e.generation, e.elo) for e in table.entries] == [
        (model_id, 1, pytest.approx(elo))
    ]
    msg = await cluster.nc.request(
        cluster.subjects.api("training_coordinator", "elo"), encode(GameRef(game="9x9k5"))
    )
    assert (msg.headers or {}).get("Nats-Service-Error-Code") == "404"
    state = await eventually(lambda: _idle(cluster), what="idle")
    assert (state.generation, state.games_at_training, state.promotions) == (1, 500, 1)

    def health() -> dict[str, Any] | None:
        details: dict[str, Any] = svc.health_check().details
        return details if details["games"][GAME]["champion"] == model_id else None

    details = await eventually(health, what="the champion in health details")
    assert details["games"][GAME]["phase"] == "idle"
    assert details["consumer"]["handled"] >= 2 and details["alive_nodes"] == 1


class PlannerStandIn:
    """The sync planner's two endpoints the coordinator calls; its window is ``games``."""

    def __init__(self, cluster: Cluster, games: DataRef) -> None:
        self.cluster, self.games = cluster, games
        self.asked: list[TrainingDataRequest] = []
        self.prefetched: list[PrefetchRequest] = []

    async def training_data(self, msg: Msg) -> None:
        self.asked.append(decode(TrainingDataRequest, msg.data))
        reply = TrainingData(game=GAME, refs=[self.games], games=500, games_total=500)
        await msg.respond(encode(reply))

    async def prefetch(self, msg: Msg) -> None:
        self.prefetched.append(decode(PrefetchRequest, msg.data))
        await msg.respond(b"{}")

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        nc, subjects = self.cluster.nc, self.cluster.subjects
        subs = [
            await nc.subscribe(subjects.api("sync_planner", m), cb=cb)
            for m, cb in (("training_data", self.training_data), ("prefetch", self.prefetch))
        ]
        try:
            yield
        finally:
            for sub in subs:
                await sub.unsubscribe()


async def _idle(cluster: Cluster) -> CoordinatorState | None:
    state = await cluster.state()
    return state if state.phase == "idle" and state.generation else None


async def seed_champion(cluster: Cluster) -> Champion:
    ref = await cluster.blobs.put_bytes("model.npz", b"the reigning champion")
    model_id = ref.sha256[:16]
    now = time.time()
    champion = Champion(game=GAME, model_id=model_id, ref=ref, generation=3, elo=120.0, since=now)
    record = ModelRecord(
        game=GAME,
        model_id=model_id,
        ref=ref,
        generation=3,
        status="champion",
        elo=120.0,
        created_at=now,
    )
    await cluster.models.put(f"champion.{GAME}", encode(champion))
    await cluster.models.put(f"model.{GAME}.{model_id}", encode(record))
    return champion


async def test_a_losing_candidate_is_rejected_after_the_cap_and_the_champion_stays(
    cluster: Cluster, start_service: ServiceFactory
) -> None:
    await cluster.games(500)
    champion = await seed_champion(cluster)
    before = await cluster.champion()
    # 19-21 per batch: the SPRT stays undecided, the cap (80 games) falls back on the score.
    cluster.outcome(19, 21, 0)
    svc = await start_service(TrainingCoordinatorService, **COORDINATOR)
    rejected = await cluster.one("MODEL_REJECTED")
    assert "cap of 80 games reached" in rejected["reason"] and "0.475 < 0.520" in rejected["reason"]
    (completed,) = await cluster.events("EVALUATION_COMPLETED")
    assert (completed["decision"], completed["wins"], completed["losses"]) == ("reject", 38, 42)
    assert completed["champion"] == champion.model_id
    assert len(await cluster.events("EVALUATION_STARTED")) == 1
    assert await cluster.events("MODEL_PROMOTED") == []
    assert await cluster.champion() == before  # same record, same revision
    (train,) = await cluster.jobs("train")
    assert train.result is not None
    assert train.result.result["inputs"] == ["data-0.npz", "model.npz"]
    assert champion.ref.sha256 in [i.sha256 for i in train.spec.inputs]
    batches = await cluster.jobs("evaluate")
    assert sorted(b.spec.labels["batch"] for b in batches) == ["1", "2"]
    for batch in batches:
        assert batch.result is not None
        assert batch.result.result["inputs"] == ["candidate.npz", "champion.npz"]
    models = await cluster.api("training_coordinator", "models", GameRef(game=GAME), ModelsReply)
    statuses = {m.model_id: m.status for m in models.games[0].models}
    assert statuses == {champion.model_id: "champion", rejected["model_id"]: "rejected"}
    elo = await cluster.api("training_coordinator", "elo", GameRef(), EloReply)
    assert elo.tables[0].entries == []
    # No sync planner runs: the window came from the manifest.
    assert svc.health_check().details["counts"]["window_from_manifest"] >= 1


async def test_a_corrupted_candidate_is_never_promoted(
    cluster: Cluster, start_service: ServiceFactory
) -> None:
    await cluster.games(500)
    model = b"candidate bytes that will not verify"
    sha = hashlib.sha256(model).hexdigest()
    # Other bytes already sit under the candidate's hash (the raw API checks nothing):
    # the agent's upload finds the name taken and keeps them, so every read fails.
    await (await ensure_store(cluster.js, cluster.subjects.data_store)).put(sha, b"rotten bits")
    (cluster.control / "model").write_bytes(model)
    cluster.outcome(40, 0, 0)  # would be a certain promotion, were the evaluation to run
    await start_service(TrainingCoordinatorService, **COORDINATOR)
    rejected = await cluster.one("MODEL_REJECTED")
    assert rejected["model_id"] == sha[:16]
    assert "evaluation failed" in rejected["reason"] and "does not match" in rejected["reason"]
    (completed,) = await cluster.events("EVALUATION_COMPLETED")
    assert (completed["decision"], completed["wins"], completed["llr"]) == ("reject", 0, 0.0)
    failed = await cluster.events("JOB_FAILED")
    assert [f["permanent"] for f in failed] == [False, True]
    assert await cluster.events("MODEL_PROMOTED") == []
    assert await cluster.champion() is None
    assert (cluster.control / "ran").read_text().split() == ["train"]  # never evaluated
    record = await read(cluster.models, f"model.{GAME}.{sha[:16]}", ModelRecord)
    assert record is not None and record[0].status == "rejected"


async def test_killed_mid_evaluation_decides_exactly_once_after_a_restart(
    cluster: Cluster, nats_url: str, prefix: str
) -> None:
    await cluster.games(500)
    (cluster.control / "hold-evaluate").touch()
    cluster.outcome(36, 2, 2)
    cfg = service_config(TrainingCoordinatorService, nats_url, prefix, **COORDINATOR)
    async with TrainingCoordinatorService(cfg).running():
        started = await cluster.one("EVALUATION_STARTED")
    state = await cluster.state()
    assert (state.phase, state.eval_job, state.counted) == ("evaluating", started["job_id"], [])
    # The coordinator is gone; the evaluation finishes without it.
    (cluster.control / "go-evaluate").touch()

    async def evaluate_done() -> bool:
        return any(e["type"] == "evaluate" for e in await cluster.events("JOB_COMPLETED"))

    await eventually(evaluate_done, timeout=WAIT, what="evaluate job completed")
    assert await cluster.events("EVALUATION_COMPLETED") == []
    second = msgspec.structs.replace(cfg, instance=cfg.instance + "-2")
    async with TrainingCoordinatorService(second).running() as svc:
        completed = await cluster.one("EVALUATION_COMPLETED")
        await eventually(lambda: _idle(cluster), what="idle after the decision")
        assert svc.consumer is not None and svc.consumer.stats()["handled"] >= 1
        await anyio.sleep(0.5)  # room for a wrong second decision to show up
    assert (completed["candidate"], completed["decision"]) == (started["candidate"], "accept")
    assert len(await cluster.events("EVALUATION_COMPLETED")) == 1
    (promoted,) = await cluster.events("MODEL_PROMOTED")
    assert promoted["model_id"] == started["candidate"]
    assert await cluster.events("MODEL_REJECTED") == []
    assert len(await cluster.jobs("evaluate")) == 1 and len(await cluster.jobs("train")) == 1
    found = await cluster.champion()
    assert found is not None and found[0].model_id == started["candidate"]


async def test_a_crash_between_the_trigger_and_the_submit_gives_one_training(
    cluster: Cluster, start_service: ServiceFactory
) -> None:
    games = await cluster.games(500)
    (cluster.control / "hold-train").touch()
    cluster.outcome(40, 0, 0)
    # What a coordinator leaves when it dies after its trigger CAS and its submit, but
    # before it recorded the job: a training state without a job id, and the job.
    now = time.time()
    state = CoordinatorState(
        game=GAME,
        run_id="r1",
        phase="training",
        phase_since=now,
        generation=1,
        training_games=500,
        last_training_at=now,
    )
    await cluster.models.put(f"state.{GAME}", encode(state))
    spec = JobSpec(
        type="train",
        args={"game": GAME, "seed": 1},
        inputs=train_inputs([games], None, "model.npz"),
        requirements=Requirements(capability="train", pooled=True),
        idempotency_key=train_key(GAME, "r1", 1),
        labels={"kind": "train", "game": GAME, "generation": "1", "run": "r1"},
    )
    orphan = await cluster.api("job_manager", "submit", spec, JobRecord)
    await start_service(TrainingCoordinatorService, **COORDINATOR)
    started = await cluster.one("TRAINING_STARTED")
    assert started["job_id"] == orphan.job_id  # the same key: the job already there
    (cluster.control / "go-train").touch()
    promoted = await cluster.one("MODEL_PROMOTED")
    assert promoted["generation"] == 1
    assert [j.job_id for j in await cluster.jobs("train")] == [orphan.job_id]
    assert len(await cluster.events("TRAINING_COMPLETED")) == 1
    assert (await eventually(lambda: _idle(cluster), what="idle")).run_id == "r1"


async def test_a_candidate_whose_blob_rots_during_its_evaluation_is_not_promoted(
    cluster: Cluster, start_service: ServiceFactory
) -> None:
    await cluster.games(500)
    (cluster.control / "hold-evaluate").touch()
    cluster.outcome(40, 0, 0)  # the evaluation itself says: promote
    svc = await start_service(TrainingCoordinatorService, **COORDINATOR)
    started = await cluster.one("EVALUATION_STARTED")

    def evaluating() -> bool:
        ran = cluster.control / "ran"
        return ran.exists() and "evaluate" in ran.read_text().split()

    await eventually(evaluating, timeout=WAIT, what="the evaluation running")
    # The agent holds its verified copy; the stored blob rots before the decision.
    (candidate,) = (await cluster.jobs("evaluate"))[0].spec.inputs
    store = await ensure_store(cluster.js, cluster.subjects.data_store)
    await store.put(candidate.sha256, b"rotten bits")
    (cluster.control / "go-evaluate").touch()
    rejected = await cluster.one("MODEL_REJECTED")
    assert rejected["model_id"] == started["candidate"]
    assert "candidate blob unusable" in rejected["reason"]
    (completed,) = await cluster.events("EVALUATION_COMPLETED")
    assert (completed["decision"], completed["wins"]) == ("reject", 40)
    assert await cluster.events("MODEL_PROMOTED") == []
    assert await cluster.champion() is None
    assert svc.health_check().details["counts"]["accepts_overruled"] == 1


async def test_a_training_whose_completion_event_was_lost_is_reconciled_from_its_record(
    cluster: Cluster, start_service: ServiceFactory
) -> None:
    games = await cluster.games(500)
    cluster.outcome(40, 0, 0)
    now = time.time()
    state = CoordinatorState(
        game=GAME,
        run_id="r1",
        phase="training",
        phase_since=now,
        generation=1,
        training_games=500,
        last_training_at=now,
    )
    await cluster.models.put(f"state.{GAME}", encode(state))
    spec = JobSpec(
        type="train",
        args={"game": GAME, "seed": 1},
        inputs=train_inputs([games], None, "model.npz"),
        requirements=Requirements(capability="train", pooled=True),
        idempotency_key=train_key(GAME, "r1", 1),
        labels={"kind": "train", "game": GAME, "generation": "1", "run": "r1"},
    )
    job = await cluster.api("job_manager", "submit", spec, JobRecord)

    async def done() -> bool:
        rec = await cluster.api("job_manager", "get", JobRef(job_id=job.job_id), JobRecord)
        return rec.state == "COMPLETED"

    await eventually(done, timeout=WAIT, what="the training job COMPLETED")
    # The record is the truth; the event that announced it is gone (never published,
    # or lost): only reconciling from the record can move the cycle on.
    completed = cluster.subjects.event("job_manager", "JOB_COMPLETED")
    await cluster.js.purge_stream(cluster.subjects.events_stream, subject=completed)
    assert await cluster.events("JOB_COMPLETED") == []
    coordinator = await start_service(
        TrainingCoordinatorService, **COORDINATOR, reconcile_interval_s=0.5
    )
    promoted = await cluster.one("MODEL_PROMOTED")
    assert promoted["generation"] == 1
    assert len(await cluster.events("TRAINING_COMPLETED")) == 1
    counts = coordinator.health_check().details["counts"]
    assert counts["reconciled_train"] == 1


async def test_a_promotion_whose_event_was_not_acked_stays_decided_until_announced(
    cluster: Cluster, start_service: ServiceFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Failed before the fix: the first failed try of MODEL_PROMOTED was taken as done,
    # the game went idle, and nothing ever announced the promotion.
    await cluster.games(500)
    cluster.outcome(38, 1, 1)
    svc = await start_service(TrainingCoordinatorService, **COORDINATOR)
    publish = svc.outbox.publish
    refusing = True

    async def stream_away(
        subject: str, payload: bytes, msg_id: str, headers: dict[str, str] | None = None
    ) -> bool:
        if refusing and subject.endswith("model.promoted"):
            return False  # as if JetStream did not answer this time
        return await publish(subject, payload, msg_id, headers)

    monkeypatch.setattr(svc.outbox, "publish", stream_away)
    await cluster.one("EVALUATION_COMPLETED")

    async def kept() -> CoordinatorState | None:
        state = await cluster.state()
        return state if svc.health_check().details["counts"].get("announcements_unacked") else None

    state = await eventually(kept, timeout=WAIT, what="an unacknowledged announcement")
    assert (state.phase, state.decision) == ("evaluating", "accept")
    found = await cluster.champion()
    assert found is not None and found[0].model_id == state.candidate  # the switch is made
    refusing = False
    promoted = await cluster.one("MODEL_PROMOTED")
    assert promoted["model_id"] == state.candidate
    await eventually(lambda: _idle(cluster), what="idle once announced")
    await anyio.sleep(0.5)  # room for a repeat to show up
    assert len(await cluster.events("EVALUATION_COMPLETED")) == 1  # repeats de-duplicated
    assert len(await cluster.events("MODEL_PROMOTED")) == 1
    assert (await cluster.state()).promotions == 1


async def test_a_training_that_reproduces_a_rejected_model_is_evaluated_again(
    cluster: Cluster, start_service: ServiceFactory
) -> None:
    # Found by the long chaos run (seed 13013), failed before the fix: the same bytes
    # gave the same model id, so the same evaluation key named the old, finished job,
    # and the coordinator waited for ever for its end.
    await cluster.games(500)
    await seed_champion(cluster)
    (cluster.control / "model").write_bytes(b"always the same model")
    cluster.outcome(0, 40, 0)
    await start_service(TrainingCoordinatorService, **COORDINATOR)
    first = await cluster.one("MODEL_REJECTED")
    await cluster.games(700)  # enough new games for the next training
    await eventually(
        lambda: _decided_twice(cluster), timeout=WAIT, what="a second evaluation decided"
    )
    second = (await cluster.events("MODEL_REJECTED"))[1]
    assert second["model_id"] == first["model_id"]  # the very same candidate again
    jobs = await cluster.jobs("evaluate")
    assert len({j.job_id for j in jobs}) == len(jobs) == 2


async def _decided_twice(cluster: Cluster) -> bool:
    return len(await cluster.events("EVALUATION_COMPLETED")) >= 2
