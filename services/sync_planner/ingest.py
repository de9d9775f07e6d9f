"""Job events in: selfplay games into the manifests, prefetch ends into DATA_SYNC_*.

Events come from a durable consumer, at least once, so every step is idempotent by
job_id: a redelivered selfplay completion finds its entry already listed and adds
nothing. An event that can never be used (bad payload, no games file) is counted
and acked; a failure of the bus or the bucket raises, and the event comes back.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import msgspec

from services.sync_planner import policy
from services.sync_planner.manifests import ManifestStore
from services.sync_planner.prefetch import KIND as PREFETCH
from services.sync_planner.prefetch import Prefetcher
from shared import tracing
from shared.blobs import BlobStore
from shared.contracts import Event
from shared.events import DataAvailable, EventData, JobCompleted, JobFailed, decode_data
from shared.failpoints import failpoint

log = logging.getLogger("ringmaster.sync_planner.ingest")

SELFPLAY = "selfplay"


class Ingest:
    """The handler of the job events the sync planner consumes."""

    def __init__(
        self,
        *,
        manifests: ManifestStore,
        blobs: BlobStore,
        prefetcher: Prefetcher,
        emit: Callable[[EventData], Awaitable[bool]],
    ) -> None:
        self.manifests = manifests
        self.blobs = blobs
        self.prefetcher = prefetcher
        self.emit = emit
        self.counts: Counter[str] = Counter()
        self._logged: set[str] = set()

    def _skip(self, kind: str, job_id: str, why: str) -> None:
        self.counts[kind] += 1
        if kind not in self._logged:  # the first of each kind is enough in the log
            self._logged.add(kind)
            log.warning("job %s skipped (%s): %s; further ones only counted", job_id, kind, why)

    async def handle(self, event: Event) -> None:
        """Act on one job event."""
        try:
            data = decode_data(event)
        except msgspec.ValidationError as exc:
            self._skip("invalid_events", event.id, str(exc))
            return
        if isinstance(data, JobCompleted):
            kind = data.labels.get("kind") or data.type
            if kind == SELFPLAY:
                await self.selfplay(data)
            elif kind == PREFETCH:
                game = data.labels.get("game", "")
                await self.prefetcher.completed(data.job_id, data.node_id, game)
            else:
                self.counts["other_jobs"] += 1
        elif isinstance(data, JobFailed):
            if data.type == PREFETCH and data.permanent:
                await self.prefetcher.failed(data.job_id, data.node_id, data.error)
            else:
                self.counts["other_failures"] += 1
        else:
            self.counts["other_events"] += 1

    async def selfplay(self, done: JobCompleted) -> None:
        """Record a selfplay job's games in its game's manifest."""
        found = policy.selfplay_entry(done, time.time())
        if isinstance(found, str):
            self._skip("bad_selfplay", done.job_id, found)
            return
        game, entry = found
        # A replay of old events (a consumer created afresh) must not list a blob
        # that retention has deleted since; the agent uploads before reporting, so
        # a first delivery always finds its blob.
        if not await self.blobs.exists(entry.ref.sha256):
            self._skip("missing_blobs", done.job_id, f"blob {entry.ref.sha256[:12]} not stored")
            return
        manifest = await self.manifests.append(game, entry)
        if manifest is None:
            self.counts["duplicates"] += 1
            return
        self.counts["recorded"] += 1
        failpoint("sync_planner.manifest.after_write")
        # DATA_AVAILABLE continues the selfplay job's trace (a child of its attempt's
        # span): from the data, an operator can follow back to the job that made it.
        selfplay = tracing.incoming("job_event")
        with tracing.use(selfplay.child() if selfplay is not None else None):
            await self.emit(
                DataAvailable(
                    game=game,
                    sha256=entry.ref.sha256,
                    games=entry.games,
                    games_total=manifest.games_total,
                )
            )
