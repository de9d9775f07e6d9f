"""Contracts of cluster membership and the job lifecycle: nodes, jobs, data references.

Jobs move PENDING -> DISPATCHED -> RUNNING -> COMPLETED | FAILED | CANCELLED; every
transition is a compare-and-set on the job's record in the jobs bucket, written only by
the job manager. Each dispatch carries a fencing token (a counter that grows with every
dispatch of the job): a report that names an older token is refused and counted.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import msgspec

Sha256 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]


class DataRef(msgspec.Struct, frozen=True, kw_only=True):
    """A blob in the object store ``P_data``, addressed by its sha256."""

    name: str
    sha256: Sha256
    size: Annotated[int, msgspec.Meta(ge=0)]


class GpuInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One GPU as NVML (or the node's declaration) describes it."""

    index: int
    name: str
    memory_total_mb: int
    memory_used_mb: int = 0
    utilization_pct: float = 0.0


class NodeInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A node agent's view of its host, published each interval on ``P.node.<id>``."""

    node_id: str
    hostname: str
    version: str
    capabilities: list[str]
    slots: int
    free_slots: int
    cpu_count: int
    load_1m: float
    memory_total_mb: int
    memory_available_mb: int
    disk_free_mb: int
    gpus: list[GpuInfo] = msgspec.field(default_factory=list)
    running_jobs: list[str] = msgspec.field(default_factory=list)
    accepting: bool = True
    reason: str = ""
    hollow: bool = False
    sent_at: float = 0.0
    interval_s: float = 1.0


class Requirements(msgspec.Struct, frozen=True, kw_only=True):
    """What a job needs from a node."""

    capability: str = "cpu"
    gpu: bool = False
    min_memory_mb: Annotated[int, msgspec.Meta(ge=0)] = 0
    pooled: bool = False
    node_id: str = ""


class JobSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What a client submits."""

    type: Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]*$")]
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    inputs: list[DataRef] = msgspec.field(default_factory=list)
    requirements: Requirements = msgspec.field(default_factory=Requirements)
    priority: int = 0
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 3600.0
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3
    idempotency_key: str = ""
    labels: dict[str, str] = msgspec.field(default_factory=dict)


class JobState(StrEnum):
    """Where a job is in its life."""

    PENDING = "PENDING"
    DISPATCHED = "DISPATCHED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


TERMINAL = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})


class JobResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a finished attempt produced."""

    outputs: list[DataRef] = msgspec.field(default_factory=list)
    result: dict[str, Any] = msgspec.field(default_factory=dict)
    exit_code: int | None = None


class JobRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A job's durable record in the jobs bucket (key: job_id)."""

    job_id: str
    spec: JobSpec
    state: JobState
    attempt: int = 0
    fencing: int = 0
    node_id: str = ""
    pool: str = ""
    submitted_at: float
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None
    lease_expires_at: float | None = None
    retry_at: float | None = None
    progress: float = 0.0
    error: str = ""
    permanent: bool = False
    result: JobResult | None = None
    #: False from the write that makes the record terminal until its terminal event is
    #: acknowledged by the stream: the obligation to announce, kept with the change, so
    #: a crash in between leaves work that any job manager finishes. Older records
    #: (written before the field) were announced.
    announced: bool = True


class JobDispatch(msgspec.Struct, frozen=True, kw_only=True):
    """One attempt of a job, in the work-queue stream ``P_JOBS``."""

    job_id: str
    attempt: int
    fencing: int
    spec: JobSpec
    dispatched_at: float


class JobReport(msgspec.Struct, frozen=True, kw_only=True):
    """A node agent's report on an attempt (``P.api.job_manager.report``)."""

    job_id: str
    attempt: int
    fencing: int
    node_id: str
    phase: str  # started | progress | completed | failed
    progress: float = 0.0
    error: str = ""
    result: JobResult | None = None


class JobRef(msgspec.Struct, frozen=True, kw_only=True):
    """Names one job in a request."""

    job_id: str
    reason: str = ""


class JobQuery(msgspec.Struct, frozen=True, kw_only=True):
    """Filters for listing jobs."""

    state: JobState | None = None
    type: str = ""
    node_id: str = ""
    limit: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 100


class JobList(msgspec.Struct, frozen=True, kw_only=True):
    """Jobs matching a query, newest first."""

    jobs: list[JobRecord]
    total: int


class SelectRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Ask the node selector for the best nodes for a requirement."""

    requirement: Requirements = msgspec.field(default_factory=Requirements)
    count: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 1
    exclude: list[str] = msgspec.field(default_factory=list)
    #: A preference, not a need: the caller has a fallback, so no answer means no wait.
    preference: bool = False


class SelectReply(msgspec.Struct, frozen=True, kw_only=True):
    """Ranked node ids, best first (possibly fewer than asked)."""

    nodes: list[str]


class NodeView(msgspec.Struct, frozen=True, kw_only=True):
    """One node as the node selector sees it (``P.api.node_selector.nodes``)."""

    info: NodeInfo
    alive: bool
    age_s: float
    unhealthy: bool = False
    unhealthy_until: float | None = None
    recent_failures: int = 0
    gpu_power: float = 0.0


class NodeList(msgspec.Struct, frozen=True, kw_only=True):
    """Every node the selector knows, by node id, with counts."""

    nodes: list[NodeView]
    alive: int
    unhealthy: int
