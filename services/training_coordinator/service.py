"""The training coordinator service: the models bucket's one writer.

Per game: readiness (new games since the last training against a threshold scaled
to the alive nodes, a cooldown, nothing in flight) -> a train job on the node the
selector picks -> evaluation batches gated by SPRT -> promotion by one CAS of the
champion, or rejection. Job events come through a durable consumer of ``P_EVENTS``;
every step is a CAS on ``state.<game>``, so restarts and second instances never act
twice. API on ``P.api.training_coordinator.<method>``: ``models`` and ``elo``
(GameRef -> ModelsReply / EloReply).

One lock serializes the steps of this instance (ticks and events), and stopping takes
it, so an instance never stops halfway through a step: what it did not start, the
next instance finds in the state or in the consumer.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable

import anyio
import msgspec
import nats.errors
from anyio.abc import TaskStatus
from nats.aio.msg import Msg

from services.training_coordinator.api import ModelsApi, game_details
from services.training_coordinator.config import TrainingCoordinatorConfig
from services.training_coordinator.context import Context
from services.training_coordinator.coordinator import Coordinator
from services.training_coordinator.nodes import AliveNodes
from services.training_coordinator.peers import PEERS, Peers
from services.training_coordinator.store import ModelStore
from shared.blobs import BlobStore, ensure_store
from shared.circuit_breaker import CircuitBreaker
from shared.consume import EventConsumer
from shared.contracts import Event, HealthCheckResult
from shared.errors import RingmasterError, Unavailable
from shared.events import JobCancelled, JobCompleted, JobFailed
from shared.jobs import NodeInfo
from shared.liveness import LivenessRule
from shared.loops import Loop
from shared.service import Service
from shared.training import GameRef

log = logging.getLogger("ringmaster.training_coordinator")

DURABLE = "training_coordinator"


class Stopping(Unavailable):
    """The instance is stopping: the event goes back to the stream for the next one."""


class TrainingCoordinatorService(Service[TrainingCoordinatorConfig]):
    """Readiness, training, SPRT evaluation, promotion and the Elo table per game."""

    name = "training_coordinator"
    description = "trains, evaluates (SPRT) and promotes models per game"
    config_type = TrainingCoordinatorConfig

    def __init__(
        self,
        config: TrainingCoordinatorConfig,
        *,
        reload_config: Callable[[], TrainingCoordinatorConfig] | None = None,
    ) -> None:
        super().__init__(config, reload_config=reload_config)
        self._lock = anyio.Lock()
        self._stopping = False
        self._consumer_scope = anyio.CancelScope()
        self.nodes = AliveNodes(LivenessRule(lost_after_s=config.node_alive_s), Counter())
        self._errors: dict[str, str] = {}
        self._coordinator: Coordinator | None = None
        self.consumer: EventConsumer | None = None

    @property
    def coordinator(self) -> Coordinator:
        """The cycle of every game (once set up)."""
        if self._coordinator is None:
            raise RuntimeError("the training coordinator is not set up")
        return self._coordinator

    async def setup(self) -> None:
        """Provision, build the cycle, then nodes, events, the API and the tick."""
        cfg = self.config
        store = ModelStore(await self.bucket("models"))
        breakers = {
            peer: self.add_breaker(
                CircuitBreaker(
                    peer,
                    failure_threshold=cfg.breaker_failures,
                    recovery_timeout=cfg.breaker_recovery_s,
                )
            )
            for peer in PEERS
        }
        data = await ensure_store(self.js, self.subjects.data_store, replicas=cfg.replicas)
        ctx = Context(
            config=cfg,
            store=store,
            peers=Peers(self.nc, self.subjects, breakers, timeout_s=cfg.request_timeout_s),
            blobs=BlobStore(data),
            manifests=await self.bucket("manifests"),
            emit=self.emit,
            instance=self.instance,
            alive_nodes=self.nodes.count,
            counts=self.nodes.counts,
        )
        self._coordinator = Coordinator(ctx)
        for game in cfg.games:
            await store.state(game)
        await self.nodes.seed(await self.bucket("nodes"))
        await self.subscribe(self.subjects.nodes, NodeInfo, self._on_node, kind="node")
        event = self.subjects.event
        self.consumer = EventConsumer(
            self.js,
            stream=self.subjects.events_stream,
            durable=DURABLE,
            filter_subjects=[
                event("job_manager", JobCompleted.TYPE),
                event("job_manager", JobFailed.TYPE),
                event("job_manager", JobCancelled.TYPE),
            ],
            handler=self._on_event,
            ack_wait_s=cfg.consumer_ack_wait_s,
        )
        await self.tg.start(self._consume)
        api = ModelsApi(self._coordinator)
        await self.add_endpoint("models", GameRef, api.models)
        await self.add_endpoint("elo", GameRef, api.elo)
        self.add_loop(
            Loop("readiness", self._tick, interval=cfg.interval_s, max_backoff=cfg.interval_s * 10)
        )
        every = cfg.reconcile_interval_s
        self.add_loop(Loop("reconcile", self._reconcile, interval=every, max_backoff=every * 4))

    async def teardown(self) -> None:
        """Refuse new steps, wait for the one under way, then stop consuming."""
        # Set before taking the lock: events arriving meanwhile are handed back at once
        # (nak) instead of waiting behind us and being cancelled unacknowledged.
        self._stopping = True
        with anyio.move_on_after(self.config.step_timeout_s):
            async with self._lock:
                pass
        self._consumer_scope.cancel()

    async def _on_node(self, info: NodeInfo, _: Msg) -> None:
        self.nodes.saw(info)

    # -- the cycle -------------------------------------------------------------------
    async def _consume(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        assert self.consumer is not None
        with self._consumer_scope:
            await self.consumer.run(task_status=task_status)

    async def _on_event(self, event: Event) -> None:
        if self._stopping:
            raise Stopping("stopping: left for the next instance")
        async with self._lock:
            if self._stopping:
                raise Stopping("stopping: left for the next instance")
            # A step never holds the lock for long: cut short, the event comes back.
            with anyio.fail_after(self.config.step_timeout_s):
                await self.coordinator.handle(event)

    async def _tick(self) -> None:
        await self._each_game(self.coordinator.tick, "tick", shown=True)

    async def _reconcile(self) -> None:
        # Through the job manager's breaker: while it is open, each try fails at once.
        # Its failures are counted, not shown as the game's: the tick says the same.
        await self._each_game(self.coordinator.reconcile, "reconcile", shown=False)

    async def _each_game(
        self, step: Callable[[str], Awaitable[None]], name: str, *, shown: bool
    ) -> None:
        for game in self.config.games:
            async with self._lock:
                if self._stopping:
                    return
                try:
                    with anyio.fail_after(self.config.step_timeout_s):
                        await step(game)
                except (
                    RingmasterError,
                    nats.errors.Error,
                    msgspec.ValidationError,
                    OSError,
                    TimeoutError,
                ) as exc:
                    # One game's trouble must not starve the others: counted, shown.
                    self.coordinator.ctx.counts[f"{name}_errors"] += 1
                    error = f"{type(exc).__name__}: {exc}"
                    log.info("%s: %s failed: %s", game, name, error)
                    if shown:
                        self._errors[game] = error
                else:
                    if shown:
                        self._errors.pop(game, None)

    # -- health ----------------------------------------------------------------------
    def health(self) -> HealthCheckResult:
        """DEGRADED while a game's tick keeps failing; breakers are the framework's."""
        if self._coordinator is None:
            return HealthCheckResult.ok("starting")
        ctx = self.coordinator.ctx
        games = {
            c: game_details(self.coordinator, c, self._errors.get(c, "")) for c in self.config.games
        }
        details = {
            "games": games,
            "consumer": self.consumer.stats() if self.consumer else {},
            "counts": dict(ctx.counts),
            "requests": dict(ctx.peers.counts),
            "breakers": {b.name: b.state.value for b in self.breakers},
            "alive_nodes": self.nodes.count(),
        }
        if self._errors:
            failing = ", ".join(sorted(self._errors))
            return HealthCheckResult.degraded(f"failing games: {failing}", **details)
        phases = [d["phase"] for d in games.values()]
        busy = sum(p != "idle" for p in phases)
        return HealthCheckResult.ok(f"{busy}/{len(phases)} games in a cycle", **details)

    def custom_metrics(self) -> dict[str, float]:
        """Per game generation and champion Elo; promotions and rejections of this instance."""
        metrics: dict[str, float] = {}
        if self._coordinator is None:
            return metrics
        for game in self.config.games:
            state = self.coordinator.states.get(game)
            champion = self.coordinator.champions.get(game)
            metrics[f"generation_{game}"] = float(state.generation if state else 0)
            metrics[f"champion_elo_{game}"] = champion.elo if champion else 0.0
        counts = self.coordinator.ctx.counts
        for name in ("promotions", "rejections", "trainings_failed", "evaluations_failed"):
            metrics[f"{name}_total"] = float(counts[name])
        return metrics
