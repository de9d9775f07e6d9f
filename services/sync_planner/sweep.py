"""The sweep of node uploads that were never sealed: their chunks, after a grace.

A node publishes its chunks (``$O.<P>_data.C.<node>.<nuid>``) before it asks for a
seal; if the agent dies in between, or the seal is refused, the chunks have no name
and nobody will ever read them. Each pass lists the node chunk subjects and the
nuids every meta message names; a chunk subject named by none is a candidate. It is
purged only when a later pass, at least ``grace_s`` after the first sighting, finds
it still unnamed and with the same number of chunks: an upload still arriving, or
sealed meanwhile, is left alone. The grace is far longer than a seal may take
(the agent's ``seal_timeout_s``), so no seal can be between its check and its name.

Only two-token (node) nuids are swept: chunks written by managers or the CLI, and
every named blob, are never touched. Runs only while this instance holds the
retention lease, so one instance sweeps at a time. Purges are counted.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError
from nats.js.object_store import ObjectStore

from shared.blob_wire import chunk_subject

log = logging.getLogger("ringmaster.sync_planner.sweep")


class UploadSweep:
    """Purges unsealed node uploads once they have lain unchanged past the grace."""

    def __init__(
        self,
        js: JetStreamContext,
        store: ObjectStore,
        bucket: str,
        grace_s: float,
        may_run: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.js = js
        self.store = store
        self.bucket = bucket
        self.stream = f"OBJ_{bucket}"
        self.grace_s = grace_s
        self.may_run = may_run
        self.clock = clock
        #: Unnamed chunk subject -> (chunks, when first seen so).
        self.pending: dict[str, tuple[int, float]] = {}
        #: passes, unsealed_uploads_purged, unsealed_chunks_purged, passes_skipped_no_lease.
        self.counts: Counter[str] = Counter()

    async def tick(self) -> None:
        """One pass: note new candidates, purge the ones past the grace."""
        if not self.may_run():
            self.counts["passes_skipped_no_lease"] += 1
            return
        unnamed = await self._unnamed()
        now = self.clock()
        kept: dict[str, tuple[int, float]] = {}
        for subject, chunks in unnamed.items():
            seen = self.pending.get(subject)
            if seen is None or seen[0] != chunks:
                kept[subject] = (chunks, now)  # new, or still growing: start the clock
            elif now - seen[1] < self.grace_s:
                kept[subject] = seen
            else:
                await self.js.purge_stream(self.stream, subject=subject)
                self.counts["unsealed_uploads_purged"] += 1
                self.counts["unsealed_chunks_purged"] += chunks
                log.info("purged unsealed upload %s (%d chunks)", subject, chunks)
        self.pending = kept
        self.counts["passes"] += 1

    async def _unnamed(self) -> dict[str, int]:
        """Node chunk subjects (two-token nuids) that no meta message names."""
        info = await self.js.stream_info(
            self.stream, subjects_filter=chunk_subject(self.bucket, "*.*")
        )
        subjects = dict(info.state.subjects or {})
        if not subjects:
            return {}
        try:
            named = {
                chunk_subject(self.bucket, meta.nuid)
                for meta in await self.store.list(ignore_deletes=True)
            }
        except NotFoundError:  # nats-py's way of saying "no objects"
            named = set()
        return {s: n for s, n in subjects.items() if s not in named}
