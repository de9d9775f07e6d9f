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
    #: The job holding this device (``<job_id>-<attempt>``), "" while it is free. Old
    #: agents never set it, so their GPUs read as free (what they meant).
    assigned_to: str = ""


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
    #: Share of the node's slots busy running job processes over the last minute.
    utilization: float = 0.0
    #: A fresh id per agent process start: a new one under the same node_id means the
    #: agent restarted and lost every attempt it was running ("" from older agents).
    incarnation: str = ""


#: How an agent's refusal of a job it can never fit begins (a failed attempt's error):
#: the job asked for too much, so the node is not to blame for the failure.
REFUSED = "refused: "

#: The most GPUs one job may ask for (a larger number is a typo, refused at submit).
MAX_GPUS_PER_JOB = 64


class Requirements(msgspec.Struct, frozen=True, kw_only=True):
    """What a job needs from a node.

    GPUs are whole devices: ``gpus`` of them, each with at least ``gpu_memory_mb`` of
    memory. ``gpu`` is the old boolean, kept for old clients: it means "at least one";
    a ``gpu_memory_mb`` alone also asks for one device (see :attr:`gpu_count`).
    """

    capability: str = "cpu"
    gpu: bool = False
    min_memory_mb: Annotated[int, msgspec.Meta(ge=0)] = 0
    pooled: bool = False
    node_id: str = ""
    gpus: Annotated[int, msgspec.Meta(ge=0, le=MAX_GPUS_PER_JOB)] = 0
    gpu_memory_mb: Annotated[int, msgspec.Meta(ge=0)] = 0

    @property
    def gpu_count(self) -> int:
        """Whole GPU devices the job needs (0: a CPU job, which is shown no GPU)."""
        return max(self.gpus, 1 if self.gpu or self.gpu_memory_mb else 0)


def free_gpus(info: NodeInfo, min_memory_mb: int = 0) -> list[GpuInfo]:
    """The node's GPUs no job holds, with at least ``min_memory_mb`` of memory each."""
    return [g for g in info.gpus if not g.assigned_to and g.memory_total_mb >= min_memory_mb]


class JobSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What a client submits."""

    type: Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]*$")]
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    inputs: list[DataRef] = msgspec.field(default_factory=list)
    requirements: Requirements = msgspec.field(default_factory=Requirements)
    #: Higher first: an agent with a free slot starts the highest-priority job it holds.
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
    #: The attempt's captured stdout and stderr (a ``shared.joblogs.JobLogs`` blob).
    logs: DataRef | None = None


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
    #: The incarnation of the agent that started the live attempt ("" if unknown).
    incarnation: str = ""
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
    #: The reporting agent's incarnation (see NodeInfo.incarnation; "" if unknown).
    incarnation: str = ""


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
    #: Where the previous page ended (its ``next_cursor``); empty for the first page.
    cursor: str = ""


class JobList(msgspec.Struct, frozen=True, kw_only=True):
    """One page of the jobs matching a query, newest first.

    A page may hold fewer than ``limit`` jobs (a reply never exceeds the server's
    max_payload); ``next_cursor`` is empty on the last page.
    """

    jobs: list[JobRecord]
    total: int
    next_cursor: str = ""


class JobCounts(msgspec.Struct, frozen=True, kw_only=True):
    """Jobs per state in the jobs bucket, and how many were retired to history."""

    states: dict[str, int] = msgspec.field(default_factory=dict)
    retired: int = 0


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
