"""The status metrics collector service.

Each round (a Loop every ``collect_interval``): discover this cluster's instances with
``$SRV.STATS``, ask every one for its ``metrics`` in parallel (each call bounded by
``call_timeout``), publish the gathered ClusterMetrics on ``P.metrics.cluster`` and keep
it for the ``latest`` endpoint and Prometheus. A round in which too many calls did not
answer makes the collector DEGRADED until a better round.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial

import msgspec
import nats.errors
from nats.aio.msg import Msg

from services.status_metrics_collector.config import StatusMetricsCollectorConfig
from services.status_metrics_collector.families import NodeTable
from services.status_metrics_collector.policy import (
    fit,
    instance_key,
    ours,
    round_problem,
    srv_summary,
    totals,
)
from services.status_metrics_collector.prometheus import (
    PrometheusEndpoint,
    Snapshot,
    snapshot_details,
)
from shared.codec import decode, encode
from shared.collector import Collector
from shared.contracts import ClusterMetrics, Empty, HealthCheckResult, ServiceMetrics
from shared.errors import Unavailable
from shared.events import MetricsCollected
from shared.http_auth import read_token
from shared.intake import ERROR_CODE_HEADER, ERROR_HEADER
from shared.jobs import NodeInfo
from shared.loops import Loop
from shared.service import Service
from shared.srv import SrvStats, decode_stats, discover

log = logging.getLogger("ringmaster.status_metrics_collector")


class MetricsCallError(Exception):
    """An instance answered its metrics call with an error reply."""


class StatusMetricsCollectorService(Service[StatusMetricsCollectorConfig]):
    """Gathers every instance's metrics; publishes ClusterMetrics; serves Prometheus."""

    name = "status_metrics_collector"
    description = "cluster metrics from every instance, on NATS and for Prometheus"
    config_type = StatusMetricsCollectorConfig

    def __init__(
        self,
        config: StatusMetricsCollectorConfig,
        *,
        reload_config: Callable[[], StatusMetricsCollectorConfig] | None = None,
    ) -> None:
        super().__init__(config, reload_config=reload_config)
        self.collector: Collector[ServiceMetrics] = Collector(
            "metrics", timeout=config.call_timeout, limit=config.call_limit
        )
        self.latest: ClusterMetrics | None = None
        self.publish_errors = 0
        self.discover_errors = 0
        self.prometheus = PrometheusEndpoint(self.snapshot)
        self.prometheus_error = ""
        #: Rounds published without histograms, whole they were past max_payload.
        self.oversized_rounds = 0
        #: Latest NodeInfo per node, for the per-node GPU series.
        self.nodes = NodeTable()

    @property
    def prometheus_port(self) -> int | None:
        """The bound port of ``/metrics`` (None when off or not started)."""
        return self.prometheus.port

    async def setup(self) -> None:
        """The collection loop, the ``latest`` endpoint and the Prometheus server."""
        cfg = self.config
        # A round takes at most the discovery window plus one call deadline; the rest
        # is slack so that only a wedged round counts as the loop's timeout.
        self.add_loop(
            Loop(
                "collect",
                self.collect_round,
                interval=cfg.collect_interval,
                timeout=cfg.discover_timeout + cfg.call_timeout + 5.0,
                max_backoff=max(30.0, cfg.collect_interval),
            )
        )
        await self.add_endpoint("latest", Empty, self._latest)
        await self.subscribe(self.subjects.nodes, NodeInfo, self._on_node, kind="node")
        if cfg.prometheus_port >= 0:
            try:
                token_file = cfg.prometheus_token_file
                token = read_token(token_file, "prometheus_token_file") if token_file else ""
                self.prometheus.start(cfg.prometheus_host, cfg.prometheus_port, token)
            except OSError as exc:
                # Metrics still flow on NATS; the missing endpoint shows as DEGRADED.
                self.prometheus_error = f"{type(exc).__name__}: {exc}"
                log.error(
                    "Prometheus endpoint %s:%d not started: %s",
                    cfg.prometheus_host,
                    cfg.prometheus_port,
                    exc,
                )

    async def on_reload(self, old: object) -> None:
        """Timeouts and the interval apply from the next round; the HTTP port does not."""
        self.collector.timeout = self.config.call_timeout
        self.collector.limit = self.config.call_limit
        for loop in self.loops:
            loop.interval = self.config.collect_interval

    async def teardown(self) -> None:
        """Stop the HTTP server."""
        await self.prometheus.stop()

    # -- one round -------------------------------------------------------------------
    async def discover_instances(self) -> list[SrvStats]:
        """Every instance of this cluster that answered ``$SRV.STATS`` in the window."""
        found: dict[str, SrvStats] = {}
        for raw in await discover(self.nc, "STATS", timeout=self.config.discover_timeout):
            try:
                stats = decode_stats(raw)
            except (msgspec.DecodeError, msgspec.ValidationError):
                self.discover_errors += 1
                continue
            if ours(stats, self.subjects.prefix):
                found[instance_key(stats.name, stats.id)] = stats
        return list(found.values())

    async def fetch_metrics(self, service: str, instance: str) -> ServiceMetrics:
        """One instance's ServiceMetrics; raises on an error reply or a bad payload."""
        subject = self.subjects.instance_api(service, instance, "metrics")
        # The collector's own per-call deadline decides; this one only backs it up, so
        # that a slow answer counts as a timeout and not as a failure.
        msg = await self.nc.request(
            subject, encode(Empty()), timeout=self.config.call_timeout * 2 + 1.0
        )
        if msg.headers and ERROR_CODE_HEADER in msg.headers:
            raise MetricsCallError(
                f"{msg.headers[ERROR_CODE_HEADER]}: {msg.headers.get(ERROR_HEADER, '')}"
            )
        return decode(ServiceMetrics, msg.data)

    async def collect_round(self) -> None:
        """Discover, collect in parallel, publish and keep the result."""
        instances = await self.discover_instances()
        calls: dict[str, Callable[[], Awaitable[ServiceMetrics]]] = {
            instance_key(s.name, s.id): partial(self.fetch_metrics, s.name, s.id) for s in instances
        }
        result = await self.collector.run(calls)
        metrics = list(result.values.values())
        cluster = ClusterMetrics(
            prefix=self.subjects.prefix,
            collector=self.instance,
            generated_at=time.time(),
            instances=metrics,
            srv_stats=[srv_summary(s) for s in instances],
            succeeded=result.succeeded,
            timed_out=result.timed_out,
            failed=result.failed,
            timeouts=result.timeouts,
            failures=result.failures,
            totals=totals(metrics),
            elapsed_s=result.elapsed_s,
        )
        self.latest = cluster
        await self._publish(cluster)
        if result.timed_out or result.failed:
            self.emit_nowait(
                MetricsCollected(
                    instances=len(calls),
                    succeeded=result.succeeded,
                    timed_out=result.timed_out,
                    failed=result.failed,
                )
            )

    def _fitted(self, cluster: ClusterMetrics) -> bytes:
        data, trimmed = fit(cluster, self.nc.max_payload)
        self.oversized_rounds += trimmed
        return data

    async def _publish(self, cluster: ClusterMetrics) -> None:
        try:
            await self.nc.publish(self.subjects.metrics_cluster, self._fitted(cluster))
        except (nats.errors.Error, OSError) as exc:
            # Core NATS on purpose: the next round replaces this one. Counted, not retried.
            self.publish_errors += 1
            if self.publish_errors == 1:
                log.warning("publishing ClusterMetrics failed: %r (further ones only counted)", exc)

    async def _on_node(self, info: NodeInfo, _: Msg) -> None:
        self.nodes.observe(info)

    async def _latest(self, _: Empty) -> ClusterMetrics:
        if self.latest is None:
            raise Unavailable("no collection round finished yet")
        return decode(ClusterMetrics, self._fitted(self.latest))

    # -- health and metrics ----------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """The latest round and counters (read by the Prometheus thread too)."""
        return Snapshot(
            latest=self.latest,
            stats=self.collector.stats(),
            publish_errors=self.publish_errors,
            discover_errors=self.discover_errors,
            nodes=self.nodes.live(),
        )

    def health(self) -> HealthCheckResult:
        """DEGRADED when the last round had too many unanswered calls, or no /metrics."""
        snap = self.snapshot()
        details = {
            "collector": snapshot_details(snap),
            "prometheus": self.prometheus.details(),
            "oversized_rounds": self.oversized_rounds,
            "last_round": {
                "timeouts": snap.latest.timeouts if snap.latest else [],
                "failures": snap.latest.failures if snap.latest else {},
            },
        }
        stats = snap.stats
        problem = round_problem(
            stats.last_succeeded,
            stats.last_timed_out,
            stats.last_failed,
            self.config.degraded_timeout_ratio,
        )
        if problem:
            return HealthCheckResult.degraded(problem, **details)
        if self.prometheus_error:
            return HealthCheckResult.degraded(
                f"no Prometheus endpoint: {self.prometheus_error}", **details
            )
        instances = len(snap.latest.instances) if snap.latest else 0
        return HealthCheckResult.ok(f"{instances} instances in the last round", **details)

    def custom_metrics(self) -> dict[str, float]:
        """The collector's own counters."""
        stats = self.collector.stats()
        return {
            "rounds_total": stats.rounds,
            "call_successes_total": stats.successes,
            "call_timeouts_total": stats.timeouts,
            "call_failures_total": stats.failures,
            "publish_errors_total": self.publish_errors,
            "nodes": len(self.nodes.latest),
        }
