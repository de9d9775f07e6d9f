"""Nodes and jobs for the status view, rebuilt from NodeInfo and the job manager's API.

The orchestrator keeps nothing here that the bus cannot give back: the latest NodeInfo
of each node (forgotten after a long silence) and the last answer of the job manager
to "what is running". A missing job manager only leaves the jobs table empty.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import msgspec
import nats.errors
from nats.aio.client import Client
from nats.js.client import JetStreamContext
from nats.js.errors import BucketNotFoundError

from shared.codec import decode, encode
from shared.contracts import Empty, JobRow, JobsView, ModelRow, NodeRow
from shared.jobs import JobCounts, JobList, JobQuery, JobRecord, JobState, NodeInfo
from shared.kv import read_all
from shared.liveness import DESIGN_RULE, LivenessRule
from shared.subjects import Subjects
from shared.training import Champion, Manifest

T = TypeVar("T")

ACTIVE = (JobState.RUNNING, JobState.DISPATCHED, JobState.PENDING)


class ClusterView:
    """Latest NodeInfo per node and the active jobs, for ClusterStatus."""

    def __init__(
        self,
        subjects: Subjects,
        *,
        forget_after_s: float = 600.0,
        rule: LivenessRule = DESIGN_RULE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._subjects = subjects
        self._forget_after_s = forget_after_s
        self._rule = rule
        self._clock = clock
        self._nodes: dict[str, tuple[NodeInfo, float]] = {}
        self._jobs = JobsView()
        self.job_queries = {"answered": 0, "unanswered": 0}
        self._models: list[ModelRow] = []
        self.model_reads = {"ok": 0, "failed": 0}

    def observe_node(self, info: NodeInfo) -> None:
        """Keep the node's latest NodeInfo."""
        self._nodes[info.node_id] = (info, self._clock())

    def nodes(self) -> list[NodeRow]:
        """One row per node: alive until it is LOST by the shared rule."""
        now = self._clock()
        rows = []
        for node_id, (info, seen) in sorted(self._nodes.items()):
            age = now - seen
            if age > self._forget_after_s:
                del self._nodes[node_id]
                continue
            rows.append(
                NodeRow(
                    node=node_id,
                    alive=self._rule.alive(seen, now, info.interval_s),
                    slots=f"{info.free_slots}/{info.slots}",
                    gpus=len(info.gpus),
                    load=round(info.load_1m, 2),
                    busy=round(info.utilization, 3),
                    jobs=len(info.running_jobs),
                    accepting="yes" if info.accepting else f"no: {info.reason}",
                )
            )
        return rows

    def jobs(self) -> JobsView:
        """Counts per state and the active jobs, from the last query."""
        return self._jobs

    async def refresh_jobs(self, nc: Client, timeout: float = 0.5) -> None:
        """Ask the job manager for job counts and the active jobs; keep the last good answer.

        Both come from the job manager's memory (its ``counts`` endpoint and ``list``
        for one non-terminal state), never a scan of the jobs bucket: the view stays
        cheap however many finished jobs the bucket holds.
        """
        counts: dict[str, int] = {}
        active: list[JobRow] = []
        try:
            for state in ACTIVE:
                query = JobQuery(state=state, limit=20)
                listing = await self._ask(nc, "list", encode(query), JobList, timeout)
                counts[state.value.lower()] = listing.total
                active += [_row(job) for job in listing.jobs]
            totals = await self._ask(nc, "counts", encode(Empty()), JobCounts, timeout)
        except (
            TimeoutError,
            nats.errors.Error,
            ValueError,
            msgspec.DecodeError,
            msgspec.ValidationError,
        ):
            self.job_queries["unanswered"] += 1
            return
        self.job_queries["answered"] += 1
        for name, n in totals.states.items():
            counts.setdefault(name.lower(), n)
        counts["retired"] = totals.retired
        self._jobs = JobsView(counts=counts, active=active)

    async def _ask(self, nc: Client, method: str, data: bytes, tp: type[T], timeout: float) -> T:
        reply = await nc.request(self._subjects.api("job_manager", method), data, timeout=timeout)
        if reply.headers and "Nats-Service-Error-Code" in reply.headers:
            raise ValueError(reply.headers["Nats-Service-Error-Code"])
        return decode(tp, reply.data)

    def models(self) -> list[ModelRow]:
        """Each game's champion, Elo and game count, from the last read."""
        return self._models

    async def refresh_models(self, js: JetStreamContext) -> None:
        """Read the champions (models bucket) and game counts (manifests bucket)."""
        try:
            champions = await _values(js, self._subjects.bucket("models"), "champion.>", Champion)
            manifests = await _values(js, self._subjects.bucket("manifests"), ">", Manifest)
        except (TimeoutError, nats.errors.Error, msgspec.DecodeError, msgspec.ValidationError):
            self.model_reads["failed"] += 1
            return
        self.model_reads["ok"] += 1
        games = {m.game: m.games_total for m in manifests}
        game_names = sorted({c.game for c in champions} | set(games))
        by_game = {c.game: c for c in champions}
        rows = []
        for game in game_names:
            champion = by_game.get(game)
            rows.append(
                ModelRow(
                    game=game,
                    champion=champion.model_id if champion else "-",
                    generation=champion.generation if champion else 0,
                    elo=round(champion.elo, 1) if champion else 0.0,
                    games=games.get(game, 0),
                )
            )
        self._models = rows


async def _values(js: JetStreamContext, bucket: str, pattern: str, tp: type[T]) -> list[T]:
    """Every value under ``pattern`` in ``bucket`` (none when the bucket does not exist)."""
    try:
        kv = await js.key_value(bucket)
    except BucketNotFoundError:
        return []
    return [decode(tp, value) for value, _ in (await read_all(kv, pattern)).values() if value]


def _row(job: JobRecord) -> JobRow:
    return JobRow(
        job_id=job.job_id,
        type=job.spec.type,
        state=job.state.value,
        attempt=job.attempt,
        node_id=job.node_id,
        progress=job.progress,
        error=job.error,
    )
