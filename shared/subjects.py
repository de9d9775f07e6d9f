"""The one catalogue of subjects, streams, buckets and object stores.

Every name is derived from the cluster prefix ``P`` so that two clusters can share
one NATS server. No other module builds a subject by hand.

=================================  ==========================================
``P.beacon.<service>.<instance>``   Beacon, every beacon interval
``P.event.<service>.<noun>.<phase>`` Event envelope, captured by ``P_EVENTS``
``P.ctl.<service>.<instance>``      ControlCommand -> ControlReply
``P.ctl.<service>.all``             the same, answered by every instance
``P.api.<service>.<method>``        request/reply, NATS micro endpoints
``P.api.job_manager.report.<node>`` JobReport from one node agent
``P.node.<node_id>``                NodeInfo
``P.jobs.<pool>``                   JobDispatch, work-queue stream ``P_JOBS``
``P.metrics.cluster``               ClusterMetrics
``P.log.<service>.<instance>``      LogEntry, captured by ``P_LOGS``
=================================  ==========================================
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from shared.errors import ConfigError

DEFAULT_PREFIX = "ringmaster"

_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")

#: Phases made of more than one word; every other type ends in a one-word phase.
MULTI_WORD_PHASES = ("GAVE_UP",)

#: Every KV bucket, keyed by its short name, with the one service that writes it.
BUCKET_OWNERS: dict[str, str] = {
    "jobs": "job_manager",
    "nodes": "node_agent",
    "models": "training_coordinator",
    "scheduler": "selfplay_scheduler",
    "manifests": "sync_planner",
    "leases": "shared",
    "state": "state_manager",
    "loops": "loop_manager",
    "history": "job_manager",
}


def check_token(value: str, what: str) -> str:
    """Return ``value`` if it is one subject token, else raise ConfigError naming ``what``."""
    if not _TOKEN.match(value):
        raise ConfigError(f"{what}: {value!r} must be one token of letters, digits, '_' or '-'")
    return value


@functools.cache  # a handful of types, split on every emit: the hot path of events
def pool_durable(pool: str) -> str:
    """The agents' durable consumer of the dispatch pool ``pool`` in ``P_JOBS``
    (``node.<id>`` -> ``node-<id>``, ``cap.train`` -> ``cap-train``): one name for the
    agent that binds it, the permission that lets it, and the reaper that reads it."""
    kind, _, rest = pool.partition(".")
    return f"{kind}-{rest}"


def split_event_type(event_type: str) -> tuple[str, str]:
    """Split ``NOUN_PHASE`` into its noun and phase: ``DATA_SYNC_STARTED`` -> data_sync, started."""
    for phase in MULTI_WORD_PHASES:
        if event_type.endswith("_" + phase):
            return event_type[: -len(phase) - 1].lower(), phase.lower()
    noun, sep, phase = event_type.rpartition("_")
    if not sep or not noun or not phase:
        raise ValueError(f"event type {event_type!r} is not NOUN_PHASE")
    return noun.lower(), phase.lower()


@dataclass(frozen=True)
class Subjects:
    """All names for one cluster prefix."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        check_token(self.prefix, "prefix")

    # -- subjects ---------------------------------------------------------
    def beacon(self, service: str, instance: str) -> str:
        """Where one instance publishes its beacon."""
        return f"{self.prefix}.beacon.{service}.{instance}"

    @property
    def beacons(self) -> str:
        """Every beacon of the cluster."""
        return f"{self.prefix}.beacon.*.*"

    def event(self, service: str, event_type: str) -> str:
        """Where ``service`` publishes an event of ``event_type``."""
        noun, phase = split_event_type(event_type)
        return f"{self.prefix}.event.{service}.{noun}.{phase}"

    @property
    def events(self) -> str:
        """Every event of the cluster (what ``P_EVENTS`` captures)."""
        return f"{self.prefix}.event.>"

    @property
    def failed_events(self) -> str:
        """Every failure event of the cluster."""
        return f"{self.prefix}.event.*.*.failed"

    def events_of(self, service: str) -> str:
        """Every event one service emits."""
        return f"{self.prefix}.event.{service}.>"

    def ctl(self, service: str, instance: str) -> str:
        """Control subject of one instance."""
        return f"{self.prefix}.ctl.{service}.{instance}"

    def ctl_all(self, service: str) -> str:
        """Control subject every instance of ``service`` answers."""
        return f"{self.prefix}.ctl.{service}.all"

    def api(self, service: str, method: str) -> str:
        """Request/reply endpoint of a service."""
        return f"{self.prefix}.api.{service}.{method}"

    def instance_api(self, service: str, instance: str, method: str) -> str:
        """Endpoint of one instance (not load-balanced), such as its ``metrics``."""
        return f"{self.prefix}.api.{service}.{instance}.{method}"

    def node_report(self, node_id: str) -> str:
        """Where one node agent sends its JobReports (the job manager checks the node)."""
        return f"{self.prefix}.api.job_manager.report.{node_id}"

    def node(self, node_id: str) -> str:
        """Where a node agent publishes its NodeInfo."""
        return f"{self.prefix}.node.{node_id}"

    @property
    def nodes(self) -> str:
        """Every NodeInfo."""
        return f"{self.prefix}.node.*"

    def jobs(self, pool: str) -> str:
        """A job pool: ``node.<id>`` or ``cap.<capability>``."""
        return f"{self.prefix}.jobs.{pool}"

    @property
    def all_jobs(self) -> str:
        """Every job pool (what ``P_JOBS`` captures)."""
        return f"{self.prefix}.jobs.>"

    @property
    def metrics_cluster(self) -> str:
        """Cluster metrics from the status metrics collector."""
        return f"{self.prefix}.metrics.cluster"

    def log(self, service: str, instance: str) -> str:
        """Where one instance publishes its log records."""
        return f"{self.prefix}.log.{service}.{instance}"

    @property
    def logs(self) -> str:
        """Every log record of the cluster (what ``P_LOGS`` captures)."""
        return f"{self.prefix}.log.>"

    def logs_of(self, service: str) -> str:
        """Every log record of one service kind."""
        return f"{self.prefix}.log.{service}.*"

    # -- JetStream names ---------------------------------------------------
    @property
    def events_stream(self) -> str:
        """Limits-retention stream of every event."""
        return f"{self.prefix}_EVENTS"

    @property
    def logs_stream(self) -> str:
        """Limits-retention stream of every log record, bounded by age and size."""
        return f"{self.prefix}_LOGS"

    @property
    def jobs_stream(self) -> str:
        """Work-queue stream of job dispatches."""
        return f"{self.prefix}_JOBS"

    @property
    def data_store(self) -> str:
        """Object store of game data and models, content-addressed by sha256."""
        return f"{self.prefix}_data"

    def bucket(self, name: str) -> str:
        """KV bucket name for a short name in BUCKET_OWNERS."""
        if name not in BUCKET_OWNERS:
            raise KeyError(f"unknown bucket {name!r}; known: {sorted(BUCKET_OWNERS)}")
        return f"{self.prefix}_{name}"

    # -- what permissions are written in (shared/permissions.py) -------------
    def all_of(self, kind: str) -> str:
        """Every subject of one kind (``beacon``, ``event``, ``ctl``, ``api``, ``node``)."""
        return f"{self.prefix}.{kind}.>"

    def kv_stream(self, name: str) -> str:
        """The stream behind KV bucket ``name`` (short name)."""
        return f"KV_{self.bucket(name)}"

    def kv_writes(self, name: str) -> str:
        """What a put, delete or purge of any key of bucket ``name`` publishes to."""
        return f"$KV.{self.bucket(name)}.>"

    @property
    def data_stream(self) -> str:
        """The stream behind the object store."""
        return f"OBJ_{self.data_store}"

    @property
    def data_writes(self) -> str:
        """What storing an object publishes to (chunks and metadata)."""
        return f"$O.{self.data_store}.>"

    @property
    def jobs_max_deliveries(self) -> str:
        """The server's advisories for job messages delivered ``max_deliver`` times."""
        return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{self.jobs_stream}.>"

    def user(self, kind: str) -> str:
        """The NATS user of one service kind of this cluster."""
        return f"{self.prefix}-{kind}"

    def inbox_prefix(self, kind: str) -> str:
        """Reply inbox prefix of one service kind, so no other kind can read its replies."""
        return f"_INBOX.{self.user(kind)}"
