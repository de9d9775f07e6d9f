"""The job pools a node pulls from: its own and those of the capabilities it serves.

Each pool is a durable pull consumer on the work-queue stream ``P_JOBS``: ``node-<id>``
on ``P.jobs.node.<id>`` (this node alone) and ``cap-<capability>`` on
``P.jobs.cap.<capability>``, one consumer shared by every agent serving that
capability, so the first free agent takes the job. Consumers are created idempotently
with one config, and re-bound when a pull says they are gone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
import msgspec
import nats.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext

from services.node_agent.job import settle
from services.node_agent.reports import AgentStats
from shared.subjects import Subjects, pool_durable

log = logging.getLogger("ringmaster.node_agent.pools")

#: Pulls a consumer keeps waiting at once (set when the consumer is created).
MAX_WAITING = 16_384


def consumer_config(*, ack_wait_s: float, max_deliver: int) -> ConsumerConfig:
    """The config of every job consumer (the same for all agents sharing one)."""
    return ConsumerConfig(
        # A capability pool's consumer has one pull waiting per node serving it; the
        # server's default of 512 waiting pulls would refuse the pulls of a larger cluster.
        max_waiting=MAX_WAITING,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ack_wait_s,
        max_deliver=max_deliver,
    )


class _SpecPriority(msgspec.Struct):
    priority: int = 0


class _DispatchPriority(msgspec.Struct):
    spec: _SpecPriority = msgspec.field(default_factory=_SpecPriority)


_priority_decoder = msgspec.json.Decoder(_DispatchPriority)


def dispatch_priority(data: bytes) -> int:
    """A dispatch's ``spec.priority`` (0 when it does not decode: the node refuses it)."""
    try:
        return _priority_decoder.decode(data).spec.priority
    except (msgspec.DecodeError, msgspec.ValidationError):
        return 0


@dataclass
class Pool:
    """One pool: its name (``node.<id>``, ``cap.<c>``), durable and subscription."""

    name: str
    durable: str
    subject: str
    sub: JetStreamContext.PullSubscription | None = None
    #: A message pulled and not yet taken (at most one per pool).
    held: Msg | None = None
    #: Whether this pool's pull task runs.
    pulling: bool = False


class Pools:
    """Pulls jobs for one node: a pull kept waiting on every pool while the node wants work.

    Taking turns with short fetches left a dispatch in a pull the node had stopped
    reading (nats-py asks the server to expire a pull only just before its own timeout,
    so on a loaded machine the server still holds it after the client gave up), where
    it waited until the node came back to that pool. Instead each pool has one pull
    task that re-issues its pull as long as someone calls :meth:`fetch_one`; a message
    it gets is held (one per pool) until taken, or given back (:meth:`give_back`) when
    the node stops wanting work.

    While every slot is busy the node may keep the pulls going (``prefetch``): what
    arrives is held as the next jobs, their leases kept with in-progress acks, and the
    moment a slot frees the best held one starts: the highest ``spec.priority``, then
    the node's own pool, then the capability pools in turn.
    """

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
        spawn: Callable[[Callable[[], Coroutine[Any, Any, None]]], None],
        pull_s: float = 1.0,
    ) -> None:
        self.js = js
        self.stream = subjects.jobs_stream
        self.stats = stats
        self.ack_wait_s = ack_wait_s
        self.max_deliver = max_deliver
        self.pull_s = pull_s
        names = [f"node.{node_id}", *(f"cap.{c}" for c in capabilities)]
        self.pools = [Pool(name, pool_durable(name), subjects.jobs(name)) for name in names]
        self._spawn = spawn
        self._turn = 0
        self._waiting = 0
        self._wanted_at = 0.0
        self._arrived = anyio.Event()
        self._closed = False
        #: Keep pulling while no one waits in fetch_one (the node is full and prefetches).
        self.prefetch = False

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
        """Create or bind every pool's consumer (failures are retried by the pulls)."""
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

    def _take_held(self) -> Msg | None:
        best: Pool | None = None
        best_priority = 0
        for pool in self._order():
            if pool.held is not None:
                priority = dispatch_priority(pool.held.data)
                if best is None or priority > best_priority:
                    best, best_priority = pool, priority
        if best is None:
            return None
        msg, best.held = best.held, None
        return msg

    def held(self) -> int:
        """Messages pulled and not taken yet."""
        return sum(1 for pool in self.pools if pool.held is not None)

    def start_pulls(self) -> None:
        """Start the pull task of every pool that holds nothing and is not pulling."""
        for pool in self.pools:
            if not pool.pulling and pool.held is None and not self._closed:
                pool.pulling = True
                self._spawn(partial(self._pull, pool))

    async def keep_leases(self) -> None:
        """In-progress ack every held message, so its ack wait does not run out."""
        for pool in self.pools:
            if pool.held is not None:
                await settle(pool.held.in_progress, self.stats, "in_progress")

    async def fetch_one(self, timeout_s: float) -> Msg | None:
        """One job message from the pools (the node's own first), or None after ``timeout_s``."""
        self._waiting += 1
        try:
            self.start_pulls()
            with anyio.move_on_after(timeout_s):
                while (msg := self._take_held()) is None:
                    self._arrived = anyio.Event()
                    await self._arrived.wait()
                return msg
            return self._take_held()
        finally:
            self._waiting -= 1
            self._wanted_at = time.monotonic()

    def _wanted(self) -> bool:
        # Someone waits, or waited within one pull: a node between two fetch_one calls
        # (it is taking a job, or its loop is doing its chores) still wants work.
        if self.prefetch or self._waiting > 0:
            return True
        return time.monotonic() - self._wanted_at < self.pull_s

    async def _pull(self, pool: Pool) -> None:
        """Keep one pull waiting on ``pool`` while work is wanted and nothing is held."""
        try:
            while not self._closed and pool.held is None and self._wanted():
                if pool.sub is None and not await self._bind(pool):
                    await anyio.sleep(self.pull_s)
                    continue
                assert pool.sub is not None
                try:
                    msgs = await pool.sub.fetch(1, timeout=self.pull_s)
                except nats.errors.TimeoutError:
                    continue
                except (nats.errors.Error, OSError) as exc:
                    if self._closed:
                        return
                    # The consumer may be gone (deleted, server restarted without it).
                    self.stats.fetch_errors += 1
                    self.stats.rebinds += 1
                    self.stats.last_error = f"pulling {pool.durable}: {exc!r}"
                    log.info("pull from %s failed (%r); re-binding", pool.durable, exc)
                    await self._unsubscribe(pool)
                    await anyio.sleep(self.pull_s)
                    continue
                if msgs:
                    pool.held = msgs[0]
                    if self._waiting == 0:
                        self.stats.prefetched += 1  # held ahead of a free slot
                    self._arrived.set()
        finally:
            pool.pulling = False

    async def give_back(self) -> None:
        """Nak what was pulled and not taken (the node stopped wanting work): others run it."""
        for pool in self.pools:
            msg, pool.held = pool.held, None
            if msg is not None:
                self.stats.given_back += 1
                await settle(msg.nak, self.stats, "nak")

    async def _unsubscribe(self, pool: Pool) -> None:
        sub, pool.sub = pool.sub, None
        if sub is None:
            return
        try:
            await sub.unsubscribe()
        except (nats.errors.Error, OSError) as exc:
            log.debug("unsubscribing %s: %r", pool.durable, exc)

    async def close(self) -> None:
        """Stop pulling, give back what is held, unsubscribe (the consumers stay)."""
        self._closed = True
        await self.give_back()
        for pool in self.pools:
            await self._unsubscribe(pool)
