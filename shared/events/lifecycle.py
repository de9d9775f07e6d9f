"""Events of every service's lifecycle, the orchestrator, loops and metrics."""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from shared.contracts import ServiceStatus
from shared.events.base import EventData

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
