"""The real node: pulls a job whenever a slot is free and runs each in its own task.

Its one intake task pulls from the node's pools while the floors hold and a slot is
free; each job then runs in a task of its own (runner.py). ``stop`` kills every job
with a reason (handed back on drain, killed on stop), after which the intake ends,
the jobs report, the pools are closed and a last NodeInfo says the node stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

import anyio
import msgspec
from nats.aio.msg import Msg

from services.node_agent import policy
from services.node_agent.info import NodeParts, node_info
from services.node_agent.job import CANCELLED, Kill, RunningJob, settle
from services.node_agent.runner import JobRunner
from shared.codec import decode
from shared.jobs import JobDispatch, NodeInfo

log = logging.getLogger("ringmaster.node_agent.node")

#: Seconds between checks for a free slot while the node is full or refusing work.
IDLE_POLL_S = 0.1

Spawn = Callable[[Callable[[], Coroutine[Any, Any, None]]], None]


class RealNode:
    """This host as a node: its pools, its running jobs and its NodeInfo."""

    def __init__(self, node_id: str, parts: NodeParts, runner: JobRunner, spawn: Spawn) -> None:
        self.node_id = node_id
        self.hostname, self.version = parts.hostname, parts.version
        self.config, self.view = parts.config, parts.view
        self.pools, self.runner, self.publisher = parts.pools, runner, parts.publisher
        self.stats, self.spawn, self.on_change = parts.stats, spawn, parts.on_change
        self.running: dict[str, RunningJob] = {}
        self.intake_open = True
        self.finished = anyio.Event()
        self._stop: Kill | None = None
        self._changed = anyio.Event()

    def free(self) -> int:
        """Slots free for new work now."""
        _, floors, reason = self.view()
        open_ = self.intake_open and not reason and self._stop is None
        return policy.free_slots(
            self.config().capacity, len(self.running), floors, intake_open=open_
        )

    def info(self, reason: str = "") -> NodeInfo:
        """This node's NodeInfo now."""
        sample, floors, why = self.view()
        if self._stop is not None or not self.intake_open:
            why = why or "stopping"
        return node_info(
            node_id=self.node_id,
            hostname=self.hostname,
            version=self.version,
            config=self.config(),
            sample=sample,
            floors=floors,
            free=self.free(),
            running=sorted({j.dispatch.job_id for j in self.running.values()}),
            interval_s=self.config().beacon_interval,
            reason=reason or why,
        )

    def cancel(self, job_id: str) -> None:
        """Kill every attempt of ``job_id`` running here, at once."""
        for job in list(self.running.values()):
            if job.dispatch.job_id == job_id:
                log.info("job %s cancelled: killing its process group", job.key)
                job.kill(CANCELLED)

    def stop(self, why: Kill) -> None:
        """Kill every running job for ``why`` and end the intake."""
        self._stop = self._stop or why
        self.intake_open = False
        for job in list(self.running.values()):
            job.kill(why)

    async def run(self) -> None:
        """Pull and start jobs until stopped; then wind down (always)."""
        try:
            await self.pools.open()
            while self._stop is None:
                if self.free() <= 0:
                    await self.pools.give_back()
                    await anyio.sleep(IDLE_POLL_S)
                    continue
                msg = await self.pools.fetch_one(self.config().fetch_timeout_s)
                if msg is not None:
                    await self._take(msg)
        finally:
            await self._wind_down()

    async def _take(self, msg: Msg) -> None:
        if self.free() <= 0:
            # Came in after intake closed or a floor fell: straight back to the pool.
            await settle(msg.nak, self.stats, "nak")
            return
        try:
            d = decode(JobDispatch, msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.stats.invalid_dispatches += 1
            self.stats.last_error = f"invalid dispatch: {exc}"
            await settle(msg.term, self.stats, "term")
            return
        key = f"{d.job_id}-{d.attempt}"
        if key in self.running:
            # Redelivered while it runs here: the newest delivery is the one to ack.
            self.stats.redeliveries += 1
            self.running[key].msg = msg
            return
        job = self.running[key] = RunningJob(dispatch=d, msg=msg, key=key)
        self.spawn(partial(self._run, job))

    async def _run(self, job: RunningJob) -> None:
        try:
            await self.runner.run(job)
        except Exception as exc:  # one job's bug must not end the agent
            # Counted and logged; the dispatch stays unacked, so the lease and the
            # redelivery bring the job back through the job manager.
            self.stats.job_errors += 1
            self.stats.last_error = f"job {job.key}: {exc!r}"
            log.exception("job %s: unexpected error", job.key)
        finally:
            self.running.pop(job.key, None)
            self._changed.set()
            self._changed = anyio.Event()
            self.on_change()

    async def _wind_down(self) -> None:
        try:
            with anyio.move_on_after(self.config().shutdown_timeout, shield=True):
                # Jobs were killed by stop(); they report and leave on their own.
                while self.running:
                    await self._changed.wait()
                await self.pools.close()
                await self.publisher.publish(self.info(reason="stopped"), force_kv=True)
        finally:
            self.finished.set()
            self.on_change()
