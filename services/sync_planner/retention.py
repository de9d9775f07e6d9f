"""Retention, the one owner of deleting game data: old, unreferenced blobs only.

Each pass, under the lease ``sync_planner-retention`` (one instance deletes at a time):

1. scan what is referenced: inputs of every job that may still run, every model
   record, blobs handed out to clients within the grace period;
2. plan per game with ``policy.plan_retention`` (the newest ``retain_games`` games
   and everything referenced stay);
3. remove the planned entries from the manifest (compare-and-set), THEN delete their
   blobs. In that order a crash in between leaves an unlisted blob (space, counted as
   nothing worse), never a listed blob that is gone.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable

import nats.errors
from nats.js.errors import NotFoundError, ObjectNotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from services.sync_planner import policy
from services.sync_planner.manifests import ManifestStore
from services.sync_planner.references import References
from shared.events import DataSyncCompleted, DataSyncStarted, EventData
from shared.kv import Lease

log = logging.getLogger("ringmaster.sync_planner.retention")

LEASE_KEY = "sync_planner-retention"


class Retention:
    """One retention pass per ``tick``; totals for health."""

    def __init__(
        self,
        *,
        manifests: ManifestStore,
        references: References,
        store: ObjectStore,
        leases: KeyValue,
        holder: str,
        retain_games: int,
        lease_ttl_s: float,
        emit: Callable[[EventData], Awaitable[bool]],
    ) -> None:
        self.manifests = manifests
        self.references = references
        self.store = store
        self.retain_games = retain_games
        self.lease = Lease(leases, LEASE_KEY, holder, lease_ttl_s)
        self._leases = leases
        self.emit = emit
        self.totals: Counter[str] = Counter()

    async def tick(self) -> None:
        """One pass over every manifest (only while holding the lease)."""
        if not await self.lease.acquire_or_renew():
            self.totals["passes_skipped_no_lease"] += 1
            return
        manifests = await self.manifests.all()
        if not manifests:
            self.totals["passes"] += 1
            return
        referenced = await self.references.scan()
        plans = {
            m.game: policy.plan_retention(m.entries, self.retain_games, referenced)
            for m in manifests
        }
        deletable = policy.blobs_to_delete(plans)
        for game, plan in plans.items():
            if plan.delete:
                await self._apply(game, plan, deletable)
        self.totals["passes"] += 1

    async def _apply(self, game: str, plan: policy.RetentionPlan, deletable: set[str]) -> None:
        size = {e.ref.sha256: e.ref.size for e in plan.delete}
        shas = sorted(sha for sha in size if sha in deletable)
        nbytes = sum(size[sha] for sha in shas)
        await self.emit(DataSyncStarted(game=game, blobs=len(shas), bytes=nbytes))
        await self.manifests.remove(game, {e.job_id for e in plan.delete})
        self.totals["entries_removed"] += len(plan.delete)
        deleted = [sha for sha in shas if await self._delete(sha)]
        freed = sum(size[sha] for sha in deleted)
        self.totals["blobs_deleted"] += len(deleted)
        self.totals["bytes_deleted"] += freed
        log.info(
            "retention %s: %d entries removed, %d blobs deleted",
            game,
            len(plan.delete),
            len(deleted),
        )
        await self.emit(
            DataSyncCompleted(game=game, blobs=len(shas), bytes=freed, deleted=len(deleted))
        )

    async def _delete(self, sha: str) -> bool:
        """Delete one blob; True when this call deleted it."""
        try:
            await self.store.delete(sha)
        except (ObjectNotFoundError, NotFoundError):
            self.totals["already_gone"] += 1
            return False
        except (nats.errors.Error, TimeoutError) as exc:
            # Unlisted now, so never retried: counted so an operator can see the leak.
            self.totals["delete_failures"] += 1
            log.warning("retention: deleting blob %s failed: %r", sha[:12], exc)
            return False
        return True

    async def release(self) -> None:
        """Give the lease up (at stop) so another instance takes the duty at once."""
        revision, self.lease.revision = self.lease.revision, None
        if revision is None:
            return
        try:
            await self._leases.delete(LEASE_KEY, last=revision)
        except (nats.errors.Error, TimeoutError) as exc:
            log.info("retention lease not released: %r", exc)
