"""Dispatches whose message their pool will never deliver, found from the pool's consumer.

A DISPATCHED record stands for a message in ``P_JOBS`` that an agent will take. The
stream can lose that message behind the record's back: after a nats-server restart a
pool's consumer has been seen with its acknowledgement floor past a message that the
work-queue stream still held, so the message was never delivered again, and a pooled
dispatch waits ``pooled_dispatch_timeout_s`` (an hour) before the reaper fails it.

The consumer says when that happened. A message published well before its pool's
consumer reports nothing waiting (``num_pending``) and nothing in flight
(``num_ack_pending``) has been delivered and acknowledged, or will never be delivered.
An agent reports ``started`` before it acknowledges, so a record still DISPATCHED then
names a lost message. The record is judged lost only when two looks at the consumer,
``check_s`` apart, both found the pool idle, and the reaper fails the attempt as
``dispatch lost`` and retries it: fencing refuses the old attempt should its message
ever come back.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable

import nats.errors
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from shared.jobs import JobRecord, JobState
from shared.subjects import pool_durable

log = logging.getLogger("ringmaster.job_manager.orphans")

#: The reason the reaper gives for an attempt whose message was lost.
DISPATCH_LOST = "dispatch lost"


def suspects(records: Iterable[JobRecord], now: float, after_s: float) -> dict[str, list[str]]:
    """Job ids of dispatches older than ``after_s``, by pool (the candidates to check)."""
    found: dict[str, list[str]] = {}
    for rec in records:
        if rec.state is JobState.DISPATCHED and rec.pool and now - rec.updated_at > after_s:
            found.setdefault(rec.pool, []).append(rec.job_id)
    return found


def lost(previous: set[str], idle_now: set[str]) -> set[str]:
    """The suspects found in an idle pool on two looks in a row."""
    return previous & idle_now


class OrphanWatch:
    """Looks at the consumers of pools holding old dispatches, every ``check_s``."""

    def __init__(
        self, js: JetStreamContext, stream: str, *, after_s: float, check_s: float
    ) -> None:
        self.js = js
        self.stream = stream
        self.after_s = after_s
        self.check_s = check_s
        self.stats: Counter[str] = Counter()
        self._idle: set[str] = set()
        self._checked_at = 0.0

    async def check(self, records: Iterable[JobRecord], now: float) -> set[str]:
        """Job ids whose dispatch is lost (seen in an idle pool twice running)."""
        if time.monotonic() - self._checked_at < self.check_s:
            return set()
        self._checked_at = time.monotonic()
        idle: set[str] = set()
        for pool, job_ids in suspects(records, now, self.after_s).items():
            if await self._idle_pool(pool):
                idle.update(job_ids)
        found, self._idle = lost(self._idle, idle), idle
        self.stats["lost"] += len(found)
        return found

    async def _idle_pool(self, pool: str) -> bool:
        try:
            info = await self.js.consumer_info(self.stream, pool_durable(pool), timeout=1.0)
        except NotFoundError:
            # No agent ever bound this pool: nothing can have been taken from it.
            self.stats["no_consumer"] += 1
            return False
        except (nats.errors.Error, TimeoutError) as exc:
            self.stats["errors"] += 1
            log.info("consumer of pool %s not read: %r", pool, exc)
            return False
        self.stats["checks"] += 1
        return not (info.num_pending or 0) and not (info.num_ack_pending or 0)
