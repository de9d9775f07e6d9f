"""Reports to the job manager (``P.api.job_manager.report.<node>``) and the agent's counters.

A report's answer is one of three outcomes: accepted (with the lease the job manager
granted), conflict (409 or 404: the attempt is stale, cancelled or unknown, so the work
must stop) or unavailable (no answer, no responder, a 5xx: try again later).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import anyio
import msgspec
import nats.errors
from nats.aio.client import Client

from shared import tracing
from shared.codec import decode, encode
from shared.intake import ERROR_CODE_HEADER, ERROR_HEADER
from shared.jobs import JobDispatch, JobReport
from shared.tracing import TraceContext

#: This agent process's incarnation: fresh at every start, so a restarted agent under
#: the same node id is told apart from the one that started its node's attempts.
INCARNATION = uuid.uuid4().hex[:16]

log = logging.getLogger("ringmaster.node_agent.reports")

#: Attempts whose trace context the agent keeps at most (far above any slot count).
_MAX_TRACES = 4096


class Outcome(StrEnum):
    """How the job manager took a report."""

    ACCEPTED = "accepted"
    CONFLICT = "conflict"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class Answer:
    """A report's outcome, the lease's expiry (wall clock) when granted, and why."""

    outcome: Outcome
    lease_expires_at: float | None = None
    detail: str = ""


class _Granted(msgspec.Struct, frozen=True):
    """The part of the JobRecord reply the agent reads (lenient: other fields ignored)."""

    lease_expires_at: float | None = None


@dataclass
class AgentStats:
    """Counters shown in health details; never reset (windows are the framework's)."""

    run: int = 0
    completed: int = 0
    failed: int = 0
    killed: int = 0
    handed_back: int = 0
    refused: int = 0
    deferred: int = 0
    invalid_progress_lines: int = 0
    invalid_dispatches: int = 0
    redeliveries: int = 0
    reports: dict[str, int] = field(default_factory=dict)
    reports_lost: int = 0
    settle_errors: int = 0
    orphans_killed: int = 0
    job_errors: int = 0
    progress_events: int = 0
    fetch_errors: int = 0
    #: Input fetches tried again after a transient bus error (workspace.fetch_inputs).
    input_retries: int = 0
    rebinds: int = 0
    #: Pulled while the node still wanted work, then nak'd when it stopped wanting it.
    given_back: int = 0
    #: Dispatches pulled while every slot was busy and held as the next job.
    prefetched: int = 0
    info_publish_errors: int = 0
    #: Attempts whose captured stdout and stderr could not be stored.
    logs_failed: int = 0
    last_error: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Counters for health details."""
        return dict(self.__dict__)


class Reporter:
    """Sends JobReports and sorts their answers into outcomes, counting each."""

    def __init__(
        self, nc: Client, subject: Callable[[str], str], timeout_s: float, stats: AgentStats
    ) -> None:
        # ``subject(node_id)``: each node reports on its own subject (hollow nodes too).
        self.nc = nc
        self.subject = subject
        self.timeout_s = timeout_s
        self.stats = stats
        #: (job_id, fencing) -> the attempt's trace headers, from its dispatch: each
        #: report on the attempt carries them back. Bounded; forgotten at the final report.
        self.traces: dict[tuple[str, int], TraceContext] = {}

    def follow(self, d: JobDispatch, headers: dict[str, str] | None) -> None:
        """Keep the dispatch's trace context (a malformed one is counted and ignored)."""
        span = tracing.from_headers(headers, "dispatch")
        if span is None:
            return
        if len(self.traces) >= _MAX_TRACES:
            del self.traces[next(iter(self.traces))]
        self.traces[(d.job_id, d.fencing)] = span

    def span(self, d: JobDispatch) -> TraceContext | None:
        """The attempt's span, as its dispatch named it (None: an untraced dispatch)."""
        return self.traces.get((d.job_id, d.fencing))

    def _count(self, report: JobReport, answer: Answer) -> Answer:
        key = f"{report.phase}:{answer.outcome}"
        self.stats.reports[key] = self.stats.reports.get(key, 0) + 1
        if answer.outcome is not Outcome.ACCEPTED:
            self.stats.last_error = f"{report.phase} report {report.job_id}: {answer.detail}"
        return answer

    async def send(self, report: JobReport) -> Answer:
        """One report, one answer; never raises for a missing or failed job manager."""
        # Every report names this process's incarnation: the job manager records the
        # one that started an attempt, and fails it when a new incarnation drops it.
        report = msgspec.structs.replace(report, incarnation=INCARNATION)
        try:
            msg = await self.nc.request(
                self.subject(report.node_id),
                encode(report),
                timeout=self.timeout_s,
                headers=_headers(self.traces.get((report.job_id, report.fencing))),
            )
        except (nats.errors.Error, OSError) as exc:
            # nats.errors.TimeoutError and NoRespondersError are both here.
            return self._count(report, Answer(Outcome.UNAVAILABLE, detail=type(exc).__name__))
        code = (msg.headers or {}).get(ERROR_CODE_HEADER)
        if code is not None:
            detail = f"{code} {(msg.headers or {}).get(ERROR_HEADER, '')}".strip()
            # Any 4xx (409 stale or cancelled, 404 unknown, 400 refused) ends the work;
            # a 5xx is the manager's trouble, so the same report may be tried again.
            outcome = Outcome.CONFLICT if code.startswith("4") else Outcome.UNAVAILABLE
            return self._count(report, Answer(outcome, detail=detail))
        try:
            lease = decode(_Granted, msg.data).lease_expires_at
        except (msgspec.DecodeError, msgspec.ValidationError):
            # Accepted all the same: the answer had no error; only the lease is unknown.
            lease = None
        return self._count(report, Answer(Outcome.ACCEPTED, lease_expires_at=lease))

    async def send_final(self, report: JobReport, attempts: int) -> Answer:
        """A completed/failed report, retried with backoff while the manager is away."""
        answer = Answer(Outcome.UNAVAILABLE)
        for attempt in range(attempts):
            answer = await self.send(report)
            if answer.outcome is not Outcome.UNAVAILABLE:
                self.traces.pop((report.job_id, report.fencing), None)
                return answer
            if attempt + 1 < attempts:
                await anyio.sleep(min(5.0, 0.25 * 2**attempt))
        # The job manager's reaper retries the job when the lease lapses.
        self.stats.reports_lost += 1
        log.warning("report %s of %s not delivered: %s", report.phase, report.job_id, answer.detail)
        return answer


def _headers(span: TraceContext | None) -> dict[str, str] | None:
    return None if span is None else span.headers()
