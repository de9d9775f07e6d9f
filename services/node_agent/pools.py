"""The job pools a node pulls from: its own and those of the capabilities it serves.

Each pool is a durable pull consumer on the work-queue stream ``P_JOBS``: ``node-<id>``
on ``P.jobs.node.<id>`` (this node alone) and ``cap-<capability>`` on
``P.jobs.cap.<capability>``, one consumer shared by every agent serving that
capability, so the first free agent takes the job. Consumers are created idempotently
with one config, and re-bound when a pull says they are gone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import anyio
import nats.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext

from services.node_agent.policy import pool_timeouts
from services.node_agent.reports import AgentStats
from shared.subjects import Subjects

log = logging.getLogger("ringmaster.node_agent.pools")


def consumer_config(*, ack_wait_s: float, max_deliver: int) -> ConsumerConfig:
    """The config of every job consumer (the same for all agents sharing one)."""
    return ConsumerConfig(
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ack_wait_s,
        max_deliver=max_deliver,
    )


@dataclass
class Pool:
    """One pool: its name (``node.<id>``, ``cap.<c>``), durable and subscription."""

    name: str
    durable: str
    subject: str
    sub: JetStreamContext.PullSubscription | None = None


class Pools:
    """Pulls one job at a time from a node's pools, its own pool first."""

    def __init__(
        self,
        js: JetStreamContext,
        subjects: Subjects,
        node_id: str,
        capabilities: list[str],
        *,
        ack_wait_s: float,
        max_deliver: int,
        stats: AgentStats,
    ) -> None:
        self.js = js
        self.stream = subjects.jobs_stream
        self.stats = stats
        self.ack_wait_s = ack_wait_s
        self.max_deliver = max_deliver
        names = [(f"node.{node_id}", f"node-{node_id}")]
        names += [(f"cap.{c}", f"cap-{c}") for c in capabilities]
        self.pools = [Pool(name, durable, subjects.jobs(name)) for name, durable in names]
        self._turn = 0

    async def _bind(self, pool: Pool) -> bool:
        config = consumer_config(ack_wait_s=self.ack_wait_s, max_deliver=self.max_deliver)
        try:
            pool.sub = await self.js.pull_subscribe(
                pool.subject, durable=pool.durable, stream=self.stream, config=config
            )
        except (nats.errors.Error, OSError) as exc:
            self.stats.fetch_errors += 1
            self.stats.last_error = f"binding {pool.durable}: {exc!r}"
            return False
        return True

    async def open(self) -> None:
        """Create or bind every pool's consumer (failures are retried by ``fetch_one``)."""
        for pool in self.pools:
            await self._bind(pool)

    def _order(self) -> list[Pool]:
        # The node's own pool first (jobs pinned here have nowhere else to go); the
        # capability pools take turns being next, so none is starved.
        caps = self.pools[1:]
        if caps:
            self._turn = (self._turn + 1) % len(caps)
            caps = caps[self._turn :] + caps[: self._turn]
        return [self.pools[0], *caps]

    async def fetch_one(self, timeout_s: float) -> Msg | None:
        """One job message from the first pool that has one, or None after ``timeout_s``."""
        per_pool = pool_timeouts(timeout_s, len(self.pools))
        for pool in self._order():
            if pool.sub is None and not await self._bind(pool):
                await anyio.sleep(per_pool)
                continue
            assert pool.sub is not None
            try:
                msgs = await pool.sub.fetch(1, timeout=per_pool)
            except nats.errors.TimeoutError:
                continue
            except (nats.errors.Error, OSError) as exc:
                # The consumer may be gone (deleted, server restarted without it): re-bind.
                self.stats.fetch_errors += 1
                self.stats.rebinds += 1
                self.stats.last_error = f"pulling {pool.durable}: {exc!r}"
                log.info("pull from %s failed (%r); re-binding", pool.durable, exc)
                await self._unsubscribe(pool)
                await anyio.sleep(per_pool)
                continue
            if msgs:
                return msgs[0]
        return None

    async def _unsubscribe(self, pool: Pool) -> None:
        sub, pool.sub = pool.sub, None
        if sub is None:
            return
        try:
            await sub.unsubscribe()
        except (nats.errors.Error, OSError) as exc:
            log.debug("unsubscribing %s: %r", pool.durable, exc)

    async def close(self) -> None:
        """Stop pulling: unsubscribe (the durable consumers stay on the server)."""
        for pool in self.pools:
            await self._unsubscribe(pool)
