"""How a service's health is judged: its own view plus the framework's checks.

Everything here reads sliding windows and current state, never lifetime totals, so
a service recovers its status as soon as the trouble has passed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

import msgspec
import psutil

from shared import tracing
from shared.bus import BusStats
from shared.circuit_breaker import BreakerState, CircuitBreaker
from shared.contracts import HealthCheckResult, HistogramSample, ServiceMetrics, ServiceStatus
from shared.instance import Instance
from shared.intake import Intake
from shared.logstream import LogPublisher
from shared.loops import Loop
from shared.otel import SpanSink
from shared.outbox import Outbox
from shared.window import SlidingWindow


class Observed(Instance, Protocol):
    """What health and metrics read of a service: its parts and its own judgement."""

    @property
    def started_at(self) -> float: ...
    @property
    def intake(self) -> Intake: ...
    @property
    def window(self) -> SlidingWindow: ...
    @property
    def bus_stats(self) -> BusStats: ...
    @property
    def breakers(self) -> Sequence[CircuitBreaker]: ...
    @property
    def loops(self) -> Sequence[Loop]: ...
    @property
    def paused(self) -> bool: ...
    @property
    def log_stream(self) -> LogPublisher | None: ...
    @property
    def spans(self) -> SpanSink | None: ...
    @property
    def outbox_if_running(self) -> Outbox | None:
        """The event outbox, None before the service runs."""

    def health(self) -> HealthCheckResult: ...
    def effective_status(self, health: HealthCheckResult | None = None) -> ServiceStatus: ...
    def custom_metrics(self) -> dict[str, float]: ...
    def custom_histograms(self) -> list[HistogramSample]: ...


_SEVERITY = {ServiceStatus.RUNNING: 0, ServiceStatus.DEGRADED: 1, ServiceStatus.ERROR: 2}
_PROCESS = psutil.Process()


def framework_details(service: Observed) -> dict[str, Any]:
    """Counters every service shows in its health details."""
    outbox = service.outbox_if_running
    return {
        "intake": service.intake.stats(),
        "events": msgspec.to_builtins(outbox.stats()) if outbox else None,
        "bus": service.bus_stats.as_dict(),
        "breakers": [msgspec.to_builtins(b.snapshot()) for b in service.breakers],
        "loops": [msgspec.to_builtins(loop.stats()) for loop in service.loops],
        "paused": service.paused,
        "logs": service.log_stream.handler.details() if service.log_stream else None,
        # Per process: malformed trace headers ignored, and spans handed to the exporter.
        "tracing": {
            "malformed": dict(tracing.MALFORMED),
            "spans_recorded": service.spans.recorded if service.spans else None,
        },
    }


def combine_health(service: Observed) -> HealthCheckResult:
    """The worst of the service's own health, its error window and framework checks."""
    own = service.health()
    window = HealthCheckResult.from_metrics(
        service.window.stats(), max_error_rate=service.config.max_error_rate
    )
    candidates: list[tuple[ServiceStatus, str]] = [
        (own.status, own.message),
        (window.status, window.message),
    ]
    for breaker in service.breakers:
        if breaker.state is BreakerState.OPEN:
            candidates.append((ServiceStatus.DEGRADED, f"circuit breaker {breaker.name} open"))
    if not service.bus_stats.connected:
        candidates.append((ServiceStatus.DEGRADED, "disconnected from NATS"))
    outbox = service.outbox_if_running
    if outbox is not None and outbox.failing:
        candidates.append(
            (ServiceStatus.DEGRADED, f"{outbox.pending} events waiting for JetStream")
        )
    last_drop = outbox.last_drop_at if outbox is not None else None
    if last_drop is not None and time.monotonic() - last_drop < service.config.health_window_s:
        candidates.append((ServiceStatus.DEGRADED, "events dropped (outbox full or unpublishable)"))
    status, message = max(candidates, key=lambda c: _SEVERITY.get(c[0], 0))
    if status is ServiceStatus.RUNNING:
        message = own.message
    details = {
        **own.details,
        "window": msgspec.to_builtins(service.window.stats()),
        "framework": framework_details(service),
    }
    return HealthCheckResult(
        healthy=status is not ServiceStatus.ERROR, status=status, message=message, details=details
    )


def service_metrics(service: Observed) -> ServiceMetrics:
    """The instance's numbers for its ``metrics`` endpoint."""
    cpu = _PROCESS.cpu_times()
    events = service.outbox_if_running
    if events is None:
        raise RuntimeError(f"{service.name} is not running")
    outbox = events.stats()
    intake = service.intake
    return ServiceMetrics(
        service=service.name,
        instance=service.instance,
        status=service.effective_status(),
        uptime_s=time.time() - service.started_at,
        rss_bytes=_PROCESS.memory_info().rss,
        cpu_seconds=cpu.user + cpu.system,
        handled=intake.handled,
        invalid=sum(intake.invalid.values()),
        handler_errors=sum(intake.errors.values()),
        events_emitted=outbox.emitted,
        events_acked=outbox.acked,
        events_dropped=outbox.dropped,
        events_pending=outbox.pending,
        custom=service.custom_metrics(),
        histograms=[*events.latency.samples(), *service.custom_histograms()],
    )
