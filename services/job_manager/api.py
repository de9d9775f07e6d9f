"""The job manager's endpoints: submit, get, list, cancel and the agents' report.

Every change is a compare-and-set on the job's record. Submit is idempotent by key:
the key ``idem-<sha256>`` is created (atomically) before the record, so every submit
with the same key names the same job_id and only the one that creates the record
announces JOB_SUBMITTED. Reports are judged by ``reports.apply_report``; a refusal is
a 409 the agent acts on (it drops or kills that attempt), counted by kind.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import anyio
import msgspec
import nats.errors
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from services.job_manager import policy, traces
from services.job_manager.announce import Announcer
from services.job_manager.catalog import JobCatalog
from services.job_manager.config import JobManagerConfig
from services.job_manager.dispatcher import Dispatcher
from services.job_manager.history import History
from services.job_manager.index import JobIndex, scan, select_jobs
from services.job_manager.listing import Lister
from services.job_manager.reaper import Reaper
from services.job_manager.reports import REPORT_PHASES, Refusal, apply_report
from services.job_manager.timings import JobTimings
from shared import tracing
from shared.codec import encode
from shared.contracts import Empty
from shared.errors import BadRequest, Conflict, Forbidden, NotFound
from shared.events import EventData, JobStarted, JobSubmitted
from shared.failpoints import failpoint
from shared.jobs import (
    TERMINAL,
    JobCounts,
    JobList,
    JobQuery,
    JobRecord,
    JobRef,
    JobReport,
    JobSpec,
)
from shared.kv import cas_update, read

log = logging.getLogger("ringmaster.job_manager.api")


class Refused(Conflict):
    """A report refused by the state machine (409); ``kind`` says why."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.kind = refusal.kind


class JobApi:
    """Request handlers over the jobs bucket; counters shared with the service."""

    def __init__(
        self,
        *,
        kv: KeyValue,
        config: JobManagerConfig,
        index: JobIndex,
        dispatcher: Dispatcher,
        reaper: Reaper,
        announcer: Announcer,
        emit: Callable[[EventData], Awaitable[bool]],
        emit_nowait: Callable[[EventData], bool],
        spawn: Callable[[Callable[[], Coroutine[Any, Any, None]]], None],
        paused: Callable[[], bool],
        counts: Counter[str],
        lister: Lister | None = None,
        history: History | None = None,
    ) -> None:
        self.kv = kv
        #: Paged listing over the catalog, and retired jobs; without them (tests
        #: building a bare JobApi) list scans and get sees the jobs bucket only.
        self.lister = lister
        self.history = history
        self.timings = JobTimings()
        self.config = config
        self.index = index
        self.dispatcher = dispatcher
        self.reaper = reaper
        self.announcer = announcer
        self.emit = emit
        #: Queues an event without awaiting its ack (the outbox keeps order, retries
        #: and counts): for announcements no reply needs to wait for.
        self.emit_nowait = emit_nowait
        self.spawn = spawn
        #: Terminal announcements running after their reply, at most this many at once.
        self._announcing = anyio.CapacityLimiter(256)
        self.paused = paused
        self.counts = counts
        self.refused: Counter[str] = Counter()

    async def submit(self, spec: JobSpec) -> JobRecord:
        """Create the job (or find it by its idempotency key) and dispatch it."""
        problem = policy.requirements_problem(spec.requirements)
        if problem:
            self.counts["bad_submits"] += 1
            raise BadRequest(problem)
        job_id = uuid.uuid4().hex
        if spec.idempotency_key:
            job_id, existing = await self._claim_key(spec.idempotency_key, job_id)
            if existing is not None:
                self.counts["duplicate_submits"] += 1
                return existing
        now = time.time()
        record = traces.start(policy.new_record(job_id, spec, now))
        req = spec.requirements
        # The first attempt is written with the record itself: one write instead of
        # create-then-dispatch. Where the node matters the selector is asked first; it
        # never fails a submit (no answer means the capability pool, late binding).
        direct = not self.paused()
        if direct:
            asks = policy.needs_selector(req)
            selected = await self.dispatcher.selection.select(record) if asks else None
            record = policy.dispatched(record, now, policy.choose_pool(req, selected)) or record
        self.dispatcher.busy.add(job_id)  # the reaper leaves it to the dispatch below
        try:
            try:
                revision = await self.kv.create(job_id, encode(record))
            except KeyWrongLastSequenceError:
                # A concurrent submit with the same key created it first: that is the job.
                self.counts["duplicate_submits"] += 1
                return await self.read(job_id)
            self.index.apply(record, revision)
            self.counts["submitted_total"] += 1
            # Queued before the dispatch is published, so JOB_SUBMITTED precedes
            # JOB_STARTED in the outbox's order; the reply need not wait for its ack.
            with tracing.use(traces.job_span(record)):
                self.emit_nowait(
                    JobSubmitted(
                        job_id=job_id, type=spec.type, idempotency_key=spec.idempotency_key
                    )
                )
            if not direct:
                return record  # kept PENDING: the reaper dispatches it once resumed
            return await self.dispatcher.send_safely(record, revision, now) or record
        finally:
            self.dispatcher.busy.discard(job_id)

    async def _claim_key(self, key: str, job_id: str) -> tuple[str, JobRecord | None]:
        """The job_id an idempotency key names (``job_id`` if first), and its record."""
        idem = policy.idem_key(key)
        try:
            await self.kv.create(idem, job_id.encode())
            return job_id, None
        except KeyWrongLastSequenceError:
            entry = await self.kv.get(idem)
        owner = (entry.value or b"").decode()
        found = await read(self.kv, owner, JobRecord)
        # No record yet: its first submitter is between the two writes, or died there.
        # Creating the record under the same id is race-free: kv.create lets one win.
        return owner, found[0] if found else None

    async def read(self, job_id: str) -> JobRecord:
        """The job's record, or a 404."""
        found = await read(self.kv, job_id, JobRecord)
        if found is None:
            raise NotFound(f"no job {job_id!r}")
        return found[0]

    async def get(self, ref: JobRef) -> JobRecord:
        """``get``: one job's record, from the jobs bucket or, once retired, from history."""
        try:
            return await self.read(ref.job_id)
        except NotFound:
            retired = await self.history.get(ref.job_id) if self.history else None
            if retired is None:
                raise
            self.counts["get_from_history"] += 1
            return retired

    async def job_counts(self, _: Empty) -> JobCounts:
        """``counts``: jobs per state from memory (no scan), and the jobs retired so far."""
        index = self.index
        states = index.all_counts() if isinstance(index, JobCatalog) else index.counts()
        return JobCounts(states=states, retired=self.counts["retired_total"])

    async def list(self, query: JobQuery) -> JobList:
        """``list``: the jobs matching the query, newest first.

        Answered in pages (``listing.Lister``) from the catalog in memory, reading only
        the page's terminal records by key; never a reply past max_payload.
        """
        if self.lister is not None and self.index.loaded:
            return await self.lister.page(query)
        if query.state is not None and query.state not in TERMINAL and self.index.loaded:
            self.counts["list_from_index"] += 1
            return select_jobs(self.index.records(), query)
        self.counts["list_scans"] += 1
        return select_jobs(await scan(self.kv, self.index.stats), query)

    async def cancel(self, ref: JobRef) -> JobRecord:
        """``cancel``: CANCELLED from any non-terminal state; 409 when already terminal."""
        now = time.time()

        def change(rec: JobRecord) -> JobRecord | None:
            if rec.state in TERMINAL:
                raise Conflict(f"job {rec.job_id} is already {rec.state}")
            return policy.cancelled(rec, now, ref.reason)

        written = await cas_update(self.kv, ref.job_id, JobRecord, change)
        if written is None:
            if self.history is not None and await self.history.get(ref.job_id) is not None:
                raise Conflict(f"job {ref.job_id} ended and was retired to history")
            raise NotFound(f"no job {ref.job_id!r}")
        self.index.apply(*written)
        self.counts["cancelled_total"] += 1
        failpoint("job_manager.cancel.after_write")
        await self.announcer.announce(written[0])
        traces.export_attempt(written[0], now)
        await self.dispatcher.discard(ref.job_id)
        return written[0]

    async def report(self, report: JobReport, via: str) -> JobRecord:
        """``report.<node>``: an agent's word on an attempt; 409 when stale or cancelled.

        ``via`` is the node the report's subject names, which only that node's
        credential may publish to: a report naming another node is refused (403).
        """
        if report.node_id != via:
            self.refused["forged_node"] += 1
            raise Forbidden(f"report on node {via!r}'s subject names node {report.node_id!r}")
        if report.phase not in REPORT_PHASES:
            self.counts["bad_reports"] += 1
            raise BadRequest(f"unknown phase {report.phase!r}; one of {sorted(REPORT_PHASES)}")
        # The record's span is the truth; the agent's header is only checked (a malformed
        # one is counted in health details), never trusted.
        tracing.incoming("report")
        now = time.time()
        decided = 0

        def change(rec: JobRecord) -> JobRecord | None:
            nonlocal decided
            decided += 1
            delay = self.dispatcher.retry_delay(rec.attempt)
            outcome = apply_report(rec, report, now, lease_s=self.config.lease_s, retry_delay=delay)
            if isinstance(outcome, Refusal):
                raise Refused(outcome)
            return outcome

        # The index holds every non-terminal job at its latest known revision: write on
        # it first, and read the bucket only when that copy turns out stale.
        known = self.index.jobs.get(report.job_id)
        try:
            written = await cas_update(self.kv, report.job_id, JobRecord, change, known=known)
        except Refused as exc:
            self.refused[exc.kind] += 1
            raise
        if known is None or decided > 1:
            # Decided on a fresh read: the index had no copy, or a stale one (another
            # instance wrote the record and the watch had not brought it yet).
            self.counts["report_reread"] += 1
        if written is None:  # no such job (404), or a repeated report already applied
            current = await self.read(report.job_id)
            self.counts["duplicate_reports"] += 1
            if not current.announced:
                # The agent repeats a report whose reply it lost, perhaps because the
                # manager died before announcing: the event is still owed, so announce
                # it (the stream drops the copy if the first one had got through).
                self.counts["reannounced"] += 1
                await self.announcer.announce(current)
            return current
        self.index.apply(*written)
        self.timings.observe(known[0] if known else None, written[0], report.phase, now)
        if written[0].state in TERMINAL:
            failpoint("job_manager.report.after_write")
        with tracing.use(traces.attempt_span(written[0])):
            await self._announce(written[0], report.phase, now)
        if report.phase in ("completed", "failed"):
            traces.export_attempt(written[0], now)
        return written[0]

    async def _announce(self, rec: JobRecord, phase: str, now: float) -> None:
        if phase == "started":
            # Not awaited: the record says RUNNING, and the reply need not wait for a
            # wake-up event's ack (the outbox retries it in order and counts a loss).
            self.emit_nowait(
                JobStarted(
                    job_id=rec.job_id, type=rec.spec.type, attempt=rec.attempt, node_id=rec.node_id
                )
            )
        elif phase == "completed":
            self.counts["completed_total"] += 1
            self.dispatcher.forget(rec.job_id)  # the agent acks its message itself
            # After the reply, not before: the record carries the obligation to announce
            # (announced=False) until the event is acknowledged, so a crash meanwhile
            # leaves it to the announcer's sweep or the agent's repeated report.
            self.spawn(functools.partial(self._announce_later, rec))
        elif phase == "failed":
            self.dispatcher.forget(rec.job_id)
            await self.reaper.announce_failure(rec, rec.error, now)

    async def _announce_later(self, rec: JobRecord) -> None:
        async with self._announcing:
            try:
                await self.announcer.announce(rec)
            except (nats.errors.Error, TimeoutError, msgspec.DecodeError) as exc:
                # Still owed by the record: the sweep announces it again.
                self.counts["announce_errors"] += 1
                log.warning("job %s: announcement left to the sweep: %r", rec.job_id, exc)
