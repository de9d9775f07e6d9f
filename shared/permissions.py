"""Who may publish and subscribe to what: the one table the NATS permissions come from.

Every rule is a (action, subject, reason) triple derived from ``shared/subjects.py``;
``ringmaster nats-config`` renders them as nats-server users, ``docs/operations.md``
explains them, and the permission tests check each denial. One user per service
kind; the ``operator`` user (people and the CLI) may do everything, and only it
and the orchestrator (which probes an instance directly before calling it LOST)
may publish control commands.

Every service kind gets the rules of the Service base class (its beacons, its
events, its control and API subjects, ``$SRV`` discovery, replies to its own
inbox), JetStream API calls scoped to the streams it uses, and its own extras.
Replies go to ``_INBOX.>`` (unguessable subjects only the asker reads; the server's
``allow_responses`` alone would refuse a reply sent after a reconnect to another
server) and, under ``allow_responses``, to JetStream flow control.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.permission_rules import Action, Level, Rule, js_rules, unique_rules
from shared.subjects import BUCKET_OWNERS, Subjects

OPERATOR = "operator"
ORCHESTRATOR = "orchestrator"

#: Every service kind that gets a user, in the order the config lists them.
KINDS = (
    "orchestrator",
    "state_manager",
    "job_manager",
    "node_selector",
    "node_agent",
    "selfplay_scheduler",
    "sync_planner",
    "training_coordinator",
    "loop_manager",
    "status_metrics_collector",
)

ALL_BUCKETS = tuple(BUCKET_OWNERS)

# Names of the streams that are not KV buckets (bucket short names name the others).
EVENTS, JOBS, DATA, LOGS = "@events", "@jobs", "@data", "@logs"


@dataclass(frozen=True)
class Needs:
    """What a kind needs beyond the Service base: streams by level, extra subjects."""

    streams: dict[str, Level]  # EVENTS, JOBS, DATA or a bucket short name
    publish: tuple[tuple[str, str], ...] = ()
    subscribe: tuple[tuple[str, str], ...] = ()
    writes: tuple[str, ...] = ()  # bucket short names whose keys it puts


def stream_name(s: Subjects, short: str) -> str:
    """The JetStream stream of a short name used in :class:`Needs`."""
    if short == EVENTS:
        return s.events_stream
    if short == JOBS:
        return s.jobs_stream
    if short == LOGS:
        return s.logs_stream
    if short == DATA:
        return s.data_stream
    return s.kv_stream(short)


def _needs(s: Subjects) -> dict[str, Needs]:
    """The per-kind table: what each service kind uses beyond the Service base."""
    # Service.bucket() ensures every bucket it opens: creating it when missing.
    reads: dict[str, Level] = dict.fromkeys(ALL_BUCKETS, "provision")
    api = s.api
    return {
        "orchestrator": Needs(
            {**reads, "models": "read", "manifests": "read", "nodes": "read", "jobs": "read"},
            publish=(
                (s.all_of("ctl"), "probe an instance directly before calling it LOST"),
                (api("job_manager", "list"), "jobs for the status view"),
                (api("job_manager", "counts"), "job counts for the status view"),
                ("$SRV.>", "discover instances for the status view"),
            ),
            subscribe=(
                (s.beacons, "the registry is built from beacons"),
                (s.nodes, "nodes for the status view"),
            ),
        ),
        "state_manager": Needs(
            {
                EVENTS: "admin",
                LOGS: "admin",
                JOBS: "admin",
                DATA: "admin",
                **dict.fromkeys(ALL_BUCKETS, "admin"),
            },
            publish=(
                ("$JS.API.STREAM.NAMES", "find every stream and bucket of the cluster"),
                ("$JS.API.STREAM.LIST", "find every stream and bucket of the cluster"),
                ("$JS.API.INFO", "account limits for the validation loop"),
            ),
            writes=ALL_BUCKETS,  # restoring a snapshot writes every bucket
        ),
        "job_manager": Needs(
            {
                **reads,
                JOBS: "admin",
                "jobs": "admin",
                "history": "admin",
                "leases": "read",
                "nodes": "read",
            },
            publish=(
                (s.all_jobs, "dispatch jobs into the work-queue stream"),
                (api("node_selector", "select"), "choose a node for a job"),
            ),
            subscribe=(
                (s.nodes, "notice nodes that appear and go"),
                (s.jobs_max_deliveries, "jobs past max_deliver fail terminally"),
            ),
            writes=("jobs", "history", "leases"),
        ),
        "node_selector": Needs(
            {"nodes": "read"},
            subscribe=(
                (s.nodes, "the live view of nodes"),
                (s.failed_events, "mark nodes whose jobs fail"),
            ),
        ),
        "node_agent": Needs(
            {JOBS: "read", "nodes": "provision", DATA: "read"},
            publish=(
                (s.nodes, "its NodeInfo"),
                (s.node_report("*"), "report job progress and results (hollow nodes)"),
                (s.data_writes, "upload job outputs (content-addressed)"),
                (api("sync_planner", "seal"), "have uploads named (blob_upload = seal)"),
            ),
            subscribe=((s.event("job_manager", "JOB_CANCELLED"), "kill cancelled jobs"),),
            writes=("nodes",),
        ),
        "selfplay_scheduler": Needs(
            {**reads, "scheduler": "read", "models": "read", "manifests": "read", EVENTS: "read"},
            publish=(
                (api("job_manager", "submit"), "submit selfplay jobs"),
                (api("job_manager", "list"), "count its selfplay jobs in flight"),
            ),
            subscribe=(
                (s.nodes, "size the work to the cluster's free slots"),
                (
                    s.event("job_manager", "JOB_COMPLETED"),
                    "learn how long selfplay jobs run, to size the next ones",
                ),
            ),
            writes=("scheduler",),
        ),
        "sync_planner": Needs(
            {
                **reads,
                "jobs": "read",
                "models": "read",
                "manifests": "read",
                "leases": "read",
                EVENTS: "read",
                DATA: "admin",
            },
            publish=(
                (api("job_manager", "submit"), "submit prefetch jobs"),
                (s.data_writes, "store manifests' data"),
            ),
            writes=("manifests", "leases"),
        ),
        "training_coordinator": Needs(
            {
                **reads,
                "models": "read",
                "manifests": "read",
                "nodes": "read",
                EVENTS: "read",
                DATA: "read",
            },
            publish=(
                (api("job_manager", "submit"), "submit training and evaluation jobs"),
                (api("sync_planner", "training_data"), "ask for training data"),
                (api("sync_planner", "prefetch"), "prefetch it to the training node"),
                (api("node_selector", "select"), "choose the node to train on"),
            ),
            subscribe=((s.nodes, "place training on the best node"),),
            writes=("models",),
        ),
        "loop_manager": Needs(
            {**reads, "loops": "read", EVENTS: "read"},
            writes=("loops",),
        ),
        "status_metrics_collector": Needs(
            {},
            publish=(
                (s.metrics_cluster, "publish cluster metrics"),
                ("$SRV.>", "discover every instance ($SRV.STATS)"),
                (f"{s.prefix}.api.*.*.metrics", "ask every instance for its metrics"),
            ),
            subscribe=((s.nodes, "per-node GPU series for Prometheus"),),
        ),
    }


def base_rules(s: Subjects, kind: str) -> list[Rule]:
    """What every service needs from the Service base class."""
    return [
        Rule("publish", s.beacon(kind, "*"), "its beacons"),
        Rule("publish", s.events_of(kind), "its events (captured by the events stream)"),
        Rule("publish", s.logs_of(kind), "its log records (captured by the logs stream)"),
        Rule("publish", s.instance_api(kind, "*", "metrics"), "probe itself (ringmaster probe)"),
        # allow_responses alone would do, were it not tracked by the server the request
        # came through: a reply sent after a reconnect to another server would be
        # refused. Replies go to unguessable inboxes nobody else can read.
        Rule("publish", "_INBOX.>", "answer requests, also after a reconnect"),
        Rule("subscribe", s.ctl(kind, "*"), "control commands to it and to all of its kind"),
        Rule("subscribe", s.all_of("api").replace(">", f"{kind}.>"), "its own API endpoints"),
        Rule("subscribe", "$SRV.*", "answer $SRV discovery of every service"),
        Rule("subscribe", f"$SRV.*.{kind}", "answer $SRV discovery of its kind"),
        Rule("subscribe", f"$SRV.*.{kind}.*", "answer $SRV discovery of one instance"),
        Rule("subscribe", s.inbox_prefix(kind) + ".>", "replies to its own requests"),
    ]


def rules_for(s: Subjects, kind: str) -> list[Rule]:
    """Every rule of one service kind, base first, without duplicates."""
    if kind not in KINDS:
        raise KeyError(f"unknown service kind {kind!r}; known: {', '.join(KINDS)}")
    needs = _needs(s)[kind]
    rules = base_rules(s, kind)
    streams = {EVENTS: "provision", LOGS: "provision", **needs.streams}
    for short, level in streams.items():
        rules += js_rules(stream_name(s, short), level)
    rules += [Rule("publish", s.kv_writes(b), f"write the {b} bucket") for b in needs.writes]
    rules += [Rule("publish", subject, why) for subject, why in needs.publish]
    rules += [Rule("subscribe", subject, why) for subject, why in needs.subscribe]
    return unique_rules(rules)


def allowed(s: Subjects, kind: str, action: Action) -> list[str]:
    """The subjects one kind may ``action`` (publish or subscribe)."""
    return [r.subject for r in rules_for(s, kind) if r.action == action]
