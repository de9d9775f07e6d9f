"""A job held by a node, and the reasons a job is stopped before it ends.

A RunningJob lives from its dispatch message until the final ack; ``kill`` takes its
whole process group down at once, from any task (cancel, timeout, drain, stop).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import nats.errors
from nats.aio.msg import Msg

from services.node_agent.process import kill_group
from services.node_agent.reports import AgentStats
from shared.jobs import JobDispatch

#: Seconds a dispatch waits before redelivery when the job manager did not answer.
DEFER_S = 2.0


@dataclass(frozen=True)
class Kill:
    """Why a job was stopped, whether that is reported as a failed attempt, and how
    it is counted (``killed`` or ``handed_back``)."""

    error: str
    report: bool
    counter: str = "killed"


CANCELLED = Kill("cancelled", report=False)
SUPERSEDED = Kill("superseded: the job manager refused a progress report", report=False)
DRAINING = Kill("handed back: agent draining", report=True, counter="handed_back")
STOPPING = Kill("killed: agent stopping", report=True)


@dataclass
class RunningJob:
    """A job this node holds: from its dispatch message until its final ack."""

    dispatch: JobDispatch
    msg: Msg
    key: str
    started: float = field(default_factory=time.monotonic)
    progress: float = 0.0
    pid: int | None = None
    killed: Kill | None = None
    #: The process has ended: its slot is free while outputs upload and it reports.
    exited: bool = False
    #: The GPU devices this job holds (assignment.py); empty for a CPU job.
    gpus: tuple[int, ...] = ()
    #: Called when the process has started, and once when it ends (the node starts
    #: its next job then).
    on_start: Callable[[], None] | None = None
    on_exit: Callable[[], None] | None = None

    def process_started(self, pid: int) -> None:
        """The job's process runs as ``pid``."""
        self.pid = pid
        if self.on_start is not None:
            self.on_start()

    def process_ended(self) -> None:
        """The job's process is gone: free its slot for the next job."""
        if not self.exited:
            self.exited = True
            if self.on_exit is not None:
                self.on_exit()

    def kill(self, why: Kill) -> None:
        """Stop the job now (its whole process group); the first reason given sticks."""
        if self.killed is None:
            self.killed = why
        if self.pid is not None:
            kill_group(self.pid)

    def view(self) -> dict[str, Any]:
        """The job for health details."""
        d = self.dispatch
        return {
            "job_id": d.job_id,
            "attempt": d.attempt,
            "type": d.spec.type,
            "progress": self.progress,
            "pid": self.pid,
            "gpus": list(self.gpus),
            "running_s": round(time.monotonic() - self.started, 1),
        }


@dataclass
class HollowJob:
    """A simulated job: it ends at ``ends_at`` (monotonic)."""

    dispatch: JobDispatch
    msg: Msg
    ends_at: float
    timed_out: bool
    heartbeat: float
    last_report_at: float
    last_ack_at: float
    killed: Kill | None = None
    gpus: tuple[int, ...] = ()


async def settle(action: Callable[[], Awaitable[None]], stats: AgentStats, what: str) -> None:
    """Ack, nak, term or in-progress a message; a lost connection is counted, not raised."""
    try:
        await action()
    except (nats.errors.Error, OSError) as exc:
        stats.settle_errors += 1
        stats.last_error = f"{what}: {exc!r}"
