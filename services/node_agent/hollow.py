"""Hollow nodes: simulated nodes for scale tests, many in one process.

Each hollow node has its own node_id, NodeInfo and pool consumers, and speaks the real
protocol (started, progress heartbeats, completed, acks); its jobs "run" for
``spec.args["duration_s"]`` (default 0) and complete with an empty result (a GPU job's
names its ``cuda_visible_devices``: each hollow node assigns the declared GPUs as the
real node does). To stay cheap, all of them share the agent's one connection and
resource sample; each is one task that finishes due jobs, keeps leases, publishes
NodeInfo and pulls.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import msgspec
from nats.aio.msg import Msg

from services.node_agent import policy
from services.node_agent.assignment import GpuGate, visible_devices_env
from services.node_agent.info import NodeParts, node_info
from services.node_agent.job import (
    CANCELLED,
    DEFER_S,
    STOPPING,
    SUPERSEDED,
    HollowJob,
    Kill,
    settle,
)
from services.node_agent.reports import Outcome, Reporter
from shared.codec import decode
from shared.jobs import JobDispatch, JobReport, JobResult, NodeInfo


class HollowNode:
    """One simulated node, driven by one task (:meth:`run`)."""

    def __init__(self, node_id: str, parts: NodeParts, reporter: Reporter) -> None:
        self.node_id = node_id
        self.hostname, self.version = parts.hostname, parts.version
        self.config, self.view = parts.config, parts.view
        self.pools, self.reporter, self.publisher = parts.pools, reporter, parts.publisher
        self.stats, self.on_change = parts.stats, parts.on_change
        self.interval_s = self.config().beacon_interval
        self.running: dict[str, HollowJob] = {}
        self.intake_open = True
        self.finished = anyio.Event()
        self._stop: Kill | None = None
        self._wake = anyio.Event()
        self._next_info = 0.0
        own = self.pools.pools[0].subject
        self.gate = GpuGate(node_id, own, reporter, self.stats, self.config)

    def free(self) -> int:
        """Slots free for new work now."""
        _, floors, reason = self.view()
        # A job waiting for GPUs closes the intake until it starts.
        open_ = self.intake_open and not reason and self._stop is None and not self.gate.parked
        return policy.free_slots(
            self.config().capacity, len(self.running), floors, intake_open=open_
        )

    def info(self, reason: str = "") -> NodeInfo:
        """This node's NodeInfo now."""
        sample, floors, why = self.view()
        return node_info(
            node_id=self.node_id,
            hostname=self.hostname,
            version=self.version,
            config=self.config(),
            sample=sample,
            gpus=self.gate.gpus.annotate(sample.gpus),
            floors=floors,
            free=self.free(),
            running=[j.dispatch.job_id for j in self.running.values()],
            interval_s=self.interval_s,
            hollow=True,
            reason=reason or why,
        )

    def cancel(self, job_id: str) -> None:
        """Stop every attempt of ``job_id`` here (the loop acks it without a report)."""
        for job in self.running.values():
            if job.dispatch.job_id == job_id:
                job.killed = job.killed or CANCELLED
                self._wake.set()

    def stop(self, why: Kill) -> None:
        """End the loop: running jobs are stopped and reported as ``why`` says."""
        self._stop = self._stop or why
        self._wake.set()

    def _report(self, d: JobDispatch, phase: str, **fields: Any) -> JobReport:
        return JobReport(
            job_id=d.job_id,
            attempt=d.attempt,
            fencing=d.fencing,
            node_id=self.node_id,
            phase=phase,
            **fields,
        )

    async def run(self) -> None:
        """Pull, "run" and report until stopped; then wind down (always)."""
        try:
            await self.pools.open()
            while self._stop is None:
                await self._tick(time.monotonic())
                wait = max(0.0, self._next_due() - time.monotonic())
                if self.free() > 0:
                    budget = min(max(wait, 0.1), self.config().fetch_timeout_s)
                    msg = await self.pools.fetch_one(budget)
                    if msg is not None:
                        await self._take(msg)
                    continue
                await self.pools.give_back()
                with anyio.move_on_after(wait):
                    await self._wake.wait()
                self._wake = anyio.Event()
        finally:
            await self._wind_down()

    def _next_due(self) -> float:
        due = [self._next_info]
        for job in self.running.values():
            due += [job.ends_at, job.last_report_at + job.heartbeat]
        return min(due)

    async def _take(self, msg: Msg) -> None:
        if self._stop is not None:
            await settle(msg.nak, self.stats, "nak")
            return
        try:
            d = decode(JobDispatch, msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.stats.invalid_dispatches += 1
            await settle(msg.term, self.stats, "term")
            return
        self.reporter.follow(d, msg.headers)
        devices = await self.gate.admit(msg, d, self.view()[0].gpus)
        if devices is not None:
            await self._begin(msg, d, devices)

    async def _begin(self, msg: Msg, d: JobDispatch, devices: tuple[int, ...]) -> None:
        key = f"{d.job_id}-{d.attempt}"
        answer = await self.reporter.send(self._report(d, "started"))
        if answer.outcome is not Outcome.ACCEPTED:
            self.gate.gpus.release(key)
        if answer.outcome is Outcome.CONFLICT:
            self.stats.refused += 1
            await settle(msg.term, self.stats, "term")
            return
        if answer.outcome is Outcome.UNAVAILABLE:
            self.stats.deferred += 1
            await settle(lambda: msg.nak(delay=DEFER_S), self.stats, "nak")
            return
        self.stats.run += 1
        now, cfg = time.monotonic(), self.config()
        lease = answer.lease_expires_at
        remaining = None if lease is None else lease - time.time()
        self.running[key] = HollowJob(
            dispatch=d,
            msg=msg,
            ends_at=now + min(_duration(d), self._timeout(d)),
            timed_out=_duration(d) > self._timeout(d),
            heartbeat=policy.heartbeat_interval(remaining, cfg.ack_wait_s),
            last_report_at=now,
            last_ack_at=now,
            gpus=devices,
        )

    async def _tick(self, now: float) -> None:
        cfg = self.config()
        for key, job in list(self.running.items()):
            if job.killed is not None or now >= job.ends_at:
                await self._finish(job)
                del self.running[key]
                self.gate.gpus.release(key)
                self.on_change()
                continue
            if policy.ack_due(now, job.last_ack_at, cfg.ack_wait_s):
                job.last_ack_at = now
                await settle(job.msg.in_progress, self.stats, "in_progress")
            if now - job.last_report_at >= job.heartbeat:
                job.last_report_at = now
                answer = await self.reporter.send(self._report(job.dispatch, "progress"))
                if answer.outcome is Outcome.CONFLICT:
                    job.killed = SUPERSEDED
        sample, floors, reason = self.view()
        open_ = self.intake_open and not reason and self._stop is None and floors.accepting
        if (ready := await self.gate.resume(open_, sample.gpus)) is not None:
            await self._begin(*ready)
        if now >= self._next_info:
            self._next_info = now + self.interval_s
            await self.publisher.publish(self.info())

    async def _finish(self, job: HollowJob) -> None:
        d, attempts = job.dispatch, self.config().report_attempts
        report: JobReport | None
        if job.killed is not None:
            if job.killed.counter == "handed_back":
                self.stats.handed_back += 1
            else:
                self.stats.killed += 1
            report = (
                self._report(d, "failed", error=job.killed.error) if job.killed.report else None
            )
        elif job.timed_out:
            self.stats.killed += 1
            error = f"timed out after {self._timeout(d):g}s"
            report = self._report(d, "failed", error=error)
        else:
            self.stats.completed += 1
            shown = visible_devices_env(job.gpus)["CUDA_VISIBLE_DEVICES"]
            done = JobResult(exit_code=0, result={"cuda_visible_devices": shown} if shown else {})
            report = self._report(d, "completed", progress=1.0, result=done)
        if report is not None:
            await self.reporter.send_final(report, attempts if job.killed is None else 1)
        await settle(job.msg.ack, self.stats, "ack")

    def _timeout(self, d: JobDispatch) -> float:
        return policy.job_timeout(d.spec.timeout_s, d.spec.type, self.config().type_timeouts_s)

    async def _wind_down(self) -> None:
        why = self._stop or STOPPING
        try:
            # Bounded: a job manager that does not answer must not hold up the stop.
            with anyio.move_on_after(self.config().shutdown_timeout, shield=True):
                for job in self.running.values():
                    job.killed = job.killed or why
                    await self._finish(job)
                self.running.clear()
                await self.gate.give_back()
                await self.pools.close()
                await self.publisher.publish(self.info(reason="stopped"), force_kv=True)
        finally:
            self.finished.set()
            self.on_change()


def _duration(d: JobDispatch) -> float:
    """How long a hollow job "runs": ``args["duration_s"]``, 0 when absent or bad."""
    value = d.spec.args.get("duration_s", 0)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return 0.0
    return max(0.0, float(value))
