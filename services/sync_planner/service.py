"""The sync planner service: manifests of game data, training windows, prefetch, retention.

Consumes the job manager's JOB_COMPLETED and JOB_FAILED through the durable consumer
``sync_planner`` (nothing is missed across restarts; see ``ingest.py``). Endpoints on
``P.api.sync_planner.<method>``:

- ``training_data`` (TrainingDataRequest -> TrainingData): the newest blobs of a game
  adding up to at most ``max_games`` games;
- ``manifest`` (GameRef -> Manifest for one game, or a list of every Manifest when
  the game is empty);
- ``prefetch`` (PrefetchRequest -> JobRecord): a ``prefetch`` job pinned to the node;
- ``seal`` (SealRequest -> SealReply): name a node's uploaded chunks as a blob, after
  checking them (``sealing.py``); node users cannot write the object store's meta.

The retention loop (``retention.py``) is the only deleter of game data; the upload
sweep (``sweep.py``) removes only chunks of node uploads that were never sealed.
"""

from __future__ import annotations

from collections.abc import Callable

from services.sync_planner import policy
from services.sync_planner.config import SyncPlannerConfig
from services.sync_planner.ingest import Ingest
from services.sync_planner.manifests import ManifestStore
from services.sync_planner.prefetch import JOB_MANAGER, Prefetcher
from services.sync_planner.references import Handouts, References
from services.sync_planner.retention import Retention
from services.sync_planner.sealing import Sealer
from services.sync_planner.sweep import UploadSweep
from shared.blob_seal import SealReply, SealRequest
from shared.blobs import BlobStore, ensure_store
from shared.circuit_breaker import CircuitBreaker
from shared.consume import EventConsumer
from shared.contracts import HealthCheckResult
from shared.errors import BadRequest
from shared.jobs import JobRecord
from shared.loops import Loop
from shared.service import Service
from shared.training import (
    GameRef,
    Manifest,
    PrefetchRequest,
    TrainingData,
    TrainingDataRequest,
    games_held,
    training_window,
)

DURABLE = "sync_planner"


class SyncPlannerService(Service[SyncPlannerConfig]):
    """Owns the manifests bucket and the deletion of game data in P_data."""

    name = "sync_planner"
    description = "manifests of selfplay data, training windows, prefetch and safe retention"
    config_type = SyncPlannerConfig

    def __init__(
        self,
        config: SyncPlannerConfig,
        *,
        reload_config: Callable[[], SyncPlannerConfig] | None = None,
    ) -> None:
        super().__init__(config, reload_config=reload_config)
        self.handouts = Handouts(config.handout_grace_s)
        self._parts: tuple[ManifestStore, Ingest, Prefetcher, Retention] | None = None
        self.consumer: EventConsumer | None = None
        self.sealer: Sealer | None = None
        self.sweep: UploadSweep | None = None

    async def setup(self) -> None:
        """Provision, wire the parts, start the consumer, add endpoints and retention."""
        cfg = self.config
        store = await ensure_store(self.js, self.subjects.data_store, replicas=cfg.replicas)
        jobs, models = await self.bucket("jobs"), await self.bucket("models")
        manifests = ManifestStore(await self.bucket("manifests"))
        breaker = self.add_breaker(
            CircuitBreaker(
                JOB_MANAGER,
                failure_threshold=cfg.submit_failure_threshold,
                recovery_timeout=cfg.submit_recovery_s,
            )
        )
        prefetcher = Prefetcher(
            nc=self.nc,
            jobs=jobs,
            subjects=self.subjects,
            config=cfg,
            breaker=breaker,
            handouts=self.handouts,
            emit=self.emit,
        )
        ingest = Ingest(
            manifests=manifests, blobs=BlobStore(store), prefetcher=prefetcher, emit=self.emit
        )
        retention = Retention(
            manifests=manifests,
            references=References(jobs=jobs, models=models, handouts=self.handouts),
            store=store,
            leases=await self.bucket("leases"),
            holder=self.instance,
            retain_games=cfg.retain_games,
            lease_ttl_s=max(3 * cfg.retention_interval_s, 10.0),
            emit=self.emit,
        )
        self._parts = (manifests, ingest, prefetcher, retention)
        await manifests.all()  # health shows every game from the start
        self.consumer = EventConsumer(
            self.js,
            stream=self.subjects.events_stream,
            durable=DURABLE,
            filter_subjects=[
                self.subjects.event(JOB_MANAGER, "JOB_COMPLETED"),
                self.subjects.event(JOB_MANAGER, "JOB_FAILED"),
            ],
            handler=ingest.handle,
        )
        await self.tg.start(self.consumer.run)
        await self.add_endpoint("training_data", TrainingDataRequest, self.training_data)
        await self.add_endpoint("manifest", GameRef, self.manifest)
        await self.add_endpoint("prefetch", PrefetchRequest, self.prefetch)
        self.sealer = Sealer(self.js, self.subjects.data_store, cfg.seal_read_timeout_s)
        await self.add_endpoint("seal", SealRequest, self.seal)
        interval = cfg.retention_interval_s
        self.add_loop(
            Loop("retention", retention.tick, interval=interval, max_backoff=max(60.0, interval))
        )
        # Unsealed node uploads: swept by whoever holds the retention lease.
        self.sweep = UploadSweep(
            self.js,
            store,
            self.subjects.data_store,
            cfg.unsealed_grace_s,
            lambda: retention.lease.held,
        )
        self.add_loop(
            Loop(
                "upload_sweep", self.sweep.tick, interval=interval, max_backoff=max(60.0, interval)
            )
        )

    @property
    def parts(self) -> tuple[ManifestStore, Ingest, Prefetcher, Retention]:
        """The manifests, ingest, prefetcher and retention (once set up)."""
        if self._parts is None:
            raise RuntimeError("the sync planner is not set up")
        return self._parts

    async def teardown(self) -> None:
        """Give the retention lease up before the connection drains."""
        if self._parts is not None:
            await self._parts[3].release()

    async def on_reload(self, old: SyncPlannerConfig) -> None:
        """The window, timeouts and grace apply at once; intervals and breaker at restart."""
        self.handouts.grace_s = self.config.handout_grace_s
        if self._parts is not None:
            self._parts[2].config = self.config
            self._parts[3].retain_games = self.config.retain_games

    # -- endpoints ----------------------------------------------------------------------
    async def training_data(self, request: TrainingDataRequest) -> TrainingData:
        """``training_data``: the recent window of a game's games."""
        manifest = await self.parts[0].get(request.game)
        window = training_window(manifest.entries, request.max_games)
        self.handouts.protect(e.ref.sha256 for e in window)
        return TrainingData(
            game=request.game,
            refs=[e.ref for e in window],
            games=games_held(window),
            games_total=manifest.games_total,
        )

    async def manifest(self, request: GameRef) -> Manifest | list[Manifest]:
        """``manifest``: one game's manifest, or every manifest for an empty config."""
        if request.game:
            if not policy.is_game_name(request.game):
                raise BadRequest(f"game {request.game!r} is not a game name")
            return await self.parts[0].get(request.game)
        return await self.parts[0].all()

    async def prefetch(self, request: PrefetchRequest) -> JobRecord:
        """``prefetch``: submit a prefetch job pinned to ``request.node_id``."""
        return await self.parts[2].submit(request)

    async def seal(self, request: SealRequest) -> SealReply:
        """``seal``: check a node's uploaded chunks and name them (see sealing.py)."""
        if self.sealer is None:
            raise RuntimeError("the sync planner is not set up")
        return await self.sealer.seal(request)

    # -- health -------------------------------------------------------------------------
    def health(self) -> HealthCheckResult:
        """Consumer, manifests, retention and prefetch counters."""
        if self._parts is None or self.consumer is None:
            return HealthCheckResult.ok("starting")
        manifests, ingest, prefetcher, retention = self._parts
        details = {
            "consumer": self.consumer.stats(),
            "manifests": dict(manifests.summary),
            "manifest_counts": dict(manifests.counts),
            "ingest": dict(ingest.counts),
            "retention": dict(retention.totals),
            "retention_lease_held": retention.lease.held,
            "references": dict(retention.references.counts),
            "prefetches": dict(prefetcher.counts),
            "handouts": len(self.handouts.current()),
            "seals": dict(self.sealer.counts) if self.sealer is not None else {},
            "upload_sweep": dict(self.sweep.counts) if self.sweep is not None else {},
        }
        games = sum(s["games"] for s in manifests.summary.values())
        return HealthCheckResult.ok(
            f"{len(manifests.summary)} games, {games} games held", **details
        )

    def custom_metrics(self) -> dict[str, float]:
        """Games held and recorded per game, and lifetime totals of this instance."""
        metrics: dict[str, float] = {}
        if self._parts is None:
            return metrics
        manifests, ingest, prefetcher, retention = self._parts
        for game, summary in manifests.summary.items():
            metrics[f"games_held_{game}"] = summary["games"]
            metrics[f"games_total_{game}"] = summary["games_total"]
        metrics["entries_recorded_total"] = ingest.counts["recorded"]
        metrics["blobs_deleted_total"] = retention.totals["blobs_deleted"]
        metrics["prefetches_submitted_total"] = prefetcher.counts["submitted"]
        return metrics
