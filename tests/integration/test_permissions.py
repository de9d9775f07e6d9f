"""The generated NATS permissions: every rule denies what it should, one test each.

One nats-server runs ``deploy/nats/server.conf`` with the ``auth.conf`` that
``ringmaster nats-config`` renders. Each denial test connects as one service kind,
tries one forbidden publish or subscribe, and asserts both sides: nats-py reports a
"Permissions Violation" through ``error_cb``, and the operator, who may see
everything, saw no message get through.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import anyio
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from shared.permissions import KINDS, ORCHESTRATOR
from shared.subjects import Subjects
from shared.testing.authclient import connect_as, violated
from shared.testing.cluster import AuthServer
from shared.testing.helpers import eventually
from shared.testing.server import new_prefix

pytestmark = pytest.mark.anyio

PREFIX = new_prefix()
S = Subjects(PREFIX)
OTHER = "job_manager"  # the kind whose subjects the others try to take over


@pytest.fixture(scope="module")
def auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    """A nats-server of deploy/nats/server.conf with the generated users."""
    server = AuthServer(tmp_path_factory.mktemp("perm"), PREFIX)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def operator(auth: AuthServer) -> AsyncIterator[Client]:
    """The operator's client, which may see every subject."""
    client = await connect_as(auth, "operator", [])
    try:
        yield client
    finally:
        await client.close()


# -- forbidden publishes: (kind, subject, what it would be) -----------------------------
PUBLISH_DENIED = [
    *[(k, S.ctl(OTHER, "x"), "a control command") for k in KINDS if k != ORCHESTRATOR],
    *[(k, S.ctl_all(k), "a control command to its own kind") for k in KINDS if k != ORCHESTRATOR],
    *[(k, S.beacon(OTHER if k != OTHER else "node_agent", "x"), "another's beacon") for k in KINDS],
    ("node_agent", S.event(OTHER, "JOB_COMPLETED"), "another service's event"),
    ("node_agent", S.jobs("node.n1"), "a job dispatch"),
    ("node_agent", S.metrics_cluster, "cluster metrics"),
    ("node_agent", S.kv_writes("jobs").replace(">", "job1"), "a write to the jobs bucket"),
    ("node_agent", S.kv_writes("models").replace(">", "champion"), "a write to the models bucket"),
    ("node_agent", f"$JS.API.STREAM.DELETE.{S.events_stream}", "deleting the events stream"),
    ("node_agent", f"$JS.API.STREAM.PURGE.{S.data_stream}", "purging the object store"),
    ("node_agent", S.api("state_manager", "import"), "a state import"),
    ("job_manager", S.kv_writes("models").replace(">", "champion"), "a champion switch"),
    ("selfplay_scheduler", S.kv_writes("jobs").replace(">", "job1"), "a job record"),
    ("status_metrics_collector", S.event(OTHER, "JOB_FAILED"), "another service's event"),
    ("node_selector", S.node("n1"), "a NodeInfo"),
]


@pytest.mark.parametrize(
    ("kind", "subject", "what"),
    PUBLISH_DENIED,
    ids=[f"{k}-pub-{w.replace(' ', '_')}-{s}" for k, s, w in PUBLISH_DENIED],
)
async def test_publish_is_denied(
    auth: AuthServer, operator: Client, kind: str, subject: str, what: str
) -> None:
    got: list[Msg] = []

    async def seen(msg: Msg) -> None:
        got.append(msg)

    await operator.subscribe(subject, cb=seen)
    await operator.flush()
    errors: list[Exception] = []
    client = await connect_as(auth, kind, errors)
    try:
        await client.publish(subject, b"{}")
        await client.flush()
        await eventually(lambda: violated(errors), what=f"{kind} denied {what}")
    finally:
        await client.close()
    await operator.flush()
    await anyio.sleep(0.1)  # a message that got through would be here by now
    assert got == [], f"{kind} published {what} on {subject}"


# -- forbidden subscriptions ------------------------------------------------------------
SUBSCRIBE_DENIED = [
    *[
        (k, S.inbox_prefix(OTHER if k != OTHER else "node_agent") + ".>", "another's replies")
        for k in KINDS
    ],
    ("node_agent", S.ctl(OTHER, "*"), "another service's control commands"),
    ("node_agent", S.api(OTHER, "submit"), "another service's endpoint"),
    ("node_agent", S.beacons, "every beacon"),
    ("node_agent", ">", "everything"),
    ("job_manager", S.api("state_manager", "import"), "another service's endpoint"),
]


@pytest.mark.parametrize(
    ("kind", "subject", "what"),
    SUBSCRIBE_DENIED,
    ids=[f"{k}-sub-{w.replace(' ', '_')}" for k, s, w in SUBSCRIBE_DENIED],
)
async def test_subscribe_is_denied(
    auth: AuthServer, operator: Client, kind: str, subject: str, what: str
) -> None:
    got: list[Msg] = []
    errors: list[Exception] = []

    async def seen(msg: Msg) -> None:
        got.append(msg)

    client = await connect_as(auth, kind, errors)
    try:
        await client.subscribe(subject, cb=seen)
        await client.flush()
        await eventually(lambda: violated(errors), what=f"{kind} denied {what}")
        concrete = subject.replace(">", "x.y").replace("*", "x")
        await operator.publish(concrete, b"{}")
        await operator.flush()
        await client.flush()
        await anyio.sleep(0.1)
    finally:
        await client.close()
    assert got == [], f"{kind} received {what} on {subject}"


ALLOWED = [
    ("node_agent", S.beacon("node_agent", "n1"), "its beacon"),
    ("node_agent", S.node("n1"), "its NodeInfo"),
    ("node_agent", S.event("node_agent", "JOB_PROGRESS"), "its job event"),
    ("orchestrator", S.ctl(OTHER, "x"), "a direct probe"),
    ("operator", S.ctl(OTHER, "x"), "a control command"),
]


@pytest.mark.parametrize(("kind", "subject", "what"), ALLOWED, ids=[a[2] for a in ALLOWED])
async def test_allowed_publish_arrives(
    auth: AuthServer, operator: Client, kind: str, subject: str, what: str
) -> None:
    """The other side of every denial test: the same check passes what is allowed."""
    got: list[Msg] = []

    async def seen(msg: Msg) -> None:
        got.append(msg)

    await operator.subscribe(subject, cb=seen)
    await operator.flush()
    errors: list[Exception] = []
    client = await connect_as(auth, kind, errors)
    try:
        await client.publish(subject, b"{}")
        await client.flush()
        await eventually(lambda: got, what=f"{what} from {kind}")
    finally:
        await client.close()
    assert not violated(errors)
