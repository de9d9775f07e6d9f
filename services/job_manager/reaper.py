"""The one reaper of the cluster, and the safety net for messages past ``max_deliver``.

Only the job manager instance holding the KV lease ``job_manager-reaper`` reaps, so two
instances never judge the same job. Each tick it walks the in-memory index of
non-terminal jobs (never the whole bucket) and, per ``policy.reap_action``, dispatches
PENDING jobs whose retry time came, or fails the live attempt of a job whose lease
lapsed, whose dispatch was never started, or whose node went silent. A failed attempt
is retried with backoff up to ``max_attempts``, then the job FAILS for good.

Every failure is a compare-and-set that re-checks the rule on the fresh record, so a
report that lands between the decision and the write wins and nothing is failed twice.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import msgspec
import nats.errors
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

from services.job_manager import policy, traces
from services.job_manager.config import JobManagerConfig
from services.job_manager.dispatcher import Dispatcher
from services.job_manager.index import JobIndex
from shared import tracing
from shared.codec import decode
from shared.events import EventData, JobFailed, JobRetried
from shared.failpoints import failpoint
from shared.jobs import JobDispatch, JobRecord, JobState
from shared.kv import Lease, cas_update, read
from shared.liveness import LivenessRule
from shared.subjects import Subjects

log = logging.getLogger("ringmaster.job_manager.reaper")

LEASE_KEY = "job_manager-reaper"


def max_deliveries_subject(stream: str) -> str:
    """The server's advisory for messages of ``stream`` past a consumer's ``max_deliver``."""
    # A JetStream system subject, not one of ours: Subjects has no entry for it.
    return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.>"


class MaxDeliveries(msgspec.Struct, frozen=True, kw_only=True):
    """``io.nats.jetstream.advisory.v1.max_deliver`` (the fields used here)."""

    stream: str
    consumer: str
    stream_seq: int
    deliveries: int = 0


class Reaper:
    """Reaps attempts and retries jobs; announces every failed attempt."""

    def __init__(
        self,
        *,
        kv: KeyValue,
        js: JetStreamContext,
        leases: KeyValue,
        holder: str,
        subjects: Subjects,
        config: JobManagerConfig,
        index: JobIndex,
        dispatcher: Dispatcher,
        emit: Callable[[EventData], Awaitable[bool]],
        counts: Counter[str],
        announce: Callable[[JobRecord], Awaitable[bool]],
    ) -> None:
        self.kv = kv
        self.js = js
        self.subjects = subjects
        self.config = config
        self.index = index
        self.dispatcher = dispatcher
        self.emit = emit
        self.announce = announce
        self.counts = counts
        self._leases = leases
        self.lease = Lease(leases, LEASE_KEY, holder, config.reaper_lease_ttl_s)
        self.reaped: Counter[str] = Counter()
        #: A node silent for ``node_lost_after_s`` is LOST, and its attempts fail.
        self.node_rule = LivenessRule(lost_after_s=config.node_lost_after_s)
        self.stopped = False

    def _action(self, rec: JobRecord, now: float) -> policy.Reap | None:
        cfg = self.config
        node = rec.node_id
        return policy.reap_action(
            rec,
            now,
            bool(node) and self.index.node_lost(node, self.node_rule),
            dispatch_timeout_s=cfg.dispatch_timeout_s,
            pooled_dispatch_timeout_s=cfg.pooled_dispatch_timeout_s,
            lease_s=cfg.lease_s,
            agent=self.index.agents.get(node) if node else None,
            published=self.dispatcher.published(rec),
            queued_at=self.dispatcher.queued_since(rec),
            republish_after_s=cfg.republish_after_s,
            submit_grace_s=policy.SUBMIT_GRACE_S,
        )

    async def tick(self) -> None:
        """One pass over the non-terminal jobs, if this instance holds the lease."""
        if self.stopped or not await self.lease.acquire_or_renew():
            return
        now = time.time()
        for rec in list(self.index.records()):
            action = self._action(rec, now)
            if action is None:
                continue
            if action.action == "dispatch":
                self.dispatcher.soon(rec.job_id)
                continue
            if action.action == "republish":
                self.dispatcher.republish_soon(rec)
                continue

            def still(r: JobRecord, reason: str = action.reason) -> bool:
                again = self._action(r, now)
                return again is not None and again.reason == reason

            if await self.fail(rec.job_id, rec.fencing, action.reason, still):
                self.reaped[action.reason] += 1

    async def release(self) -> None:
        """Give the reaper lease up (at stop), so another instance takes over at once."""
        self.stopped = True  # the loop runs on until the service cancels it
        revision, self.lease.revision = self.lease.revision, None
        if revision is None:
            return
        try:
            await self._leases.delete(LEASE_KEY, last=revision)
        except (nats.errors.Error, TimeoutError) as exc:
            # Someone renewed it meanwhile, or NATS is gone: it lapses after its ttl.
            log.info("reaper lease not released: %r", exc)

    async def fail(
        self, job_id: str, fencing: int, reason: str, still: Callable[[JobRecord], bool]
    ) -> JobRecord | None:
        """Fail attempt ``fencing`` of ``job_id`` if ``still`` holds on the fresh record."""
        now = time.time()

        def change(r: JobRecord) -> JobRecord | None:
            if r.fencing != fencing or not policy.allowed(r.state, "reap") or not still(r):
                return None
            # The agent died, not the job: the next attempt need not wait for anything.
            delay = 0.0 if reason == policy.AGENT_RESTARTED else None
            if delay is None:
                delay = self.dispatcher.retry_delay(r.attempt)
            return policy.fail_attempt(r, now, reason, delay)

        written = await cas_update(self.kv, job_id, JobRecord, change)
        if written is None:
            await self._refresh(job_id)
            return None
        self.index.apply(*written)
        failpoint("job_manager.reaper.after_write")
        await self.dispatcher.discard(job_id, fencing)
        with tracing.use(traces.attempt_span(written[0])):
            await self.announce_failure(written[0], reason, now)
        traces.export_attempt(written[0], now)
        return written[0]

    async def _refresh(self, job_id: str) -> None:
        # The rule no longer held: keep the index in step with what the bucket says.
        current = await read(self.kv, job_id, JobRecord)
        if current is None:
            self.index.forget(job_id)
        else:
            self.index.apply(*current)

    async def announce_failure(self, rec: JobRecord, error: str, now: float) -> None:
        """JOB_FAILED for the attempt that failed (at ``now``), then JOB_RETRIED if one comes."""
        permanent = rec.state is JobState.FAILED
        if permanent:
            # The end of the job: owed by the record until acknowledged (announce.py).
            self.counts["failed_total"] += 1
            await self.announce(rec)
            return
        await self.emit(
            JobFailed(
                job_id=rec.job_id,
                type=rec.spec.type,
                attempt=rec.attempt,
                node_id=rec.node_id,
                error=error,
                permanent=False,
            )
        )
        self.counts["retried_total"] += 1
        delay = max(0.0, (rec.retry_at or now) - now)
        await self.emit(
            JobRetried(job_id=rec.job_id, attempt=rec.attempt + 1, delay_s=delay, reason=error)
        )

    async def on_max_deliveries(self, advisory: MaxDeliveries) -> None:
        """A dispatch went past its consumer's ``max_deliver``: fail that attempt, drop it."""
        self.counts["max_deliveries"] += 1
        stream = self.subjects.jobs_stream
        try:
            raw = await self.js.get_msg(stream, advisory.stream_seq)
        except NotFoundError:
            self.counts["max_deliveries_gone"] += 1
            return
        try:
            dispatch = decode(JobDispatch, raw.data or b"")
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.counts["max_deliveries_unreadable"] += 1
            dispatch = None
        if dispatch is not None:
            reason = (
                f"not acknowledged after {advisory.deliveries} deliveries "
                f"(consumer {advisory.consumer})"
            )
            await self.fail(dispatch.job_id, dispatch.fencing, reason, lambda _: True)
        try:
            await self.js.delete_msg(stream, advisory.stream_seq)
        except (nats.errors.Error, TimeoutError):
            self.counts["max_deliveries_gone"] += 1
