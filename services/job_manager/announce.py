"""Terminal announcements that survive a crash: JOB_COMPLETED, JOB_FAILED (for good),
JOB_CANCELLED.

The write that makes a record terminal also sets ``announced = False``: the change and
the obligation to announce it are one compare-and-set. The event goes out with the
deterministic ``Nats-Msg-Id`` ``<job_id>.<attempt>.<phase>``, and only once the stream
acknowledged it is the flag set. A crash anywhere in between leaves a terminal record
with ``announced = False``; whoever finds it (a repeated report from the agent, the
sweep of any job manager, at start-up from the index's first load and then every
``announce_interval``) announces again, and the stream's duplicate window drops the
copy when the first one had arrived after all.

Why the record rather than a reconcile of every terminal record at start-up: the flag
says exactly which records still owe an event, so the sweep walks a handful of records
instead of the bucket, and a running manager repairs a failed emit without a restart.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import msgspec
import nats.errors
from nats.js.kv import KeyValue

from services.job_manager import traces
from services.job_manager.index import JobIndex
from shared import tracing
from shared.errors import Conflict
from shared.events import EventData, JobCancelled, JobFailed
from shared.events.jobs import completed_event
from shared.failpoints import failpoint
from shared.jobs import TERMINAL, JobRecord, JobState
from shared.kv import cas_update

log = logging.getLogger("ringmaster.job_manager.announce")

#: emit(data, msg_id=...) -> acknowledged.
Emit = Callable[..., Awaitable[bool]]


def msg_id(rec: JobRecord) -> str:
    """The announcement's id: the same for every repeat of one job's end."""
    phase = {JobState.COMPLETED: "completed", JobState.FAILED: "failed"}.get(rec.state, "cancelled")
    return f"{rec.job_id}.{rec.attempt}.{phase}"


def terminal_event(rec: JobRecord) -> EventData:
    """The event that announces terminal record ``rec``."""
    if rec.state is JobState.COMPLETED:
        return completed_event(rec)
    if rec.state is JobState.FAILED:
        return JobFailed(
            job_id=rec.job_id,
            type=rec.spec.type,
            attempt=rec.attempt,
            node_id=rec.node_id,
            error=rec.error,
            permanent=True,
        )
    return JobCancelled(job_id=rec.job_id, reason=rec.error)


class Announcer:
    """Announces terminal records and clears their obligation once acknowledged."""

    def __init__(self, *, kv: KeyValue, index: JobIndex, emit: Emit) -> None:
        self.kv = kv
        self.index = index
        self.emit = emit
        self.stats: Counter[str] = Counter()

    async def announce(self, rec: JobRecord) -> bool:
        """Emit ``rec``'s terminal event; once acked, mark the record announced."""
        if rec.state not in TERMINAL or rec.announced:
            return True
        # In the job's trace, whoever announces (the live path, a repeat, the sweep).
        with tracing.use(traces.terminal_span(rec)):
            acked = await self.emit(terminal_event(rec), msg_id=msg_id(rec))
        if not acked:
            # Still queued in the outbox, and still owed by the record: the sweep or a
            # repeated report tries again; the stream keeps one copy.
            self.stats["not_acked"] += 1
            return False
        self.stats["announced"] += 1
        failpoint("job_manager.announce.after_ack")

        def done(r: JobRecord) -> JobRecord | None:
            if r.state is not rec.state or r.attempt != rec.attempt or r.announced:
                return None
            return msgspec.structs.replace(r, announced=True)

        # The index holds the terminal record at the revision just written (the live
        # path applied it before announcing): write the flag on that copy, one round
        # trip instead of a read and a write; a stale copy falls back to a fresh read.
        known = self.index.owed.get(rec.job_id)
        try:
            written = await cas_update(self.kv, rec.job_id, JobRecord, done, known=known)
        except (nats.errors.Error, TimeoutError, Conflict) as exc:
            # The event is out; only the flag is missing, and a repeat is de-duplicated.
            self.stats["flag_failed"] += 1
            log.warning("job %s announced, flag not written: %r", rec.job_id, exc)
            return True
        if written is not None:
            self.index.apply(*written)
        return True

    async def sweep(self, min_age_s: float) -> None:
        """Announce every terminal record still owing its event for ``min_age_s``.

        The age leaves the live path (report, cancel, reaper) to finish its own
        announcement first; the sweep is for the ones a crash or a failed emit left.
        """
        now = time.time()
        for rec in list(self.index.unannounced()):
            if now - rec.updated_at < min_age_s:
                continue
            self.stats["swept"] += 1
            log.info("job %s: announcing its end again (%s)", rec.job_id, rec.state)
            await self.announce(rec)
