"""Prometheus exposition of the latest round, from the collector's own registry.

The exported families are built from the latest ClusterMetrics and NodeInfo at scrape
time (a custom prometheus-client collector; names in ``families.py``), so an instance
that left the cluster drops out of ``/metrics`` with the next round instead of
lingering as a stale labelled gauge.
The HTTP server runs in a daemon thread (prometheus-client's WSGI app); it only
reads immutable snapshots that the event loop swaps in. With a token, every path but
``/healthz`` needs ``Authorization: Bearer <token>`` (``shared/http_auth.py``).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIServer, make_server

import anyio
import msgspec
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

from services.status_metrics_collector.families import instance_families, node_families
from services.status_metrics_collector.policy import instance_key
from shared.collector import CollectorStats
from shared.contracts import ClusterMetrics
from shared.http_auth import HEADER, authorized
from shared.jobs import NodeInfo

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger("ringmaster.status_metrics_collector.prometheus")

_LABELS = ["service", "instance"]


@dataclass(frozen=True)
class Snapshot:
    """What one scrape shows: the latest round, the nodes and the collector's counters."""

    latest: ClusterMetrics | None
    stats: CollectorStats
    publish_errors: int
    discover_errors: int
    nodes: tuple[NodeInfo, ...] = ()


class ClusterCollector:
    """A prometheus-client collector over the latest :class:`Snapshot`."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot
        #: Series left out of a scrape (bad histograms, name clashes): health details.
        self.problems: Counter[str] = Counter()

    def collect(self) -> Iterator[Metric]:
        """Yield every family for one scrape."""
        snap = self._snapshot()
        yield from self._own(snap)
        if snap.latest is not None:
            yield from self._srv(snap.latest)
            yield from instance_families(snap.latest, self.problems)
        yield from node_families(snap.nodes)

    def _own(self, snap: Snapshot) -> Iterator[Metric]:
        calls = CounterMetricFamily(
            "ringmaster_collector_calls", "metrics calls by outcome", labels=["outcome"]
        )
        calls.add_metric(["success"], snap.stats.successes)
        calls.add_metric(["timeout"], snap.stats.timeouts)
        calls.add_metric(["failure"], snap.stats.failures)
        yield calls
        yield CounterMetricFamily(
            "ringmaster_collector_rounds", "collection rounds", value=snap.stats.rounds
        )
        yield CounterMetricFamily(
            "ringmaster_collector_publish_errors",
            "ClusterMetrics publishes that failed",
            value=snap.publish_errors,
        )
        yield CounterMetricFamily(
            "ringmaster_collector_discover_errors",
            "$SRV.STATS replies that did not decode",
            value=snap.discover_errors,
        )
        yield GaugeMetricFamily(
            "ringmaster_collector_last_round_seconds",
            "duration of the latest round",
            value=snap.stats.last_elapsed_s,
        )

    def _srv(self, latest: ClusterMetrics) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "ringmaster_instance_up",
            "1 if the instance answered its metrics call in the latest round",
            labels=_LABELS,
        )
        answered = {instance_key(m.service, m.instance) for m in latest.instances}
        requests = CounterMetricFamily(
            "ringmaster_instance_srv_requests",
            "requests over all endpoints ($SRV.STATS)",
            labels=_LABELS,
        )
        errors = CounterMetricFamily(
            "ringmaster_instance_srv_errors",
            "errors over all endpoints ($SRV.STATS)",
            labels=_LABELS,
        )
        for srv in latest.srv_stats:
            labels = [srv.service, srv.instance]
            up.add_metric(labels, 1.0 if instance_key(*labels) in answered else 0.0)
            requests.add_metric(labels, srv.requests)
            errors.add_metric(labels, srv.errors)
        yield from (up, requests, errors)


class PrometheusEndpoint:
    """``/metrics`` over HTTP, on prometheus-client's server thread."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = ClusterCollector(snapshot)
        self.registry.register(self.collector)
        self.port: int | None = None
        #: Requests refused for a missing or wrong token (health details).
        self.unauthorized = 0
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self, host: str, port: int, token: str = "") -> int:
        """Bind and serve; returns the bound port (``port`` 0 picks a free one)."""
        app = self._guarded(make_wsgi_app(self.registry), token)
        server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_SilentHandler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self._server, self._thread = server, thread
        self.port = int(server.server_address[1])
        log.info("Prometheus metrics on http://%s:%d/metrics", host, self.port)
        return self.port

    def _guarded(self, app: WSGIApplication, token: str) -> WSGIApplication:
        def guarded(environ: WSGIEnvironment, start: StartResponse) -> Any:
            path = environ.get("PATH_INFO", "/")
            query = environ.get("QUERY_STRING", "")
            target = f"{path}?{query}" if query else path
            if path == "/healthz":
                start("200 OK", [("Content-Type", "text/plain")])
                return [b"ok\n"]
            if not authorized(token, environ.get("HTTP_AUTHORIZATION"), target):
                self.unauthorized += 1
                start("401 Unauthorized", [("WWW-Authenticate", "Bearer")])
                return [f"missing or wrong bearer token (header {HEADER})\n".encode()]
            return app(environ, start)

        return guarded

    async def stop(self) -> None:
        """Stop serving (off the event loop: shutdown waits for the serve loop)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        await anyio.to_thread.run_sync(server.shutdown)
        server.server_close()
        if thread is not None:
            await anyio.to_thread.run_sync(thread.join, 2.0)

    def details(self) -> dict[str, Any]:
        """For health details."""
        return {
            "port": self.port,
            "serving": self._server is not None,
            "unauthorized": self.unauthorized,
            "left_out": dict(self.collector.problems),
        }


def snapshot_details(snap: Snapshot) -> dict[str, Any]:
    """The collector's counters as builtins, for health details."""
    return {
        **msgspec.to_builtins(snap.stats),
        "publish_errors": snap.publish_errors,
        "discover_errors": snap.discover_errors,
    }
