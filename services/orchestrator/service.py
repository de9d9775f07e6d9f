"""The orchestrator: a registry of every instance from its beacons, a status API, HTTP
``/healthz``, ``/status`` and the live dashboard at ``/``, and (with a cluster file)
the supervisor of its children.

It keeps no state that beacons cannot rebuild. Beacons, the liveness sweep, the
direct probes and the rule that a LOST child of the supervisor is hung (killed and
restarted) are in ``liveness.Watch``.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskStatus
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from services.orchestrator.cluster_view import ClusterView
from services.orchestrator.config import OrchestratorConfig
from services.orchestrator.dashboard import Dashboard, pages
from services.orchestrator.http import HttpServer
from services.orchestrator.liveness import Watch
from services.orchestrator.policy import BeaconHead
from services.orchestrator.supervisor import Supervisor
from shared.cluster import load_cluster
from shared.codec import encode
from shared.contracts import (
    ClusterStatus,
    Empty,
    HealthCheckResult,
    Liveness,
    ServiceStatus,
)
from shared.http_auth import read_token
from shared.jobs import NodeInfo
from shared.loops import Loop
from shared.service import Service

log = logging.getLogger("ringmaster.orchestrator")

_SERVING = (ServiceStatus.RUNNING, ServiceStatus.DEGRADED)


class OrchestratorService(Service[OrchestratorConfig]):
    """Registry, liveness, status API and HTTP; supervisor when given a cluster file."""

    name = "orchestrator"
    description = "registry of instances from beacons, cluster status, process supervisor"
    config_type = OrchestratorConfig

    def __init__(self, config: OrchestratorConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.http: HttpServer | None = None
        self.supervisor: Supervisor | None = None
        self.watch = Watch(self)
        self.registry = self.watch.registry
        self.probes = self.watch.probes
        self._beacon_sub: Subscription | None = None
        # Made in setup(): a cancel scope cannot be made outside the event loop.
        self._supervisor_scope: anyio.CancelScope | None = None
        self._supervisor_done = anyio.Event()
        self.view = ClusterView(self.subjects)
        self.dashboard = Dashboard.for_config(config, self.subjects, self.cluster_status)

    # -- lifecycle -----------------------------------------------------------------
    async def setup(self) -> None:
        """Subscribe to beacons, add the status endpoint, sweep loop, HTTP, supervisor."""
        cfg = self.config
        cluster = load_cluster(Path(cfg.cluster_file)) if cfg.cluster_file else None
        self._beacon_sub = await self.nc.subscribe(self.subjects.beacons, cb=self.watch.on_beacon)
        self.intake_types[self.subjects.beacons] = BeaconHead
        await self.add_endpoint("status", Empty, self._status)
        self.add_loop(Loop("liveness", self.watch.sweep, interval=cfg.check_interval))
        await self.subscribe(self.subjects.nodes, NodeInfo, self._on_node, kind="node_info")
        self.add_loop(Loop("jobs_view", self._refresh_jobs, interval=cfg.jobs_view_interval))
        models = Loop("models_view", self._refresh_models, interval=cfg.models_view_interval)
        self.add_loop(models)
        if cfg.http_port >= 0:
            await self._start_dashboard()
            self.http = HttpServer(
                cfg.http_host,
                cfg.http_port,
                {"/healthz": self._http_healthz, "/status": self._http_status},
                pages=pages(),
                streams={"/events": self.dashboard.hub.serve},
                timeout=cfg.http_timeout,
                max_request_bytes=cfg.http_max_request_bytes,
                max_connections=cfg.http_max_connections,
                token=read_token(cfg.http_token_file, "http_token_file")
                if cfg.http_token_file
                else "",
            )
            await self.tg.start(self.http.run)
        if cluster is not None:
            self.supervisor = Supervisor(
                cluster, nats_url=cfg.nats_url, emit=self.emit, log_dir=Path(cfg.data_dir) / "logs"
            )
            await self.tg.start(self._supervise)

    async def _start_dashboard(self) -> None:
        # One subscription and two loops, whatever the number of open pages.
        await self.nc.subscribe(self.subjects.events, cb=self.dashboard.on_event)
        self.add_loop(
            Loop("dashboard", self.dashboard.tick, interval=self.config.dashboard_interval)
        )
        refresh_elo = functools.partial(self.dashboard.refresh_elo, self.js)
        self.add_loop(Loop("elo_history", refresh_elo, interval=self.config.elo_interval))

    async def teardown(self) -> None:
        """Stop taking beacons, then stop every supervised child."""
        if self._beacon_sub is not None:
            await self._beacon_sub.unsubscribe()
            self._beacon_sub = None
        if self._supervisor_scope is not None:
            self._supervisor_scope.cancel()
            with anyio.move_on_after(self.config.supervisor_stop_timeout):
                await self._supervisor_done.wait()
            if not self._supervisor_done.is_set():
                log.error(
                    "supervisor did not stop its children within %.0fs",
                    self.config.supervisor_stop_timeout,
                )

    async def _supervise(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        assert self.supervisor is not None
        self._supervisor_scope = anyio.CancelScope()
        try:
            with self._supervisor_scope:
                await self.supervisor.run(task_status=task_status)
        finally:
            self._supervisor_done.set()

    # -- status and health -----------------------------------------------------------
    def cluster_status(self) -> ClusterStatus:
        """The registry (and supervised children) as one ClusterStatus."""
        return ClusterStatus(
            prefix=self.subjects.prefix,
            orchestrator=self.instance,
            generated_at=time.time(),
            services=self.registry.views(time.monotonic(), time.time()),
            children=self.supervisor.snapshot() if self.supervisor is not None else [],
            nodes=self.view.nodes(),
            jobs=self.view.jobs(),
            models=self.view.models(),
        )

    async def _on_node(self, info: NodeInfo, _msg: Msg) -> None:
        self.view.observe_node(info)

    async def _refresh_jobs(self) -> None:
        await self.view.refresh_jobs(self.nc, timeout=self.config.probe_timeout)

    async def _refresh_models(self) -> None:
        await self.view.refresh_models(self.js)

    async def _status(self, _: Empty) -> ClusterStatus:
        return self.cluster_status()

    def _http_status(self) -> tuple[int, bytes]:
        return 200, encode(self.cluster_status())

    def _http_healthz(self) -> tuple[int, bytes]:
        health = self.health_check()
        status = self.effective_status(health)
        ok = status in _SERVING
        body = {"ok": ok, "status": status, "message": health.message, "instance": self.instance}
        return (200 if ok else 503), encode(body)

    def health(self) -> HealthCheckResult:
        """ERROR when a child was given up on; DEGRADED when an instance needs attention."""
        details: dict[str, Any] = {
            "registry": self.registry.counts(),
            "beacons": {
                "ingested": self.watch.beacons_ingested,
                "invalid": self._invalid_beacons(),
            },
            "probes": dict(self.probes),
            "blind_sweeps": self.watch.blind_sweeps,
            "job_queries": dict(self.view.job_queries),
            "model_reads": dict(self.view.model_reads),
        }
        if self.http is not None:
            details["http"] = {"url": self.http.url, **self.http.stats}
            details["dashboard"] = self.dashboard.health()
        if self.supervisor is not None:
            details["supervisor"] = {
                "children": len(self.supervisor.snapshot()),
                "gave_up": self.supervisor.gave_up,
                "hung_kills": self.watch.hung_kills,
            }
            if self.supervisor.gave_up:
                return HealthCheckResult.error(
                    f"gave up restarting {', '.join(self.supervisor.gave_up)}", **details
                )
        troubled = self.registry.troubled(status_ignored_for=self.name)
        if troubled:
            shown = "; ".join(troubled[:5]) + (" ..." if len(troubled) > 5 else "")
            return HealthCheckResult.degraded(
                f"{len(troubled)} instances need attention: {shown}",
                troubled=troubled[:50],
                **details,
            )
        return HealthCheckResult.ok(**details)

    def _invalid_beacons(self) -> dict[str, int]:
        return {k: v for k, v in self.intake.invalid.items() if k.startswith("beacon:")}

    def custom_metrics(self) -> dict[str, float]:
        """Beacon, registry and probe counters."""
        counts = self.registry.counts()
        metrics: dict[str, float] = {
            "beacons_ingested_total": self.watch.beacons_ingested,
            "beacons_invalid_total": sum(self._invalid_beacons().values()),
            "instances": counts["instances"],
        }
        # Every liveness, zeros included: an alert on instances_lost needs the series.
        for state in Liveness:
            metrics[f"instances_{state.value.lower()}"] = counts["liveness"].get(state.value, 0)
        for kind in ("sent", "answered", "unanswered", "inconclusive"):
            metrics[f"probes_{kind}_total"] = self.probes[kind]
        children = self.supervisor.snapshot() if self.supervisor else []
        metrics["supervisor_restarts_total"] = sum(c.restarts for c in children)
        metrics["supervisor_gave_up"] = sum(c.gave_up for c in children)
        return metrics
