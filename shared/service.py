"""The Service base class: one manager, one process, one lifecycle.

``running()`` is the lifecycle as one async context manager:

    connect (bounded) -> provision the event stream -> setup() (subclass:
    provision, subscribe, endpoints, loops) -> control subjects -> micro service
    -> loops and beacons -> SERVICE_STARTED -> ready

and it stops in a fixed order: stop intake (endpoints and subscriptions), wait for
in-flight handlers up to ``shutdown_timeout``, teardown() (subclass finishes its
work), SERVICE_STOPPED, flush the outbox, leave the micro service, cancel loops,
drain the connection with a short timeout.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, ClassVar, Generic, Self, TypeVar

import anyio
from anyio.abc import TaskGroup, TaskStatus
from nats.aio.client import Client
from nats.aio.subscription import Subscription
from nats.js.client import JetStreamContext

import shared
from shared import otel
from shared.beacons import Beacons
from shared.bus import BusStats, connect
from shared.circuit_breaker import CircuitBreaker
from shared.config import BaseConfig
from shared.contracts import (
    Empty,
    HealthCheckResult,
    HistogramSample,
    ServiceMetrics,
    ServiceStatus,
)
from shared.control import start_control
from shared.credentials import TlsFiles
from shared.emitter import EventEmitter
from shared.events import ServiceStarted, ServiceStopped
from shared.health import combine_health, service_metrics
from shared.intake import Intake
from shared.logstream import OWNER, LogPublisher
from shared.loops import Loop
from shared.micro import MicroService
from shared.otel import SpanSink
from shared.outbox import Outbox
from shared.provision import ensure_stream, events_stream_config, logs_stream_config
from shared.service_tools import ServiceTools
from shared.subjects import Subjects
from shared.window import SlidingWindow

log = logging.getLogger("ringmaster.service")

C = TypeVar("C", bound=BaseConfig)


class Service(ServiceTools, Generic[C]):
    """Base of every manager. Subclasses set ``name`` and override the hooks; what they
    call while running is in :class:`shared.service_tools.ServiceTools`."""

    config: C

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    version: ClassVar[str] = shared.__version__
    config_type: ClassVar[type[BaseConfig]] = BaseConfig

    def __init__(self, config: C, *, reload_config: Callable[[], C] | None = None) -> None:
        if not self.name:
            raise TypeError(f"{type(self).__name__} must set name")
        self.config = config
        self.reload_config = reload_config
        self.subjects = Subjects(config.prefix)
        self.instance = config.instance
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.started_at = time.time()
        self.bus_stats = BusStats()
        self.window = SlidingWindow(config.health_window_s)
        self.intake = Intake(
            window=self.window,
            max_bytes=config.max_message_bytes,
            concurrency=config.handler_concurrency,
        )
        self.breakers: list[CircuitBreaker] = []
        self.loops: list[Loop] = []
        self.status = ServiceStatus.STARTING
        self.paused = False
        self.draining = False
        self.stop_reason = ""
        self._stop_requested = anyio.Event()
        self.beacons = Beacons(self)
        #: Builds this instance's events; its incarnation is this process's life.
        self.emitter = EventEmitter(self.subjects, self.name, self.instance, lambda: self.spans)
        self.incarnation = self.emitter.incarnation
        self._subscriptions: list[Subscription] = []
        #: What each subject this instance listens to decodes into: the catalogue of its
        #: intake, for tools that feed it (the bad-input suite checks it against the
        #: connection's real subscriptions, so it cannot drift).
        self.intake_types: dict[str, type[Any]] = {}
        self._control_subs: list[Subscription] = []
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._tg: TaskGroup | None = None
        self._outbox: Outbox | None = None
        #: Span export (None unless an OTLP endpoint is configured).
        self.spans: SpanSink | None = None
        self._micro: MicroService | None = None
        self.log_stream: LogPublisher | None = None

    # -- hooks for subclasses ------------------------------------------------------
    async def setup(self) -> None:
        """Provision, subscribe, add endpoints and loops. Runs before ready."""

    async def teardown(self) -> None:
        """Finish in-flight work and stop watchers. Runs after intake stopped."""

    def health(self) -> HealthCheckResult:
        """The service's own view of its health; the framework adds its checks."""
        return HealthCheckResult.ok()

    def custom_metrics(self) -> dict[str, float]:
        """Numbers for the ``metrics`` endpoint and Prometheus."""
        return {}

    def custom_histograms(self) -> list[HistogramSample]:
        """Histograms this service observes, for the ``metrics`` endpoint and Prometheus."""
        return []

    async def on_pause(self) -> None:
        """Stop taking new work (the framework pauses the loops)."""

    async def on_resume(self) -> None:
        """Take work again."""

    async def on_drain(self) -> None:
        """Finish or hand back in-flight work before the service stops."""

    async def on_reload(self, old: C) -> None:
        """Apply a reloaded config (``self.config`` is already the new one)."""

    # -- what subclasses use: ServiceTools, and -------------------------------------
    def replace_config(self, new: C) -> None:
        """Make ``new`` the config (a reload; ``on_reload`` follows)."""
        self.config = new

    def request_stop(self, reason: str = "") -> None:
        """Ask the service to stop in order."""
        if not self._stop_requested.is_set():
            self.stop_reason = reason
            self._stop_requested.set()

    def health_check(self) -> HealthCheckResult:
        """The service's health with the framework's checks folded in."""
        return combine_health(self)

    def effective_status(self, health: HealthCheckResult | None = None) -> ServiceStatus:
        """What the beacon reports: lifecycle states first, then health."""
        if self.status in (ServiceStatus.STARTING, ServiceStatus.STOPPING, ServiceStatus.STOPPED):
            return self.status
        if self.draining:
            return ServiceStatus.DRAINING
        if self.paused:
            return ServiceStatus.PAUSED
        return (health or self.health_check()).status

    # -- lifecycle -------------------------------------------------------------------
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until a stop is requested (signal, control command or request_stop)."""
        async with self.running():
            task_status.started()
            await self._stop_requested.wait()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Self]:
        """Start the service, yield it ready, and stop it in order on exit."""
        cfg = self.config
        # Tasks started from here on inherit it: the log handler keeps to this service.
        OWNER.set(self)
        self._nc = await connect(
            cfg.nats_url,
            name=f"{self.name}:{self.instance}",
            connect_timeout=cfg.connect_timeout,
            stats=self.bus_stats,
            credentials_file=cfg.credentials_file,
            tls=TlsFiles(cfg.tls_ca_file, cfg.tls_cert_file, cfg.tls_key_file),
        )
        self.spans = otel.configure(cfg.otlp_endpoint, self.name, self.instance)
        otel.install(self.spans)
        try:
            self._js = self._nc.jetstream()
            await ensure_stream(self._js, events_stream_config(self.subjects, cfg))
            await ensure_stream(self._js, logs_stream_config(self.subjects, cfg))
            async with anyio.create_task_group() as tg:
                self._tg = tg
                self.log_stream = LogPublisher.for_service(self)
                tg.start_soon(self.log_stream.run)
                self.intake.bind(tg, self._nc)
                self._outbox = Outbox(
                    self._js, capacity=cfg.outbox_size, ack_timeout=cfg.ack_timeout
                )
                await tg.start(self._outbox.run)
                await self._start_micro()
                await self.setup()
                self._control_subs = await start_control(self)
                for loop in self.loops:
                    await tg.start(loop.run)
                await tg.start(self.beacons.run)
                self.status = ServiceStatus.RUNNING
                self.wake_beacon()
                await self.emit(
                    ServiceStarted(
                        service=self.name,
                        instance=self.instance,
                        version=self.version,
                        host=self.host,
                        pid=self.pid,
                    )
                )
                log.info("%s %s ready", self.name, self.instance)
                try:
                    yield self
                finally:
                    with anyio.CancelScope(shield=True):
                        await self._shutdown()
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._close()

    async def _start_micro(self) -> None:
        self._micro = MicroService(
            self.nc,
            name=self.name,
            instance_id=self.instance,
            version=self.version,
            description=self.description or self.name,
            metadata={
                "prefix": self.subjects.prefix,
                "instance": self.instance,
                "host": self.host,
                "pid": str(self.pid),
            },
        )
        await self._micro.start()
        await self.add_endpoint("metrics", Empty, self._metrics_reply, per_instance=True)

    async def _metrics_reply(self, _: Empty) -> ServiceMetrics:
        return service_metrics(self)

    async def _shutdown(self) -> None:
        self.status = ServiceStatus.STOPPING
        self.wake_beacon()
        self.intake.accepting = False
        if self._micro is not None:
            await self._micro.stop_endpoints()
        for sub in self._subscriptions:
            await sub.unsubscribe()
        self._subscriptions.clear()
        for sub in self._control_subs:
            await sub.unsubscribe()
        self._control_subs = []
        if not await self.intake.wait_idle(self.config.shutdown_timeout):
            log.warning(
                "%s: %d handlers still running at shutdown", self.name, self.intake.inflight
            )
        await self.teardown()
        # Queued, not awaited: when a failing task took the task group down, the outbox's
        # flusher is gone, and the bounded flush below is all the waiting there may be.
        self.emit_nowait(
            ServiceStopped(service=self.name, instance=self.instance, reason=self.stop_reason)
        )
        if not await self.outbox.flush(self.config.shutdown_timeout):
            log.error("%s: %d events not acknowledged at stop", self.name, self.outbox.pending)
        if self._micro is not None:
            await self._micro.stop()
        if self.spans is not None:
            # The export thread flushes what is queued; bounded by the exporter's timeout.
            await anyio.to_thread.run_sync(self.spans.shutdown)
        self.status = ServiceStatus.STOPPED
        await self.publish_beacon()
        if self.log_stream is not None:
            await self.log_stream.publish_queued()  # the stop's own lines

    async def _close(self) -> None:
        nc = self._nc
        if nc is None or nc.is_closed:
            return
        self.bus_stats.connected = False  # leaving on purpose: not a disconnect to report
        try:
            with anyio.fail_after(self.config.drain_timeout):
                await nc.drain()
        except (TimeoutError, OSError) as exc:
            log.warning("%s: drain did not finish (%r); closing", self.name, exc)
        if not nc.is_closed:
            await nc.close()

    # -- beacons ---------------------------------------------------------------------
    async def publish_beacon(self) -> None:
        """Publish one beacon now."""
        await self.beacons.publish()

    def wake_beacon(self) -> None:
        """Publish a beacon at once (status changed)."""
        self.beacons.wake()
