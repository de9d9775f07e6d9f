"""Dispatch: choose a pool (asking the node selector only when the node matters,
``selection.py``), then PENDING -> DISPATCHED by compare-and-set, then publish the
JobDispatch into ``P_JOBS`` and await the stream's ack. A submit writes its record
DISPATCHED from the start (having asked the selector first where the node matters)
and only publishes here (:meth:`Dispatcher.send`): one write per job instead of two,
targeted or pooled. The reaper's dispatches (a retry, a paused submit) take the
compare-and-set path.

The record is written before the message is published, so an agent can never report
on an attempt the record does not know. A publish that fails puts the record back to
PENDING (the attempt given back, the fencing token not) for the reaper to try again.
The message id ``<job_id>-<fencing>`` makes a re-sent publish a no-op in the stream.

A dispatch can also be cut between the write and the publish (the job manager
killed there): the record says DISPATCHED and no message exists. The reaper sends
every DISPATCHED record this instance has not seen acknowledged again
(:meth:`Dispatcher.republish_soon`): the same message id, so a message that did
reach the stream is not doubled (the ack says ``duplicate``), and one that did not
is queued now, without spending another attempt.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import msgspec
import nats.errors
from nats.aio.client import Client
from nats.js.api import PubAck
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from services.job_manager import policy, traces
from services.job_manager.config import JobManagerConfig
from services.job_manager.index import JobIndex
from services.job_manager.selection import Selection
from shared.circuit_breaker import CircuitBreaker
from shared.codec import encode
from shared.errors import RequestError
from shared.failpoints import failpoint
from shared.jobs import JobDispatch, JobRecord, JobState
from shared.kv import cas_update, read
from shared.subjects import Subjects

log = logging.getLogger("ringmaster.job_manager.dispatch")


class Dispatcher:
    """Sends PENDING jobs to a pool; remembers each live dispatch's stream sequence."""

    def __init__(
        self,
        *,
        spawn: Callable[[Callable[[], Coroutine[Any, Any, None]]], None],
        nc: Client,
        js: JetStreamContext,
        kv: KeyValue,
        subjects: Subjects,
        config: JobManagerConfig,
        index: JobIndex,
        breaker: CircuitBreaker,
    ) -> None:
        self.nc = nc
        self.js = js
        self.kv = kv
        self.subjects = subjects
        self.config = config
        self.index = index
        self.breaker = breaker
        self.stats: Counter[str] = Counter()
        #: Consecutive failed publishes; above zero the service is DEGRADED.
        self.failing = 0
        #: job_id -> (fencing, stream sequence) of its latest dispatch message.
        self.messages: dict[str, tuple[int, int]] = {}
        #: job_id -> (fencing, time) of a dispatch first queued by a republish: its
        #: dispatch timeout counts from then, not from the record's write.
        self.queued_at: dict[str, tuple[int, float]] = {}
        self._rng = random.Random()
        self._spawn = spawn
        #: Jobs with a dispatch under way: the reaper leaves them alone.
        self.busy: set[str] = set()
        self._slots = anyio.Semaphore(config.dispatch_concurrency)
        self.selection = Selection(
            nc=nc,
            subjects=subjects,
            breaker=breaker,
            timeout=lambda: self.config.select_timeout_s,
            stats=self.stats,
        )

    def soon(self, job_id: str) -> None:
        """Dispatch ``job_id`` in the background unless a dispatch of it is under way."""
        if job_id in self.busy:
            return
        self.busy.add(job_id)

        async def run() -> None:
            try:
                async with self._slots:
                    await self.safely(job_id)
            finally:
                self.busy.discard(job_id)

        self._spawn(run)

    async def safely(
        self, job_id: str, known: tuple[JobRecord, int] | None = None
    ) -> JobRecord | None:
        """:meth:`dispatch`, its failures counted: the job stays PENDING for the reaper."""
        try:
            return await self.dispatch(job_id, known)
        except (nats.errors.Error, TimeoutError, RequestError) as exc:
            self.stats["errors"] += 1
            log.warning("dispatch of %s failed: %r", job_id, exc)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.stats["undecodable_records"] += 1
            log.error("job %s: record does not decode: %s", job_id, exc)
        return None

    async def send_safely(self, new: JobRecord, revision: int, now: float) -> JobRecord | None:
        """:meth:`send`, its failures counted: the reaper republishes or retries."""
        try:
            return await self.send(new, revision, now)
        except (nats.errors.Error, TimeoutError) as exc:
            self.stats["errors"] += 1
            log.warning("dispatch of %s failed: %r", new.job_id, exc)
            return None

    async def dispatch(
        self, job_id: str, known: tuple[JobRecord, int] | None = None
    ) -> JobRecord | None:
        """Dispatch ``job_id`` if it is PENDING; the record written, or None.

        ``known`` is the record and revision the caller just wrote (submit): no read is
        needed to start, and the compare-and-set below proves it is still current.
        """
        found = known or await read(self.kv, job_id, JobRecord)
        if found is None or found[0].state is not JobState.PENDING:
            return None
        rec = found[0]
        req = rec.spec.requirements
        asks = policy.needs_selector(req, failed_on=rec.node_id)
        selected = await self.selection.select(rec) if asks else None
        pool = policy.choose_pool(req, selected)
        now = time.time()
        # The record just read is the first try: no second read before the write.
        written = await cas_update(
            self.kv, job_id, JobRecord, lambda r: policy.dispatched(r, now, pool), known=found
        )
        if written is None:
            return None
        return await self.send(*written, now)

    async def send(self, new: JobRecord, revision: int, now: float) -> JobRecord | None:
        """Publish the dispatch of ``new``, just written DISPATCHED at ``revision``.

        A submit writes its record DISPATCHED at once and comes here directly (one
        write per dispatch, not two). A failed publish gives the attempt back; a cut
        before the publish is the reaper's republish case.
        """
        self.index.apply(new, revision)
        failpoint("job_manager.dispatch.after_write")
        try:
            ack = await self._publish(new, now)
        except (nats.errors.Error, TimeoutError) as exc:
            return await self._give_back(new, exc)
        self.failing = 0
        self.stats["dispatched"] += 1
        self.stats[f"to_{new.pool.partition('.')[0]}"] += 1
        self.messages[new.job_id] = (new.fencing, ack.seq)
        return new

    async def _publish(self, rec: JobRecord, now: float) -> PubAck:
        message = JobDispatch(
            job_id=rec.job_id,
            attempt=rec.attempt,
            fencing=rec.fencing,
            spec=rec.spec,
            dispatched_at=now,
        )
        return await self.js.publish(
            self.subjects.jobs(rec.pool),
            encode(message),
            stream=self.subjects.jobs_stream,
            headers={"Nats-Msg-Id": f"{rec.job_id}-{rec.fencing}", **traces.dispatch_headers(rec)},
        )

    def published(self, rec: JobRecord) -> bool:
        """Whether this instance can vouch that ``rec``'s dispatch is in the stream.

        A dispatch under way counts as published: its own publish is in flight.
        """
        known = self.messages.get(rec.job_id)
        return rec.job_id in self.busy or (known is not None and known[0] == rec.fencing)

    def queued_since(self, rec: JobRecord) -> float | None:
        """When a republish first queued ``rec``'s dispatch, if one did."""
        known = self.queued_at.get(rec.job_id)
        return known[1] if known is not None and known[0] == rec.fencing else None

    def republish_soon(self, rec: JobRecord) -> None:
        """Publish DISPATCHED ``rec``'s message again (same id) in the background."""
        if rec.job_id in self.busy:
            return
        self.busy.add(rec.job_id)

        async def run() -> None:
            try:
                ack = await self._publish(rec, time.time())
            except (nats.errors.Error, TimeoutError) as exc:
                self.stats["republish_failures"] += 1
                log.warning("republish of %s failed: %r", rec.job_id, exc)
                return
            finally:
                self.busy.discard(rec.job_id)
            self.messages[rec.job_id] = (rec.fencing, ack.seq)
            # A duplicate: the first publish did land; otherwise this one saved the attempt.
            self.stats["republish_duplicates" if ack.duplicate else "republished"] += 1
            if not ack.duplicate:
                self.queued_at[rec.job_id] = (rec.fencing, time.time())
                log.warning(
                    "%s: dispatch %d was never published; sent now", rec.job_id, rec.fencing
                )

        self._spawn(run)

    async def _give_back(self, new: JobRecord, exc: BaseException) -> JobRecord | None:
        self.failing += 1
        self.stats["publish_failures"] += 1
        log.warning("dispatch of %s (attempt %d) failed: %r", new.job_id, new.attempt, exc)
        retry_at = time.time() + self.config.retry_base_s
        back = await cas_update(
            self.kv,
            new.job_id,
            JobRecord,
            lambda r: policy.undispatched(r, new.fencing, time.time(), retry_at),
        )
        if back is None:
            return None
        self.index.apply(*back)
        return back[0]

    async def discard(self, job_id: str, fencing: int | None = None) -> None:
        """Delete the dispatch message of ``job_id`` (of ``fencing`` if given) if still queued.

        Best effort: a message an agent already took is refused by fencing anyway; this
        only keeps dead attempts from waiting in a pool (a lost node's is never pulled).
        """
        known = self.messages.get(job_id)
        if known is None or (fencing is not None and known[0] != fencing):
            return
        del self.messages[job_id]
        self.queued_at.pop(job_id, None)
        try:
            await self.js.delete_msg(self.subjects.jobs_stream, known[1])
            self.stats["messages_discarded"] += 1
        except (nats.errors.Error, TimeoutError):
            # Already acked or termed and gone: nothing left to remove.
            self.stats["discard_missed"] += 1

    def forget(self, job_id: str) -> None:
        """The attempt finished normally: the agent acks its message itself."""
        self.messages.pop(job_id, None)
        self.queued_at.pop(job_id, None)

    def retry_delay(self, attempt: int) -> float:
        """The jittered backoff after failed ``attempt``."""
        cfg = self.config
        return policy.backoff(
            attempt, base=cfg.retry_base_s, cap=cfg.retry_max_s, u=self._rng.random()
        )
