"""Typed event payloads: one Struct per event type, so no event goes out untyped.

An event's type name comes from its data class (``TYPE``), which makes it impossible
to emit a name outside the catalogue or two payload shapes for one event: the two
ways the original system lost events. ``decode_data`` turns an Event's ``data`` back
into its Struct for consumers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

import msgspec

from shared.contracts import Event, ServiceStatus

REGISTRY: dict[str, type[EventData]] = {}


class EventData(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every event payload; subclasses set ``TYPE`` (``NOUN_PHASE``)."""

    TYPE: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.TYPE:
            raise TypeError(f"{cls.__name__} must set TYPE")
        if cls.TYPE in REGISTRY and REGISTRY[cls.TYPE] is not cls:
            raise TypeError(f"event type {cls.TYPE} already registered")
        REGISTRY[cls.TYPE] = cls


def decode_data(event: Event) -> EventData | None:
    """The typed payload of ``event``; None for a type this process does not know."""
    cls = REGISTRY.get(event.type)
    if cls is None:
        return None
    return msgspec.convert(event.data, cls)


# -- service lifecycle (every service) ------------------------------------------


class ServiceStarted(EventData, frozen=True, kw_only=True):
    """An instance finished starting and is ready."""

    TYPE: ClassVar[str] = "SERVICE_STARTED"
    service: str
    instance: str
    version: str
    host: str
    pid: int


class ServiceStopped(EventData, frozen=True, kw_only=True):
    """An instance stopped in order."""

    TYPE: ClassVar[str] = "SERVICE_STOPPED"
    service: str
    instance: str
    reason: str = ""


# -- orchestrator ---------------------------------------------------------------


class ServiceRegistered(EventData, frozen=True, kw_only=True):
    """The orchestrator saw an instance's first beacon."""

    TYPE: ClassVar[str] = "SERVICE_REGISTERED"
    service: str
    instance: str
    host: str
    version: str


class ServiceDegraded(EventData, frozen=True, kw_only=True):
    """An instance reported DEGRADED or ERROR."""

    TYPE: ClassVar[str] = "SERVICE_DEGRADED"
    service: str
    instance: str
    status: ServiceStatus
    message: str = ""


class ServiceSuspect(EventData, frozen=True, kw_only=True):
    """An instance missed two beacon intervals."""

    TYPE: ClassVar[str] = "SERVICE_SUSPECT"
    service: str
    instance: str
    silent_s: float


class ServiceLost(EventData, frozen=True, kw_only=True):
    """An instance missed three intervals and did not answer a direct probe."""

    TYPE: ClassVar[str] = "SERVICE_LOST"
    service: str
    instance: str
    silent_s: float


class ServiceRecovered(EventData, frozen=True, kw_only=True):
    """A SUSPECT, LOST or degraded instance is healthy again."""

    TYPE: ClassVar[str] = "SERVICE_RECOVERED"
    service: str
    instance: str
    was: str


class ServiceRestarted(EventData, frozen=True, kw_only=True):
    """The supervisor restarted a child process."""

    TYPE: ClassVar[str] = "SERVICE_RESTARTED"
    service: str
    instance: str = ""
    exit_code: int | None
    restarts: int
    delay_s: float


class ServiceGaveUp(EventData, frozen=True, kw_only=True):
    """The supervisor stopped restarting a child past its intensity limit."""

    TYPE: ClassVar[str] = "SERVICE_GAVE_UP"
    service: str
    instance: str = ""
    restarts: int
    window_s: float
    last_exit_code: int | None


# -- loops (loop manager and any service hosting loops) --------------------------


class LoopStarted(EventData, frozen=True, kw_only=True):
    """A housekeeping loop began one run."""

    TYPE: ClassVar[str] = "LOOP_STARTED"
    loop: str
    run: int


class LoopCompleted(EventData, frozen=True, kw_only=True):
    """A housekeeping loop finished one run."""

    TYPE: ClassVar[str] = "LOOP_COMPLETED"
    loop: str
    run: int
    duration_s: float
    result: dict[str, Any] = msgspec.field(default_factory=dict)


class LoopFailed(EventData, frozen=True, kw_only=True):
    """A housekeeping loop's run failed or timed out."""

    TYPE: ClassVar[str] = "LOOP_FAILED"
    loop: str
    run: int
    error: str


# -- status metrics collector ----------------------------------------------------


class MetricsCollected(EventData, frozen=True, kw_only=True):
    """One collection round finished (emitted only when some calls failed)."""

    TYPE: ClassVar[str] = "METRICS_COLLECTED"
    instances: int
    succeeded: int
    timed_out: int
    failed: int


def build_event(
    prefix: str,
    service: str,
    instance: str,
    sequence: int,
    data: EventData,
    subject: str | None = None,
) -> Event:
    """The CloudEvents envelope for ``data`` from one instance."""
    now = datetime.now(UTC)
    return Event(
        id=f"{instance}-{sequence}-{int(now.timestamp() * 1e3):x}",
        source=f"/{prefix}/{service}/{instance}",
        type=data.TYPE,
        time=now.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        subject=subject,
        sequence=sequence,
        data=msgspec.to_builtins(data),
    )


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
    outputs: list[dict[str, Any]] = msgspec.field(default_factory=list)
    result: dict[str, Any] = msgspec.field(default_factory=dict)
    labels: dict[str, str] = msgspec.field(default_factory=dict)


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


# -- the self-play loop ---------------------------------------------------------------


class DataAvailable(EventData, frozen=True, kw_only=True):
    """New selfplay games were recorded in a config's manifest."""

    TYPE: ClassVar[str] = "DATA_AVAILABLE"
    config: str
    sha256: str
    games: int
    games_total: int


class DataSyncStarted(EventData, frozen=True, kw_only=True):
    """The sync planner began moving data (a prefetch to a node, or retention)."""

    TYPE: ClassVar[str] = "DATA_SYNC_STARTED"
    config: str
    node_id: str = ""
    blobs: int
    bytes: int = 0


class DataSyncCompleted(EventData, frozen=True, kw_only=True):
    """A data movement finished."""

    TYPE: ClassVar[str] = "DATA_SYNC_COMPLETED"
    config: str
    node_id: str = ""
    blobs: int
    bytes: int = 0
    deleted: int = 0


class DataSyncFailed(EventData, frozen=True, kw_only=True):
    """A data movement failed."""

    TYPE: ClassVar[str] = "DATA_SYNC_FAILED"
    config: str
    node_id: str = ""
    error: str


class SelfplayTargetUpdated(EventData, frozen=True, kw_only=True):
    """The scheduler's target number of queued selfplay jobs changed."""

    TYPE: ClassVar[str] = "SELFPLAY_TARGET_UPDATED"
    target: int
    free_slots: int


class SelfplayAllocationUpdated(EventData, frozen=True, kw_only=True):
    """The scheduler's split of selfplay work across configs changed."""

    TYPE: ClassVar[str] = "SELFPLAY_ALLOCATION_UPDATED"
    priorities: dict[str, float]
    allocation: dict[str, int]


class TrainingStarted(EventData, frozen=True, kw_only=True):
    """A training job was submitted for a config."""

    TYPE: ClassVar[str] = "TRAINING_STARTED"
    config: str
    job_id: str
    games: int
    parent: str = ""


class TrainingCompleted(EventData, frozen=True, kw_only=True):
    """A training job produced a candidate model."""

    TYPE: ClassVar[str] = "TRAINING_COMPLETED"
    config: str
    job_id: str
    model_id: str
    losses: list[float] = msgspec.field(default_factory=list)


class TrainingFailed(EventData, frozen=True, kw_only=True):
    """A training job failed (or its output was unusable)."""

    TYPE: ClassVar[str] = "TRAINING_FAILED"
    config: str
    job_id: str
    error: str


class EvaluationStarted(EventData, frozen=True, kw_only=True):
    """Evaluation games of a candidate against the champion began."""

    TYPE: ClassVar[str] = "EVALUATION_STARTED"
    config: str
    candidate: str
    champion: str
    job_id: str


class EvaluationCompleted(EventData, frozen=True, kw_only=True):
    """An evaluation reached a decision (accept or reject), or failed (closed: reject)."""

    TYPE: ClassVar[str] = "EVALUATION_COMPLETED"
    config: str
    candidate: str
    champion: str
    wins: int
    losses: int
    draws: int
    llr: float
    decision: Literal["accept", "reject"]
    reason: str = ""


class ModelPromoted(EventData, frozen=True, kw_only=True):
    """A candidate became its config's champion."""

    TYPE: ClassVar[str] = "MODEL_PROMOTED"
    config: str
    model_id: str
    generation: int
    elo: float
    previous: str = ""


class ModelRejected(EventData, frozen=True, kw_only=True):
    """A candidate was not promoted; it is archived."""

    TYPE: ClassVar[str] = "MODEL_REJECTED"
    config: str
    model_id: str
    reason: str
