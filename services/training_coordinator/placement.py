"""Where a training run gets its data and its node.

The data window comes from the sync planner; when the planner cannot answer, from the
game's manifest (read-only: the planner serves from the same record). The node is
the selector's best GPU node for the train capability, else its best CPU node, else
none (the job goes to the capability pool and binds late). The prefetch to the chosen
node is a head start only: a failure is counted and logged, never fatal.
"""

from __future__ import annotations

import logging

from services.training_coordinator.context import Context
from shared.errors import Unavailable
from shared.jobs import DataRef, Requirements
from shared.kv import read
from shared.training import (
    Manifest,
    PrefetchRequest,
    TrainingDataRequest,
    games_held,
    training_window,
)

log = logging.getLogger("ringmaster.training_coordinator.placement")

#: Prefetches remembered (a few per game are ever live).
PREFETCH_MEMORY = 256


class Placement:
    """Data window, node choice and prefetch of a training run."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        #: (training key, node) pairs already prefetched: a submit retried every tick
        #: while the job manager is away must not ask for the same prefetch each time.
        self._prefetched: set[tuple[str, str]] = set()

    async def manifest(self, game: str) -> Manifest | None:
        """The game's manifest, if the sync planner wrote one."""
        found = await read(self.ctx.manifests, game, Manifest)
        return found[0] if found is not None else None

    async def games_total(self, game: str) -> int:
        """Games recorded for the game so far."""
        manifest = await self.manifest(game)
        return manifest.games_total if manifest is not None else 0

    async def window(self, game: str) -> tuple[list[DataRef], int]:
        """The newest data blobs to train on and the games they hold."""
        request = TrainingDataRequest(game=game, max_games=self.ctx.config.train_window_games)
        try:
            data = await self.ctx.peers.training_data(request)
            return data.refs, data.games
        except Unavailable as exc:
            # The manifest is the truth the planner serves from: read the window there.
            self.ctx.counts["window_from_manifest"] += 1
            log.info("%s: sync planner unavailable (%s); window from the manifest", game, exc)
        manifest = await self.manifest(game)
        if manifest is None:
            return [], 0
        window = training_window(manifest.entries, request.max_games)
        return [e.ref for e in window], games_held(window)

    async def pick_node(self) -> tuple[str | None, bool]:
        """The best GPU node, else the best CPU node, for training (None: bind late),
        and whether it was picked for its GPU: the job must then ask for one, since a
        job is shown only the GPUs assigned to it."""
        capability = self.ctx.config.train_capability
        for gpu in (True, False):
            try:
                # A GPU is preferred, not needed: its absence is not GPU work waiting.
                node = await self.ctx.peers.select(
                    Requirements(capability=capability, gpu=gpu), preference=gpu
                )
            except Unavailable as exc:
                self.ctx.counts["select_failed"] += 1
                log.info("node selector unavailable (%s): the pool will bind late", exc)
                return None, False
            if node is not None:
                return node, gpu
        self.ctx.counts["select_empty"] += 1
        return None, False

    async def prefetch(self, key: str, game: str, node: str, refs: list[DataRef]) -> None:
        """Ask the sync planner to cache ``refs`` on ``node``, once per training ``key``."""
        if (key, node) in self._prefetched:
            return
        try:
            await self.ctx.peers.prefetch(PrefetchRequest(game=game, node_id=node, refs=refs))
        except Unavailable as exc:
            # Only a head start: the node fetches its inputs anyway.
            self.ctx.counts["prefetch_failed"] += 1
            log.info("%s: prefetch to %s failed: %s", game, node, exc)
            return
        if len(self._prefetched) >= PREFETCH_MEMORY:
            self._prefetched.clear()
        self._prefetched.add((key, node))
        self.ctx.counts["prefetched"] += 1
