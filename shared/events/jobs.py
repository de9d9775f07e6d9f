"""Events of the job lifecycle, nodes and state validation."""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from shared.events.base import EventData
from shared.jobs import DataRef, JobRecord

# -- jobs (job manager; JOB_PROGRESS also from node agents) ---------------------


class JobSubmitted(EventData, frozen=True, kw_only=True):
    """A job was accepted (a duplicate idempotency key does not emit again)."""

    TYPE: ClassVar[str] = "JOB_SUBMITTED"
    job_id: str
    type: str
    idempotency_key: str = ""


class JobStarted(EventData, frozen=True, kw_only=True):
    """An attempt began running on a node."""

    TYPE: ClassVar[str] = "JOB_STARTED"
    job_id: str
    type: str
    attempt: int
    node_id: str


class JobProgress(EventData, frozen=True, kw_only=True):
    """Progress of a running attempt (rate-limited at the source)."""

    TYPE: ClassVar[str] = "JOB_PROGRESS"
    job_id: str
    attempt: int
    node_id: str
    progress: float


class JobCompleted(EventData, frozen=True, kw_only=True):
    """An attempt finished and its outputs are in the object store."""

    TYPE: ClassVar[str] = "JOB_COMPLETED"
    job_id: str
    type: str
    attempt: int
    node_id: str
    outputs: list[DataRef] = msgspec.field(default_factory=list)
    result: dict[str, Any] = msgspec.field(default_factory=dict)
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    #: Seconds from the attempt's start to its completion (what job sizing learns from).
    run_s: float = 0.0


def completed_event(rec: JobRecord) -> JobCompleted:
    """The JOB_COMPLETED that announces COMPLETED record ``rec`` (or that a reader who
    found the record, not the event, acts on)."""
    result = rec.result
    started = rec.started_at or rec.finished_at or 0.0
    return JobCompleted(
        job_id=rec.job_id,
        type=rec.spec.type,
        attempt=rec.attempt,
        node_id=rec.node_id,
        outputs=list(result.outputs) if result else [],
        result=result.result if result else {},
        labels=rec.spec.labels,
        run_s=max(0.0, (rec.finished_at or 0.0) - started),
    )


class JobFailed(EventData, frozen=True, kw_only=True):
    """An attempt failed; ``permanent`` when no attempt is left."""

    TYPE: ClassVar[str] = "JOB_FAILED"
    job_id: str
    type: str
    attempt: int
    node_id: str = ""
    error: str
    permanent: bool


class JobRetried(EventData, frozen=True, kw_only=True):
    """The reaper scheduled another attempt."""

    TYPE: ClassVar[str] = "JOB_RETRIED"
    job_id: str
    attempt: int
    delay_s: float
    reason: str


class JobCancelled(EventData, frozen=True, kw_only=True):
    """A job was cancelled."""

    TYPE: ClassVar[str] = "JOB_CANCELLED"
    job_id: str
    reason: str = ""


# -- nodes and state --------------------------------------------------------------


class NodeUnhealthy(EventData, frozen=True, kw_only=True):
    """The node selector put a node in its unhealthy overlay."""

    TYPE: ClassVar[str] = "NODE_UNHEALTHY"
    node_id: str
    reason: str
    until: float


class NodeRecovered(EventData, frozen=True, kw_only=True):
    """A node left the unhealthy overlay."""

    TYPE: ClassVar[str] = "NODE_RECOVERED"
    node_id: str


class StateValidated(EventData, frozen=True, kw_only=True):
    """The state manager's validation loop finished a pass."""

    TYPE: ClassVar[str] = "STATE_VALIDATED"
    records: int
    problems: list[str] = msgspec.field(default_factory=list)


class JobLogsStored(EventData, frozen=True, kw_only=True):
    """A node agent stored an attempt's captured stdout and stderr as a blob.

    The record keeps only the latest attempt's result; this event names the logs of
    every attempt, so ``ringmaster logs --job ID --attempt N`` finds older ones.
    """

    TYPE: ClassVar[str] = "JOB_LOGS_STORED"
    job_id: str
    attempt: int
    node_id: str
    logs: dict[str, Any]
