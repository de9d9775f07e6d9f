"""One attempt of a job on a real node, from the dispatch message to the final ack.

started report (409 -> term, no answer -> nak for later) -> working directory ->
command -> inputs (sha256-checked; a bad one fails the attempt before anything runs)
-> process (progress lines read, lease kept, timeout enforced; both streams kept,
``output.py``) -> its logs stored (whatever the outcome) -> outputs uploaded ->
completed or failed report -> ack. The job manager owns retries: a failed attempt is
reported and acked, never nak'ed back into the stream.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from services.node_agent import policy, sweep
from services.node_agent.assignment import visible_devices_env
from services.node_agent.config import NodeAgentConfig
from services.node_agent.job import DEFER_S, STOPPING, SUPERSEDED, Kill, RunningJob, settle
from services.node_agent.output import AttemptOutput, store_logs
from services.node_agent.process import kill_group, spawn, supervise
from services.node_agent.reports import AgentStats, Outcome, Reporter
from services.node_agent.workspace import (
    InputError,
    OutputError,
    Workspace,
    fetch_inputs,
    upload_outputs,
)
from shared import tracing
from shared.blobs import BlobStore
from shared.events import EventData, JobProgress
from shared.failpoints import failpoint
from shared.jobs import DataRef, JobReport, JobResult

log = logging.getLogger("ringmaster.node_agent.runner")


class JobRunner:
    """Runs jobs for one real node."""

    def __init__(
        self,
        *,
        node_id: str,
        config: Callable[[], NodeAgentConfig],
        reporter: Reporter,
        blobs: BlobStore,
        stats: AgentStats,
        emit: Callable[[EventData], object],
    ) -> None:
        self.node_id = node_id
        self.config = config
        self.reporter = reporter
        self.blobs = blobs
        self.stats = stats
        self.emit = emit

    def report(self, job: RunningJob, phase: str, **fields: Any) -> JobReport:
        """A report on ``job`` from this node."""
        d = job.dispatch
        return JobReport(
            job_id=d.job_id,
            attempt=d.attempt,
            fencing=d.fencing,
            node_id=self.node_id,
            phase=phase,
            **fields,
        )

    async def run(self, job: RunningJob) -> None:
        """The whole attempt; the job's process group is gone when this returns."""
        # In the attempt's span (from its dispatch): the events the agent emits for it
        # (JOB_PROGRESS, JOB_LOGS_STORED) carry it, in every task started from here.
        with tracing.use(self.reporter.span(job.dispatch)):
            await self._run(job)

    async def _run(self, job: RunningJob) -> None:
        try:
            answer = await self.reporter.send(self.report(job, "started"))
            if answer.outcome is Outcome.CONFLICT:
                self.stats.refused += 1
                await settle(job.msg.term, self.stats, "term")
                return
            if answer.outcome is Outcome.UNAVAILABLE:
                self.stats.deferred += 1
                await settle(lambda: job.msg.nak(delay=DEFER_S), self.stats, "nak")
                return
            self.stats.run += 1
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._keep_lease, job, answer.lease_expires_at)
                final = await self._attempt(job)
                tg.cancel_scope.cancel()
            if final is not None:
                # A stopping agent tries a killed job's report once: the lease covers the rest.
                attempts = 1 if job.killed is STOPPING else self.config().report_attempts
                await self.reporter.send_final(final, attempts)
            failpoint("node_agent.ack.before")
            await settle(job.msg.ack, self.stats, "ack")
        finally:
            if job.pid is not None:
                kill_group(job.pid)

    async def _attempt(self, job: RunningJob) -> JobReport | None:
        cfg = self.config()
        if not policy.safe_dir_name(job.key):
            return self._failed(job, f"job id {job.dispatch.job_id!r} cannot name a directory")
        work_dir = Path(cfg.work_dir)
        try:
            ws = await anyio.to_thread.run_sync(Workspace.create, work_dir, job.key)
        except OSError as exc:
            return self._failed(job, f"cannot prepare the working directory: {exc}")
        try:
            return await self._in_workspace(job, ws, cfg)
        finally:
            # The group is dead by now (supervise kills it): nothing left to sweep.
            sweep.unregister(work_dir, job.key)
            if not cfg.keep_work_dirs:
                await anyio.to_thread.run_sync(ws.remove)

    async def _in_workspace(
        self, job: RunningJob, ws: Workspace, cfg: NodeAgentConfig
    ) -> JobReport | None:
        d = job.dispatch
        values = {
            "python": sys.executable,
            "job_id": d.job_id,
            "attempt": str(d.attempt),
            "inputs_dir": str(ws.inputs),
            "outputs_dir": str(ws.outputs),
            "work_dir": str(ws.root),
        }
        try:
            argv = policy.build_argv(
                d.spec.type, d.spec.args, cfg.commands, values, shell=cfg.runs_shell
            )
            await fetch_inputs(self.blobs, d.spec.inputs, ws.inputs, self._input_retry)
        except (policy.CommandError, InputError) as exc:
            return self._failed(job, str(exc))
        if job.killed is not None:
            return self._killed(job)
        env = policy.base_env(os.environ, cfg.job_env)  # never the agent's secrets
        env.update(
            policy.job_env(
                job_id=d.job_id,
                attempt=d.attempt,
                args=d.spec.args,
                inputs_dir=str(ws.inputs),
                outputs_dir=str(ws.outputs),
            )
        )
        # Exactly its own GPUs, whatever the agent's environment said (none for CPU jobs).
        env.update(visible_devices_env(job.gpus))
        try:
            proc = await spawn(argv, cwd=ws.root, env=env)
        except (OSError, subprocess.SubprocessError) as exc:
            return self._failed(job, f"cannot start {argv[0]}: {exc}")
        job.process_started(proc.pid)
        # So that an agent restarted after a SIGKILL can kill what this job left behind.
        sweep.register(Path(cfg.work_dir), job.key, proc.pid, d.job_id)
        if job.killed is not None:
            kill_group(proc.pid)  # a kill that came while it was starting
        output = AttemptOutput(lambda line: self._on_line(job, line))
        timeout = policy.job_timeout(d.spec.timeout_s, d.spec.type, cfg.type_timeouts_s)
        timed_out = await supervise(
            proc, timeout_s=timeout, on_stdout=output.on_stdout, on_stderr=output.on_stderr
        )
        job.process_ended()
        code = proc.returncode if proc.returncode is not None else -1
        logs = await store_logs(
            self.blobs, output.logs(d, self.node_id, code), self.emit, self.stats
        )
        if timed_out:
            job.kill(Kill(f"timed out after {timeout:g}s", report=True))
        if job.killed is not None:
            return self._killed(job, logs)
        if code != 0:
            return self._failed(job, policy.failure_message(code, output.tail), code, logs)
        try:
            outputs, result = await upload_outputs(self.blobs, ws.outputs)
        except OutputError as exc:
            return self._failed(job, str(exc), 0, logs)
        self.stats.completed += 1
        job.progress = 1.0
        done = JobResult(outputs=outputs, result=result, exit_code=0, logs=logs)
        return self.report(job, "completed", progress=1.0, result=done)

    def _input_retry(self, why: str) -> None:
        self.stats.input_retries += 1
        self.stats.last_error = why
        log.warning("%s", why)

    def _failed(
        self,
        job: RunningJob,
        error: str,
        exit_code: int | None = None,
        logs: DataRef | None = None,
    ) -> JobReport:
        self.stats.failed += 1
        log.info("job %s failed: %s", job.key, error.splitlines()[0] if error else "")
        result = JobResult(exit_code=exit_code, logs=logs)
        return self.report(job, "failed", progress=job.progress, error=error, result=result)

    def _killed(self, job: RunningJob, logs: DataRef | None = None) -> JobReport | None:
        why = job.killed
        assert why is not None
        if why.counter == "handed_back":
            self.stats.handed_back += 1
        else:
            self.stats.killed += 1
        log.info("job %s stopped: %s", job.key, why.error)
        if not why.report:
            return None
        result = JobResult(logs=logs) if logs is not None else None
        return self.report(job, "failed", progress=job.progress, error=why.error, result=result)

    def _on_line(self, job: RunningJob, line: bytes) -> None:
        value = policy.parse_progress_line(line)
        if value is not None:
            job.progress = value
        elif line.strip():
            self.stats.invalid_progress_lines += 1

    async def _keep_lease(self, job: RunningJob, lease_expires_at: float | None) -> None:
        """In-progress acks before the ack wait ends; progress reports, rate-limited,
        and at least every third of the lease; a refused report kills the job."""
        cfg = self.config()
        heartbeat = policy.heartbeat_interval(_remaining(lease_expires_at), cfg.ack_wait_s)
        last_report = last_ack = time.monotonic()
        reported = 0.0
        while True:
            tick = min(cfg.progress_interval_s, heartbeat, cfg.ack_wait_s / 3)
            await anyio.sleep(max(0.05, tick))
            now = time.monotonic()
            if policy.ack_due(now, last_ack, cfg.ack_wait_s):
                await settle(job.msg.in_progress, self.stats, "in_progress")
                last_ack = now
            progress = job.progress
            action = policy.progress_action(
                now=now,
                last_report_at=last_report,
                reported=reported,
                progress=progress,
                min_interval_s=cfg.progress_interval_s,
                heartbeat_s=heartbeat,
            )
            if action.event:
                self.stats.progress_events += 1
                d, node = job.dispatch, self.node_id
                self.emit(
                    JobProgress(job_id=d.job_id, attempt=d.attempt, node_id=node, progress=progress)
                )
            if not action.report:
                continue
            answer = await self.reporter.send(self.report(job, "progress", progress=progress))
            # Sent is enough: an unanswered report is tried again at the next heartbeat.
            last_report, reported = time.monotonic(), progress
            if answer.outcome is Outcome.CONFLICT:
                job.kill(SUPERSEDED)
                return
            if answer.outcome is Outcome.ACCEPTED:
                remaining = _remaining(answer.lease_expires_at)
                heartbeat = policy.heartbeat_interval(remaining, cfg.ack_wait_s)


def _remaining(lease_expires_at: float | None) -> float | None:
    return None if lease_expires_at is None else lease_expires_at - time.time()
