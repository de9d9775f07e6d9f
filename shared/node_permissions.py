"""Per-node NATS identities: what one node agent's own credential may do.

The kind-wide ``node_agent`` user (``shared/permissions.py``) serves hollow nodes and
single-host development; a real host gets its own user from
``ringmaster nats-config --nodes ID[:CAP+CAP...],...``. That user may publish only its
own NodeInfo (subject and nodes-bucket key), report only on its own report subject
(the job manager also checks the attempt's node), reach the work-queue stream only
through its own durable consumers (``node-<id>`` and ``cap-<capability>``, each bound
to its filter subject, no delete), read the replies of its own inbox, and upload
blobs: it publishes chunks under its own node id (``$O.<P>_data.C.<id>.<nuid>``) and
the sync planner's ``seal`` endpoint checks them and writes the name, so a node can
neither delete nor overwrite a blob (no meta subject, no purge, no message delete).
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.permission_rules import Rule, js_rules, unique_rules
from shared.permissions import base_rules
from shared.subjects import Subjects, check_token, pool_durable

#: The service kind whose base rules every node user gets (beacons, events, control).
AGENT_KIND = "node_agent"
#: Capabilities a node serves when ``--nodes`` names none (the node agent's default).
DEFAULT_CAPABILITIES = ("cpu",)


@dataclass(frozen=True)
class NodeSpec:
    """One node's id and the capability pools it serves."""

    node_id: str
    capabilities: tuple[str, ...] = DEFAULT_CAPABILITIES

    @property
    def kind(self) -> str:
        """The name its user and secret file are derived from (``node-<id>``)."""
        return f"node-{self.node_id}"


def parse_nodes(text: str) -> list[NodeSpec]:
    """``ID[:CAP+CAP...]`` entries separated by commas; ConfigError names a bad one."""
    nodes: list[NodeSpec] = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        node_id, sep, caps = entry.partition(":")
        check_token(node_id, "--nodes: node id")
        capabilities = tuple(c for c in caps.split("+") if c) if sep else DEFAULT_CAPABILITIES
        for capability in capabilities:
            check_token(capability, f"--nodes: capability of {node_id}")
        nodes.append(NodeSpec(node_id, capabilities or DEFAULT_CAPABILITIES))
    return nodes


def _consumer_rules(s: Subjects, durable: str, filter_subject: str) -> list[Rule]:
    """Create (bound to its filter), look up, pull from and ack one durable consumer."""
    api, stream = "$JS.API", s.jobs_stream
    why = f"its pool {filter_subject}"
    return [
        # nats-py names the filter in the create subject and the server checks that it
        # matches the config: the consumer cannot be pointed at another node's pool.
        Rule("publish", f"{api}.CONSUMER.CREATE.{stream}.{durable}.{filter_subject}", why),
        Rule("publish", f"{api}.CONSUMER.INFO.{stream}.{durable}", why),
        Rule("publish", f"{api}.CONSUMER.MSG.NEXT.{stream}.{durable}", why),
        Rule("publish", f"$JS.ACK.{stream}.{durable}.>", f"acknowledge work of {why}"),
    ]


def node_rules(s: Subjects, node: NodeSpec) -> list[Rule]:
    """Every rule of one node's user, without duplicates."""
    rules = [r for r in base_rules(s, AGENT_KIND) if not r.subject.startswith("_INBOX.")]
    rules += [
        Rule("publish", "_INBOX.>", "answer requests, also after a reconnect"),
        Rule("subscribe", f"_INBOX.{s.user(node.kind)}.>", "replies to its own requests"),
    ]
    rules += js_rules(s.events_stream, "provision")
    rules += js_rules(s.logs_stream, "provision")
    rules += js_rules(s.jobs_stream, "provision")
    rules += js_rules(s.kv_stream("nodes"), "provision")
    rules += js_rules(s.data_stream, "read")
    for pool in [f"node.{node.node_id}", *(f"cap.{c}" for c in node.capabilities)]:
        rules += _consumer_rules(s, pool_durable(pool), s.jobs(pool))
    store = s.data_store
    rules += [
        Rule("publish", s.node(node.node_id), "its own NodeInfo"),
        Rule("publish", f"$KV.{s.bucket('nodes')}.{node.node_id}", "its own nodes-bucket key"),
        Rule("publish", s.node_report(node.node_id), "reports on attempts dispatched to it"),
        # Chunks only, under its own node id: no meta message (a name, an overwrite,
        # a delete marker) and no chunks into another uploader's object.
        Rule("publish", f"$O.{store}.C.{node.node_id}.*", "upload job outputs' chunks"),
        Rule("publish", s.api("sync_planner", "seal"), "have its uploads checked and named"),
        Rule("subscribe", s.event("job_manager", "JOB_CANCELLED"), "kill cancelled jobs"),
    ]
    return unique_rules(rules)


def node_allowed(s: Subjects, node: NodeSpec, action: str) -> list[str]:
    """The subjects one node's user may ``action`` (publish or subscribe)."""
    return [r.subject for r in node_rules(s, node) if r.action == action]
