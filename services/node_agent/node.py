"""The real node: pulls a job whenever a slot is free and runs each in its own task.

Its one intake task pulls from the node's pools while the floors hold and a slot is
free; each job then runs in a task of its own (runner.py). ``stop`` kills every job
with a reason (handed back on drain, killed on stop), after which the intake ends,
the jobs report, the pools are closed and a last NodeInfo says the node stopped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

import anyio
import msgspec
from nats.aio.msg import Msg

from services.node_agent import policy
from services.node_agent.assignment import GpuGate
from services.node_agent.info import NodeParts, node_info
from services.node_agent.job import CANCELLED, Kill, RunningJob, settle
from services.node_agent.runner import JobRunner
from services.node_agent.slots import SlotGaps, Utilization
from shared.codec import decode
from shared.jobs import JobDispatch, NodeInfo

log = logging.getLogger("ringmaster.node_agent.node")

#: Longest wait for a free slot while the node is full or refusing work: a job's end
#: wakes it at once; this only bounds how late a floor or intake change is seen.
IDLE_WAIT_S = 1.0
#: Seconds over which NodeInfo's utilization is measured.
UTILIZATION_WINDOW_S = 60.0

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
        #: Busy slots over the last minute, for NodeInfo and the dashboard.
        self.utilization = Utilization(UTILIZATION_WINDOW_S, time.monotonic())
        self.gaps = SlotGaps()
        own = self.pools.pools[0].subject
        self.gate = GpuGate(node_id, own, runner.reporter, self.stats, self.config)
        self.gpus = self.gate.gpus

    def free(self) -> int:
        """Slots free for new work now (none while a job waits for GPUs)."""
        _, floors, reason = self.view()
        if self.gate.parked is not None:
            return 0
        open_ = self.intake_open and not reason and self._stop is None
        # A job whose process ended holds no slot while it uploads and reports.
        busy = sum(1 for job in self.running.values() if not job.exited)
        return policy.free_slots(self.config().capacity, busy, floors, intake_open=open_)

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
            gpus=self.gpus.annotate(sample.gpus),
            floors=floors,
            free=self.free(),
            running=sorted({j.dispatch.job_id for j in self.running.values()}),
            interval_s=self.config().beacon_interval,
            reason=reason or why,
            utilization=self.utilization.share(self.config().capacity, time.monotonic()),
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
        self._notify()

    def _started(self) -> None:
        self.gaps.started(time.monotonic())

    def _ended(self, key: str) -> None:
        self.gpus.release(key)  # the process is gone: so is its use of the devices
        self.gaps.freed(time.monotonic(), queued=self.pools.held() > 0)
        self._notify()

    def _notify(self) -> None:
        busy = sum(1 for job in self.running.values() if not job.exited)
        self.utilization.set(busy, time.monotonic())
        self._changed.set()
        self._changed = anyio.Event()

    async def run(self) -> None:
        """Pull and start jobs until stopped; then wind down (always).

        While every slot is busy the node keeps pulling (``prefetch``) and holds what
        arrives, so the moment a job's process ends the next one starts, with no pull
        in between; the best held job goes first (see ``Pools``).
        """
        try:
            await self.pools.open()
            while self._stop is None:
                if self.gate.parked is not None:
                    await self._start_parked()
                if self.free() > 0:
                    msg = await self.pools.fetch_one(self.config().fetch_timeout_s)
                    if msg is not None:
                        await self._take(msg)
                    continue
                self.pools.prefetch = self._prefetching()
                if self.pools.prefetch:
                    self.pools.start_pulls()
                else:
                    await self.pools.give_back()
                await self._wait_for_slot()
        finally:
            self.pools.prefetch = False
            await self._wind_down()

    def _prefetching(self) -> bool:
        _, floors, reason = self.view()
        open_ = self.intake_open and self._stop is None and not reason
        return open_ and floors.accepting and self.config().prefetch

    async def _wait_for_slot(self) -> None:
        """Until a slot frees; held dispatches get in-progress acks meanwhile."""
        cfg = self.config()
        # Every third of the ack wait, like a running job's in-progress acks.
        holding = self.pools.prefetch or self.gate.parked is not None
        wait = cfg.ack_wait_s / 3 if holding else IDLE_WAIT_S
        with anyio.move_on_after(wait) as scope:
            await self._changed.wait()
        if scope.cancelled_caught and self.pools.held():
            await self.pools.keep_leases()
        await self.gate.keep_lease()

    async def _start_parked(self) -> None:
        """Start the job waiting for GPUs once they are free; give it back if stopping."""
        sample, floors, reason = self.view()
        open_ = self.intake_open and self._stop is None and floors.accepting and not reason
        if (ready := await self.gate.resume(open_, sample.gpus)) is not None:
            self._start(*ready)

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
        self.gate.reporter.follow(d, msg.headers)
        key = f"{d.job_id}-{d.attempt}"
        if key in self.running:
            # Redelivered while it runs here: the newest delivery is the one to ack.
            self.stats.redeliveries += 1
            self.running[key].msg = msg
            return
        # Refused (never fits), parked (waits for GPUs; no other work meanwhile) or run.
        devices = await self.gate.admit(msg, d, self.view()[0].gpus)
        if devices is not None:
            self._start(msg, d, devices)

    def _start(self, msg: Msg, d: JobDispatch, devices: tuple[int, ...]) -> None:
        key = f"{d.job_id}-{d.attempt}"
        job = self.running[key] = RunningJob(
            dispatch=d,
            msg=msg,
            key=key,
            gpus=devices,
            on_start=self._started,
            on_exit=partial(self._ended, key),
        )
        self._notify()
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
            self.gpus.release(job.key)
            self.running.pop(job.key, None)
            self._notify()
            self.on_change()

    async def _wind_down(self) -> None:
        try:
            with anyio.move_on_after(self.config().shutdown_timeout, shield=True):
                # Jobs were killed by stop(); they report and leave on their own.
                await self.gate.give_back()
                while self.running:
                    await self._changed.wait()
                await self.pools.close()
                await self.publisher.publish(self.info(reason="stopped"), force_kv=True)
        finally:
            self.finished.set()
            self.on_change()
