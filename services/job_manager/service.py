"""The job manager service: the job API, dispatch into ``P_JOBS`` and the one reaper.

Endpoints on ``P.api.job_manager.<method>``: ``submit`` (JobSpec -> JobRecord),
``get`` and ``cancel`` (JobRef -> JobRecord), ``list`` (JobQuery -> JobList, a page),
``counts`` (Empty -> JobCounts) and ``report`` (JobReport -> JobRecord), the node
agents' channel (see ``api.py``).

At start it provisions what it needs (P_JOBS, the jobs, history, leases and nodes
buckets), loads the catalog (the index of non-terminal jobs plus a summary of each
terminal one) from a watch on the jobs bucket, listens to NodeInfo (node liveness for
the reaper) and to the server's max-deliveries advisories for P_JOBS, and runs the
reaper and history loops (which act only while this instance holds the reaper lease).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

import anyio
from anyio.abc import TaskStatus
from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from services.job_manager.announce import Announcer
from services.job_manager.api import JobApi
from services.job_manager.catalog import JobCatalog
from services.job_manager.config import JobManagerConfig
from services.job_manager.dispatcher import Dispatcher
from services.job_manager.history import History
from services.job_manager.listing import Lister
from services.job_manager.reaper import MaxDeliveries, Reaper, max_deliveries_subject
from services.job_manager.selection import SELECTOR
from shared.circuit_breaker import CircuitBreaker
from shared.contracts import Empty, HealthCheckResult, HistogramSample
from shared.jobs import JobQuery, JobRef, JobReport, JobSpec, NodeInfo
from shared.kv import keys_matching
from shared.loops import Loop
from shared.provision import ensure_stream, jobs_stream_config
from shared.service import Service

log = logging.getLogger("ringmaster.job_manager")


class JobManagerService(Service[JobManagerConfig]):
    """Owns the jobs bucket and P_JOBS: submit, dispatch, fenced attempts, reaping."""

    name = "job_manager"
    description = "job API, dispatch into P_JOBS, fenced attempts and the one reaper"
    config_type = JobManagerConfig
    kv: KeyValue

    def __init__(
        self,
        config: JobManagerConfig,
        *,
        reload_config: Callable[[], JobManagerConfig] | None = None,
    ) -> None:
        super().__init__(config, reload_config=reload_config)
        self.index = JobCatalog()
        self.counts: Counter[str] = Counter()
        self._follow_scope = anyio.CancelScope()
        self._api: JobApi | None = None

    @property
    def api(self) -> JobApi:
        """The request handlers, with the dispatcher and reaper they use (once set up)."""
        if self._api is None:
            raise RuntimeError("the job manager is not set up")
        return self._api

    async def setup(self) -> None:
        """Provision, load the index, then subscribe, add endpoints and the reaper."""
        cfg = self.config
        await ensure_stream(self.js, jobs_stream_config(self.subjects, cfg))
        self.kv = await self.bucket("jobs")
        breaker = self.add_breaker(
            CircuitBreaker(
                SELECTOR,
                failure_threshold=cfg.selector_failure_threshold,
                recovery_timeout=cfg.selector_recovery_s,
            )
        )
        dispatcher = Dispatcher(
            spawn=self.spawn,
            nc=self.nc,
            js=self.js,
            kv=self.kv,
            subjects=self.subjects,
            config=cfg,
            index=self.index,
            breaker=breaker,
        )
        announcer = Announcer(kv=self.kv, index=self.index, emit=self.emit)
        reaper = Reaper(
            kv=self.kv,
            js=self.js,
            leases=await self.bucket("leases"),
            holder=self.instance,
            subjects=self.subjects,
            config=cfg,
            index=self.index,
            dispatcher=dispatcher,
            emit=self.emit,
            counts=self.counts,
            announce=announcer.announce,
        )
        history = History(
            js=self.js,
            jobs=self.kv,
            history=await self.bucket("history"),
            jobs_bucket=self.subjects.bucket("jobs"),
            catalog=self.index,
            lease=reaper.lease,
            config=cfg,
            counts=self.counts,
        )
        payload = lambda: self.nc.max_payload  # noqa: E731 (the server's, known at connect)
        lister = Lister(kv=self.kv, catalog=self.index, max_payload=payload, counts=self.counts)
        self._api = api = JobApi(
            kv=self.kv,
            config=cfg,
            index=self.index,
            dispatcher=dispatcher,
            reaper=reaper,
            announcer=announcer,
            emit=self.emit,
            emit_nowait=self.emit_nowait,
            spawn=self.spawn,
            paused=lambda: self.paused,
            counts=self.counts,
            lister=lister,
            history=history,
        )
        await self._seed_nodes()
        with anyio.fail_after(max(30.0, cfg.connect_timeout)):
            await self.tg.start(self._follow)
        await self.subscribe(self.subjects.nodes, NodeInfo, self._on_node, kind="node")
        await self.subscribe(
            max_deliveries_subject(self.subjects.jobs_stream),
            MaxDeliveries,
            self._on_max_deliveries,
            kind="max_deliveries",
            queue=self.name,  # one instance handles each advisory
        )
        await self.add_endpoint("submit", JobSpec, api.submit)
        await self.add_endpoint("get", JobRef, api.get)
        await self.add_endpoint("list", JobQuery, api.list)
        await self.add_endpoint("cancel", JobRef, api.cancel)
        await self.add_endpoint("counts", Empty, api.job_counts)
        await self._add_report_endpoint(api)
        interval = cfg.reaper_interval
        self.add_loop(
            Loop("reaper", reaper.tick, interval=interval, max_backoff=max(5.0, interval))
        )
        owed = cfg.announce_interval

        async def sweep() -> None:
            await announcer.sweep(owed)

        # Every instance sweeps, lease or not: an announcement is idempotent, and the
        # one that restarted after a crash must not wait for the reaper lease.
        self.add_loop(Loop("announcer", sweep, interval=owed, max_backoff=max(5.0, owed)))
        # Its own loop: a long retirement pass must not delay reaping.
        every = cfg.history_interval
        self.add_loop(Loop("history", history.tick, interval=every, max_backoff=max(60.0, every)))

    async def _add_report_endpoint(self, api: JobApi) -> None:
        # One endpoint on P.api.job_manager.report.* : the subject's last token is the
        # reporting node, which only that node's credential may publish to, so the
        # handler is built per message around it.
        micro = self._micro
        assert micro is not None  # setup() runs with the micro service started
        subject = self.subjects.node_report("*")

        async def on_report(msg: Msg) -> None:
            via = msg.subject.rsplit(".", 1)[-1]
            handler = self.intake.request_handler(
                "report",
                JobReport,
                lambda report: api.report(report, via),
                lambda: micro.endpoints.get("report"),
            )
            await handler(msg)

        await micro.add_endpoint("report", subject, on_report, queue_group="q")
        self.intake_types[subject] = JobReport

    async def _seed_nodes(self) -> None:
        # A node the nodes bucket knows gets node_lost_after_s from now to be heard
        # again, so a restarted manager also reaps the jobs of nodes that died meanwhile.
        for node_id in await keys_matching(await self.bucket("nodes")):
            self.index.saw_node(node_id)

    async def _follow(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with self._follow_scope:
            await self.index.follow(
                self.kv, resync_s=self.config.index_resync_s, task_status=task_status
            )

    async def teardown(self) -> None:
        """Stop the jobs watch and give the reaper lease up before the connection drains."""
        self._follow_scope.cancel()
        if self._api is not None:
            await self._api.reaper.release()

    async def on_reload(self, old: JobManagerConfig) -> None:
        """Timeouts, backoff, the selector timeout and history apply at once; others at restart."""
        if self._api is not None:
            api = self._api
            api.config = api.dispatcher.config = api.reaper.config = self.config
            if api.history is not None:
                api.history.config = self.config

    async def _on_node(self, info: NodeInfo, _: Msg) -> None:
        self.index.saw_info(info)

    async def _on_max_deliveries(self, advisory: MaxDeliveries, _: Msg) -> None:
        await self.api.reaper.on_max_deliveries(advisory)

    # -- health ----------------------------------------------------------------------
    def health(self) -> HealthCheckResult:
        """DEGRADED while dispatch publishes fail (the framework adds the selector breaker)."""
        if self._api is None:
            return HealthCheckResult.ok("starting")
        dispatcher, reaper = self._api.dispatcher, self._api.reaper
        counts = self.index.counts()
        details = {
            "jobs": counts,
            "stale_reports": self._api.refused["stale"],
            "refused_reports": dict(self._api.refused),
            "reaped": dict(reaper.reaped),
            "announcements": dict(self._api.announcer.stats),
            "reaper_lease_held": reaper.lease.held,
            "dispatch_failures": dispatcher.stats["publish_failures"],
            "dispatch": dict(dispatcher.stats),
            "counts": dict(self.counts),
            "index": self.index.details(),
            "history": self._api.history.details() if self._api.history else {},
        }
        if dispatcher.failing:
            return HealthCheckResult.degraded(
                f"dispatch publishes failing ({dispatcher.failing} in a row)", **details
            )
        return HealthCheckResult.ok(f"{sum(counts.values())} active jobs", **details)

    def custom_metrics(self) -> dict[str, float]:
        """Jobs per non-terminal state and lifetime totals of this instance."""
        metrics: dict[str, float] = {
            f"jobs_{state.lower()}": n for state, n in self.index.counts().items()
        }
        for name in ("submitted", "completed", "failed", "cancelled", "retried"):
            metrics[f"jobs_{name}_total"] = self.counts[f"{name}_total"]
        metrics["stale_reports_total"] = self._api.refused["stale"] if self._api else 0
        metrics["jobs_retired_total"] = self.counts["retired_total"]
        metrics["jobs_terminal_kept"] = len(self.index.terminal)
        return metrics

    def custom_histograms(self) -> list[HistogramSample]:
        """Submit-to-running, queue wait and job duration, as this instance observed them."""
        return self._api.timings.samples() if self._api else []
