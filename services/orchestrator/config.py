"""Configuration of the orchestrator."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import msgspec

from shared.cluster import load_cluster
from shared.config import BaseConfig, Positive, PositiveInt
from shared.http_auth import check_binding


class OrchestratorConfig(BaseConfig, kw_only=True, forbid_unknown_fields=True):
    """Orchestrator settings: liveness sweep, probes, HTTP and (optionally) supervision."""

    #: Address of the HTTP server: ``/healthz``, ``/status`` and the dashboard at ``/``.
    http_host: str = "127.0.0.1"
    #: Its port: 0 picks a free one, -1 runs no HTTP server.
    http_port: Annotated[int, msgspec.Meta(ge=-1, le=65535)] = 8780
    #: A file holding the bearer token ``/status``, ``/events`` and the dashboard ask
    #: for (``/healthz`` stays open); required when ``http_host`` is beyond loopback.
    http_token_file: str = ""
    #: Seconds between liveness sweeps of the registry.
    check_interval: Positive = 0.25
    #: Seconds between refreshes of the active jobs shown in the status.
    jobs_view_interval: Positive = 1.0
    #: Seconds between reads of the champions and game counts shown in the status
    #: (they change once a generation; each read scans two small buckets).
    models_view_interval: Positive = 5.0
    #: Seconds a direct probe (a ``health`` control command) waits before LOST.
    probe_timeout: Positive = 0.5
    #: Probes in flight at once, so a mass silence does not become a request storm.
    max_probes: PositiveInt = 64
    #: Seconds of silence after which a LOST child of the supervisor is killed as hung
    #: (and restarted): never before it is LOST, and never sooner than this, so a
    #: child starved of CPU for a moment under short beacon intervals is spared.
    hung_after_s: Positive = 3.0
    #: Seconds a LOST instance stays listed before it is dropped.
    forget_lost_after_s: Positive = 300.0
    #: A cluster file (ringmaster.toml); when set, supervise the services in it.
    cluster_file: str = ""
    #: Where supervised children's logs go (``<data_dir>/logs``).
    data_dir: str = ".ringmaster"
    #: Seconds teardown waits for the supervisor to stop every child.
    supervisor_stop_timeout: Positive = 30.0
    #: Seconds one HTTP client gets to send its request and read the answer.
    http_timeout: Positive = 5.0
    #: Largest HTTP request head accepted (request line and headers).
    http_max_request_bytes: Annotated[int, msgspec.Meta(ge=256)] = 8192
    #: HTTP connections served at once; more are answered 503 and closed.
    http_max_connections: PositiveInt = 64
    #: Seconds between dashboard snapshots sent to open pages (``/events``).
    dashboard_interval: Positive = 1.0
    #: Dashboard pages open at once; more get a 503 (each holds one HTTP connection).
    dashboard_max_clients: PositiveInt = 16
    #: Events kept for the dashboard's tail, and failures for its failure list.
    dashboard_tail: PositiveInt = 200
    dashboard_failures: PositiveInt = 50
    #: Seconds between reads of new model records for the Elo curves (while a page is open).
    elo_interval: Positive = 5.0

    def __post_init__(self) -> None:
        if self.http_port >= 0:
            check_binding(self.http_host, self.http_token_file, "http_token_file")
        # Each open page holds an HTTP connection: leave room for /healthz and /status.
        if self.dashboard_max_clients >= self.http_max_connections:
            raise ValueError("dashboard_max_clients must be below http_max_connections")
        # A bad cluster file is a configuration error: refuse it at load, with the
        # file's own message (ConfigError), rather than after connecting.
        if self.cluster_file:
            load_cluster(Path(self.cluster_file))
