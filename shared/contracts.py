"""Wire contracts shared by every service: statuses, health, beacons, events, control.

Every message is a frozen msgspec Struct encoded as JSON. Wire rules: a new field
gets a default; a field's type never changes; a breaking change gets a new subject
version token.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any, Literal

import msgspec

from shared.loops import LoopStats
from shared.window import WindowStats


class ServiceStatus(StrEnum):
    """Lifecycle status of a service instance."""

    STARTING = "STARTING"
    RUNNING = "RUNNING"
    DEGRADED = "DEGRADED"
    ERROR = "ERROR"
    PAUSED = "PAUSED"
    DRAINING = "DRAINING"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"


class HealthCheckResult(msgspec.Struct, frozen=True, kw_only=True):
    """Outcome of one health check. Build it with the factories, not by hand."""

    healthy: bool
    status: ServiceStatus
    message: str = ""
    timestamp: float = msgspec.field(default_factory=time.time)
    details: dict[str, Any] = msgspec.field(default_factory=dict)

    @classmethod
    def ok(cls, message: str = "ok", **details: Any) -> HealthCheckResult:
        """Healthy and RUNNING."""
        return cls(healthy=True, status=ServiceStatus.RUNNING, message=message, details=details)

    @classmethod
    def degraded(cls, message: str, **details: Any) -> HealthCheckResult:
        """Still serving, but something needs attention."""
        return cls(healthy=True, status=ServiceStatus.DEGRADED, message=message, details=details)

    @classmethod
    def error(cls, message: str, **details: Any) -> HealthCheckResult:
        """Not able to do its job."""
        return cls(healthy=False, status=ServiceStatus.ERROR, message=message, details=details)

    @classmethod
    def from_metrics(
        cls,
        window: WindowStats,
        *,
        max_error_rate: float = 0.1,
        max_inactive_s: float | None = None,
        **details: Any,
    ) -> HealthCheckResult:
        """Health from a sliding window of outcomes.

        Error rate above ``max_error_rate`` is ERROR; above half of it, or no activity
        for longer than ``max_inactive_s``, is DEGRADED.
        """
        details = {"window": msgspec.to_builtins(window), **details}
        rate = window.error_rate
        if window.total and rate > max_error_rate:
            return cls.error(
                f"error rate {rate:.1%} over {window.window_s:.0f}s above {max_error_rate:.1%}",
                **details,
            )
        if window.total and rate > max_error_rate / 2:
            return cls.degraded(
                f"error rate {rate:.1%} over {window.window_s:.0f}s above half the limit",
                **details,
            )
        idle = window.seconds_since_activity
        if max_inactive_s is not None and (idle is None or idle > max_inactive_s):
            shown = "ever" if idle is None else f"{idle:.0f}s"
            return cls.degraded(f"no activity for {shown} (limit {max_inactive_s:.0f}s)", **details)
        return cls.ok(**details)


class Beacon(msgspec.Struct, frozen=True, kw_only=True):
    """Liveness and health of one instance, published every beacon interval."""

    service: str
    instance: str
    version: str
    host: str
    pid: int
    status: ServiceStatus
    healthy: bool
    message: str = ""
    details: dict[str, Any] = msgspec.field(default_factory=dict)
    started_at: float
    sent_at: float
    seq: int
    interval_s: float


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """Event envelope with CloudEvents 1.0 attribute names, in JSON.

    ``source`` is ``/<prefix>/<service>/<instance>``; ``sequence`` (an extension
    attribute) counts per source and ``incarnation`` (one process's life) from 1, so a
    gap shows a lost event. Sequence 0 marks an announcement of a durable change, which
    carries a deterministic id and may be repeated (the stream de-duplicates it): it is
    accounted for by the record it announces, not by the count.
    """

    specversion: str = "1.0"
    id: str
    source: str
    type: str
    time: str
    subject: str | None = None
    datacontenttype: str = "application/json"
    sequence: int
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    incarnation: str = ""


ControlVerb = Literal["pause", "resume", "drain", "stop", "health", "reload"]


class ControlCommand(msgspec.Struct, frozen=True, kw_only=True):
    """An operator's or the orchestrator's command to one instance."""

    command: ControlVerb
    reason: str = ""
    args: dict[str, str] = msgspec.field(default_factory=dict)


class ControlReply(msgspec.Struct, frozen=True, kw_only=True):
    """What an instance answers to a ControlCommand."""

    ok: bool
    command: str
    service: str
    instance: str
    status: ServiceStatus
    message: str = ""
    health: HealthCheckResult | None = None


class ErrorBody(msgspec.Struct, frozen=True):
    """Code (HTTP-like) and message of an error reply."""

    code: int
    message: str


class ErrorReply(msgspec.Struct, frozen=True):
    """Typed error reply on any request/reply subject."""

    error: ErrorBody


class HistogramSample(msgspec.Struct, frozen=True, kw_only=True):
    """One bucketed histogram series as the service that observed it counted it.

    ``counts[i]`` is the cumulative number of observations ``<= bounds[i]`` (the
    Prometheus convention); ``count`` includes those above the last bound (``+Inf``).
    """

    name: str
    help: str = ""
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    bounds: list[float] = msgspec.field(default_factory=list)
    counts: list[int] = msgspec.field(default_factory=list)
    sum: float = 0.0
    count: int = 0


class ServiceMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """What an instance's ``metrics`` endpoint answers.

    ``custom`` names ending in ``_total`` are monotonic counts (exported as counters);
    the others are gauges. ``histograms`` carries the instance's own observations.
    """

    service: str
    instance: str
    status: ServiceStatus
    uptime_s: float
    rss_bytes: int
    cpu_seconds: float
    handled: int
    invalid: int
    handler_errors: int
    events_emitted: int
    events_acked: int
    events_dropped: int
    events_pending: int
    custom: dict[str, float] = msgspec.field(default_factory=dict)
    histograms: list[HistogramSample] = msgspec.field(default_factory=list)


class Empty(msgspec.Struct, frozen=True):
    """A request with no fields."""


class Liveness(StrEnum):
    """What the orchestrator concludes from an instance's beacons."""

    ALIVE = "ALIVE"
    SUSPECT = "SUSPECT"
    LOST = "LOST"


class InstanceView(msgspec.Struct, frozen=True, kw_only=True):
    """One instance as the orchestrator's registry sees it."""

    service: str
    instance: str
    host: str
    pid: int
    version: str
    status: ServiceStatus
    liveness: Liveness
    healthy: bool
    message: str = ""
    started_at: float
    last_seen: float
    beacon_seq: int
    interval_s: float


class ChildView(msgspec.Struct, frozen=True, kw_only=True):
    """One process the orchestrator supervises."""

    service: str
    instance: str
    restart: str
    pid: int | None
    running: bool
    restarts: int
    gave_up: bool
    last_exit_code: int | None = None


class NodeRow(msgspec.Struct, frozen=True, kw_only=True):
    """One node in the status view, from its latest NodeInfo."""

    node: str
    #: Not LOST by the liveness rule (``shared.liveness``).
    alive: bool
    #: Free and total slots, as ``"free/total"``.
    slots: str
    gpus: int = 0
    load: float = 0.0
    busy: float = 0.0
    jobs: int = 0
    #: ``"yes"``, or ``"no: <reason>"``.
    accepting: str = "yes"


class JobRow(msgspec.Struct, frozen=True, kw_only=True):
    """One active job in the status view."""

    job_id: str
    type: str
    state: str
    attempt: int = 0
    node_id: str = ""
    progress: float = 0.0
    error: str = ""


class JobsView(msgspec.Struct, frozen=True, kw_only=True):
    """Jobs per state (``retired`` included) and the active jobs, as the job manager
    last answered; empty while it has not."""

    counts: dict[str, int] = msgspec.field(default_factory=dict)
    active: list[JobRow] = msgspec.field(default_factory=list)


class ModelRow(msgspec.Struct, frozen=True, kw_only=True):
    """One game's champion, its Elo and the games recorded for the game."""

    game: str
    champion: str = "-"
    generation: int = 0
    elo: float = 0.0
    games: int = 0


class ClusterStatus(msgspec.Struct, frozen=True, kw_only=True):
    """The reply of ``P.api.orchestrator.status``: instances, children, nodes, jobs, models."""

    prefix: str
    orchestrator: str
    generated_at: float
    services: list[InstanceView] = msgspec.field(default_factory=list)
    children: list[ChildView] = msgspec.field(default_factory=list)
    nodes: list[NodeRow] = msgspec.field(default_factory=list)
    jobs: JobsView = msgspec.field(default_factory=JobsView)
    models: list[ModelRow] = msgspec.field(default_factory=list)


# -- status metrics collector ------------------------------------------------------


class InstanceSrvStats(msgspec.Struct, frozen=True, kw_only=True):
    """One instance's ``$SRV.STATS`` summed over its endpoints."""

    service: str
    instance: str
    requests: int = 0
    errors: int = 0
    endpoints: int = 0


class ClusterMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """One collection round over every instance of a cluster, on ``P.metrics.cluster``.

    ``instances`` holds the ServiceMetrics of those that answered; ``timeouts`` and
    ``failures`` name (``service/instance``) those that were discovered but did not.
    ``totals`` sums the numeric fields of ``instances``.
    """

    prefix: str
    collector: str
    generated_at: float
    instances: list[ServiceMetrics] = msgspec.field(default_factory=list)
    srv_stats: list[InstanceSrvStats] = msgspec.field(default_factory=list)
    succeeded: int = 0
    timed_out: int = 0
    failed: int = 0
    timeouts: list[str] = msgspec.field(default_factory=list)
    failures: dict[str, str] = msgspec.field(default_factory=dict)
    totals: dict[str, float] = msgspec.field(default_factory=dict)
    elapsed_s: float = 0.0


# -- loop manager --------------------------------------------------------------------


class LoopRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Names one loop for ``P.api.loop_manager.pause|resume|trigger``."""

    loop: str


class LoopList(msgspec.Struct, frozen=True, kw_only=True):
    """The reply of ``P.api.loop_manager.list``: every hosted loop and its last result."""

    instance: str
    loops: list[LoopStats] = msgspec.field(default_factory=list)
    results: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
