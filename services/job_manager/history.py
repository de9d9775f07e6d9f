"""Retiring terminal jobs from the hot jobs bucket into the history bucket.

The jobs bucket holds what the control plane works on; a terminal record older than
``history_after_s`` moves to the KV bucket ``P_history`` (age-limited by the bucket's
ttl, see ``BUCKET_SPECS``), where ``get`` still finds it. One owner per duty: only the
instance holding the reaper lease retires. Each retirement is, in this order:

1. put the record into history (a repeat writes the same bytes: idempotent);
2. delete the job's idempotency key if it still names this job: keys expire with
   the job's retirement, so a submit with the same key afterwards makes a new job.
   Deleting the key before the record matters: a key naming a missing record means
   "its first submitter died between its two writes" and would re-create the job;
3. delete the record, compare-and-set on the revision read in step 1, so a record
   that changed meanwhile stays (and is retried next pass).

The deletes leave tombstones that every index load would replay; they are purged
from the bucket's stream once the watches of the other instances had time to see them.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque

import nats.errors
from nats.js.client import JetStreamContext
from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from services.job_manager import policy
from services.job_manager.catalog import JobCatalog
from services.job_manager.config import JobManagerConfig
from shared.codec import encode
from shared.jobs import TERMINAL, JobRecord
from shared.kv import Lease, read

log = logging.getLogger("ringmaster.job_manager.history")

#: Seconds a tombstone stays before it is purged (other instances' watches see it).
TOMBSTONE_GRACE_S = 60.0
#: An instance without the lease checks summaries this much older than due: a job the
#: holder retired while this instance's watch was away (tombstone missed) is forgotten.
STALE_GRACE_S = 2 * TOMBSTONE_GRACE_S
STALE_CHECKS = 50


class History:
    """Retires due terminal jobs (lease holder only) and reads retired ones."""

    def __init__(
        self,
        *,
        js: JetStreamContext,
        jobs: KeyValue,
        history: KeyValue,
        jobs_bucket: str,
        catalog: JobCatalog,
        lease: Lease,
        config: JobManagerConfig,
        counts: Counter[str],
    ) -> None:
        self.js = js
        self.jobs = jobs
        self.history = history
        self.jobs_bucket = jobs_bucket
        self.catalog = catalog
        self.lease = lease
        self.config = config  # replaced on reload: history_after_s applies at once
        self.counts = counts
        self._tombstones: deque[tuple[float, str]] = deque()

    async def get(self, job_id: str) -> JobRecord | None:
        """A retired job's record, or None."""
        found = await read(self.history, job_id, JobRecord)
        return found[0] if found else None

    async def tick(self) -> None:
        """Retire up to ``batch`` due jobs, then purge old tombstones (lease holder only)."""
        after_s = self.config.history_after_s
        if after_s <= 0:
            return
        if not self.lease.held:
            await self._forget_stale(time.time() - after_s - STALE_GRACE_S)
            return
        for summary in self.catalog.due(time.time() - after_s, self.config.history_batch):
            if not self.lease.held:
                return  # lost it mid-pass: the new holder carries on
            await self.retire(summary.job_id)
        await self._purge_tombstones()

    async def retire(self, job_id: str) -> bool:
        """Move one terminal job to history; False when it was not (gone, live, changed)."""
        found = await read(self.jobs, job_id, JobRecord)
        if found is None:
            self.catalog.forget(job_id)
            return False
        record, revision = found
        # A record still owing its terminal event stays where the sweep finds it.
        if record.state not in TERMINAL or not record.announced:
            return False
        await self.history.put(job_id, encode(record))
        if record.spec.idempotency_key:
            await self._drop_key(policy.idem_key(record.spec.idempotency_key), job_id)
        try:
            await self.jobs.delete(job_id, last=revision)
        except KeyWrongLastSequenceError:
            self.counts["history_changed"] += 1  # written meanwhile: judged again next pass
            return False
        self.catalog.forget(job_id)
        self._tombstones.append((time.monotonic(), job_id))
        self.counts["retired_total"] += 1
        return True

    async def _forget_stale(self, finished_before: float) -> None:
        # The watch does not re-deliver deletions: without this, a summary whose
        # tombstone was purged while this instance was disconnected would stay forever.
        for summary in self.catalog.due(finished_before, STALE_CHECKS):
            if await read(self.jobs, summary.job_id, JobRecord) is None:
                self.catalog.forget(summary.job_id)
                self.counts["history_stale_forgotten"] += 1

    async def _drop_key(self, idem: str, job_id: str) -> None:
        try:
            entry = await self.jobs.get(idem)
        except (KeyNotFoundError, KeyDeletedError):
            return  # already gone (an earlier pass got this far)
        if (entry.value or b"").decode() != job_id:
            return  # the key names a newer job (it expired with an earlier retirement)
        try:
            await self.jobs.delete(idem, last=entry.revision)
        except KeyWrongLastSequenceError:
            self.counts["history_key_changed"] += 1

    async def _purge_tombstones(self) -> None:
        stream = f"KV_{self.jobs_bucket}"
        horizon = time.monotonic() - TOMBSTONE_GRACE_S
        while self._tombstones and self._tombstones[0][0] < horizon:
            _, job_id = self._tombstones[0]
            try:
                await self.js.purge_stream(stream, subject=f"$KV.{self.jobs_bucket}.{job_id}")
            except (nats.errors.Error, TimeoutError) as exc:
                self.counts["tombstone_purge_errors"] += 1
                log.warning("purging the tombstone of %s failed: %r; retrying later", job_id, exc)
                return
            self._tombstones.popleft()
            self.counts["tombstones_purged"] += 1

    def details(self) -> dict[str, object]:
        """For health details."""
        return {
            "after_s": self.config.history_after_s,
            "retired": self.counts["retired_total"],
            "changed": self.counts["history_changed"],
            "tombstones_pending": len(self._tombstones),
            "tombstone_purge_errors": self.counts["tombstone_purge_errors"],
            "stale_forgotten": self.counts["history_stale_forgotten"],
        }
