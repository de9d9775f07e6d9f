"""The denials the permissions promise, as a table generated from the rules.

Each :class:`Denial` is one thing one user must not do. :func:`denials` lists them
for two example nodes ``a`` and ``b``; :func:`check` proves each against the rules
(no allowed subject of that user matches it), the permission tests try each one on a
real nats-server, and :func:`markdown` renders the table ``docs/operations.md``
carries between its ``denials`` markers (``ringmaster nats-config --denials``).
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.blob_wire import chunk_subject, meta_subject
from shared.node_permissions import NodeSpec, node_allowed
from shared.permission_rules import Action
from shared.permissions import allowed
from shared.subjects import Subjects

NODE_A = NodeSpec("a", ("cpu",))
NODE_B = NodeSpec("b", ("cpu", "gpu"))
BEGIN = "<!-- denials:begin (ringmaster nats-config --denials) -->"
END = "<!-- denials:end -->"
#: An example blob name (a sha256) and object NUID for the object-store rows.
EXAMPLE_BLOB = "5feceb66ffc86f38d952786c6d696c79c2dbc239dd4e91b46729d73a27fb57e9"
NUID = "Sb2cRwnXoYd4G1bPYpJo3N"


@dataclass(frozen=True)
class Denial:
    """``who`` (a kind or ``node-<id>``) may not ``action`` ``subject``: ``what`` it would be."""

    who: str
    action: Action
    subject: str
    what: str


def denials(s: Subjects) -> list[Denial]:
    """Every promised denial, nodes first."""
    a, b = NODE_A, NODE_B
    jobs = f"$JS.API.CONSUMER.%s.{s.jobs_stream}.node-{b.node_id}"
    node: list[tuple[Action, str, str]] = [
        ("publish", s.node(b.node_id), "node B's NodeInfo"),
        ("publish", f"$KV.{s.bucket('nodes')}.{b.node_id}", "node B's nodes-bucket key"),
        ("publish", s.node_report(b.node_id), "a report on node B's subject"),
        ("publish", s.api("job_manager", "report"), "a report without its node"),
        ("publish", jobs % "INFO", "looking up node B's pinned consumer"),
        ("publish", jobs % "MSG.NEXT", "pulling node B's pinned work"),
        ("publish", jobs % "DELETE", "deleting node B's consumer"),
        ("publish", f"{jobs % 'CREATE'}.{s.jobs('node.b')}", "a consumer on B's pinned pool"),
        (
            "publish",
            f"$JS.API.CONSUMER.CREATE.{s.jobs_stream}.node-a.{s.all_jobs}",
            "its own consumer widened to every pool",
        ),
        ("publish", f"$JS.API.CONSUMER.CREATE.{s.jobs_stream}", "an ephemeral job consumer"),
        ("publish", f"$JS.API.DIRECT.GET.{s.jobs_stream}", "reading dispatches directly"),
        ("publish", f"$JS.API.STREAM.PURGE.{s.data_stream}", "purging blobs"),
        ("publish", f"$JS.API.STREAM.MSG.DELETE.{s.data_stream}", "deleting a blob's messages"),
        (
            "publish",
            meta_subject(s.data_store, EXAMPLE_BLOB),
            "naming, overwriting or deleting a blob",
        ),
        ("publish", chunk_subject(s.data_store, f"{b.node_id}.{NUID}"), "chunks into B's upload"),
        ("publish", chunk_subject(s.data_store, NUID), "chunks into a manager's upload"),
        ("publish", s.ctl("node_agent", "all"), "a control command"),
        ("publish", s.api("job_manager", "cancel"), "cancelling a job"),
        ("subscribe", s.jobs(f"node.{b.node_id}"), "node B's dispatches as published"),
        ("subscribe", f"_INBOX.{s.user(b.kind)}.>", "node B's replies"),
    ]
    rows = [Denial(a.kind, act, subj, what) for act, subj, what in node]
    api = s.api
    rows += [
        Denial("selfplay_scheduler", "publish", api("job_manager", "cancel"), "cancelling a job"),
        Denial("selfplay_scheduler", "publish", s.node_report("a"), "a job report"),
        Denial("training_coordinator", "publish", api("job_manager", "cancel"), "cancelling"),
        Denial("training_coordinator", "publish", s.node_report("a"), "forging a train result"),
        Denial("sync_planner", "publish", api("job_manager", "cancel"), "cancelling a job"),
        Denial("orchestrator", "publish", api("job_manager", "submit"), "submitting a job"),
        Denial("node_agent", "publish", api("job_manager", "submit"), "submitting a job"),
        Denial("loop_manager", "publish", api("job_manager", "submit"), "submitting a job"),
    ]
    return rows


def matches(pattern: str, subject: str) -> bool:
    """Whether NATS subject ``pattern`` (``*``, ``>``) covers ``subject``."""
    want, got = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(got) > i
        if i >= len(got) or got[i] == ">" or token not in ("*", got[i]):
            return False
    return len(want) == len(got)


def allowed_for(s: Subjects, who: str, action: Action) -> list[str]:
    """The subjects ``who`` may ``action``: a kind's, or a node's (NODE_A or NODE_B)."""
    for node in (NODE_A, NODE_B):
        if who == node.kind:
            return node_allowed(s, node, action)
    return allowed(s, who, action)


def check(s: Subjects) -> list[str]:
    """Denials that an allowed subject would let through (empty when all hold)."""
    leaks = []
    for d in denials(s):
        hits = [p for p in allowed_for(s, d.who, d.action) if matches(p, d.subject)]
        if hits:
            leaks.append(f"{d.who} may {d.action} {d.subject} ({d.what}) through {hits}")
    return leaks


def markdown(s: Subjects) -> str:
    """The denial table, between its markers, as ``docs/operations.md`` carries it."""
    lines = [BEGIN, "| who | may not | subject | that is |", "|---|---|---|---|"]
    lines += [f"| {d.who} | {d.action} | `{d.subject}` | {d.what} |" for d in denials(s)]
    return "\n".join([*lines, END])
