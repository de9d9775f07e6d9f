"""The generated NATS permissions: every service runs with them, and every rule denies.

One nats-server runs ``deploy/nats/server.conf`` with the ``auth.conf`` that
``ringmaster nats-config`` renders. Each denial test connects as one service kind,
tries one forbidden publish or subscribe, and asserts both sides: nats-py reports a
"Permissions Violation" through ``error_cb``, and the operator, who may see
everything, saw no message get through.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from services.job_manager.service import JobManagerService
from services.loop_manager.service import LoopManagerService
from services.node_agent.service import NodeAgentService
from services.node_selector.service import NodeSelectorService
from services.orchestrator.service import OrchestratorService
from services.selfplay_scheduler.service import SelfplaySchedulerService
from services.state_manager.service import StateManagerService
from services.status_metrics_collector.service import StatusMetricsCollectorService
from services.sync_planner.service import SyncPlannerService
from services.training_coordinator.service import TrainingCoordinatorService
from shared.cli import main
from shared.credentials import credential_options
from shared.embedded import EmbeddedServer
from shared.permissions import KINDS, ORCHESTRATOR
from shared.service import Service
from shared.subjects import Subjects
from shared.testing.cluster import generate_auth, single_server
from shared.testing.fixtures import service_config
from shared.testing.helpers import eventually
from shared.testing.server import new_prefix

pytestmark = pytest.mark.anyio

PREFIX = new_prefix()
S = Subjects(PREFIX)
OTHER = "job_manager"  # the kind whose subjects the others try to take over


class Auth:
    """The server and the directory of user files of this module's cluster."""

    def __init__(self, server: EmbeddedServer, secrets: Path) -> None:
        self.server = server
        self.secrets = secrets

    def user_file(self, kind: str) -> str:
        """Path of one kind's user file."""
        return str(self.secrets / f"{kind}.user")


@pytest.fixture(scope="module")
def auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Auth]:
    """A nats-server of deploy/nats/server.conf with the generated users."""
    base = tmp_path_factory.mktemp("perm")
    conf = generate_auth(PREFIX, base / "secrets")
    server = single_server(base / "server", conf)
    try:
        yield Auth(server, base / "secrets")
    finally:
        server.stop()


async def connect_as(auth: Auth, kind: str, errors: list[Exception]) -> Client:
    """A plain client with one kind's credentials; async errors go to ``errors``."""

    async def error_cb(exc: Exception) -> None:
        errors.append(exc)

    return await nats.connect(
        auth.server.url,
        error_cb=error_cb,
        connect_timeout=5,
        max_reconnect_attempts=0,
        **credential_options(auth.user_file(kind)),
    )


@pytest.fixture
async def operator(auth: Auth) -> AsyncIterator[Client]:
    """The operator's client, which may see every subject."""
    client = await connect_as(auth, "operator", [])
    try:
        yield client
    finally:
        await client.close()


def violated(errors: list[Exception]) -> bool:
    """Whether the server reported a permissions violation."""
    return any(
        isinstance(e, nats.errors.Error) and "permissions violation" in str(e).lower()
        for e in errors
    )


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
    auth: Auth, operator: Client, kind: str, subject: str, what: str
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
    auth: Auth, operator: Client, kind: str, subject: str, what: str
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
    auth: Auth, operator: Client, kind: str, subject: str, what: str
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


SERVICES: list[tuple[type[Service[Any]], dict[str, Any]]] = [
    (StateManagerService, {}),
    (OrchestratorService, {"http_port": -1}),
    (JobManagerService, {}),
    (NodeSelectorService, {}),
    (SyncPlannerService, {}),
    (SelfplaySchedulerService, {}),
    (TrainingCoordinatorService, {}),
    (LoopManagerService, {}),
    (StatusMetricsCollectorService, {"prometheus_port": -1}),
]


async def cli(*argv: str) -> int:
    """``ringmaster *argv`` in a worker thread (each command runs its own event loop)."""
    return await anyio.to_thread.run_sync(main, list(argv))


async def test_every_service_runs_with_its_own_credentials(
    auth: Auth,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = auth.server.url
    log = auth.server.log_file
    assert log is not None
    start = log.stat().st_size  # the denial tests' violations are in the log before this
    async with AsyncExitStack() as stack:
        running: list[Service[Any]] = []
        agent = {
            "node_id": "perm-node",
            "work_dir": str(tmp_path / "node"),
            "capabilities": ["shell"],
            "min_free_disk_mb": 1,
            "min_memory_mb": 1,
        }
        for cls, extra in [*SERVICES, (NodeAgentService, agent)]:
            cfg = service_config(
                cls, url, PREFIX, credentials_file=auth.user_file(cls.name), **extra
            )
            running.append(await stack.enter_async_context(cls(cfg).running()))
        assert {s.name for s in running} == set(KINDS)

        # A job goes through the job manager, the node agent and the object store.
        monkeypatch.setenv("RINGMASTER_CREDENTIALS_FILE", auth.user_file("operator"))
        source = tmp_path / "in.txt"
        source.write_text("hello")
        common = ["--nats-url", url, "--prefix", PREFIX]
        script = 'tr a-z A-Z < "$RINGMASTER_INPUTS_DIR/in.txt" > "$RINGMASTER_OUTPUTS_DIR/out.txt"'
        code = await cli(
            "submit", *common, "--capability", "shell", "--pooled", "--wait",
            "--input", str(source), "--json", "--", "sh", "-c", script,
        )  # fmt: skip
        record = json.loads(capsys.readouterr().out)
        assert code == 0 and record["state"] == "COMPLETED", record

        # Each container probes itself with its own service's credentials.
        for service in running:
            monkeypatch.setenv("RINGMASTER_CREDENTIALS_FILE", auth.user_file(service.name))
            probe = ["probe", service.name, "--instance", service.instance, "--metrics"]
            assert await cli(*probe, "--readiness", *common) == 0, capsys.readouterr()

        await anyio.sleep(1.0)  # a few beacon rounds, collector and orchestrator rounds
        for service in running:
            assert service.health_check().status.value in ("RUNNING", "DEGRADED"), service.name
    with log.open("rb") as f:
        f.seek(start)
        text = f.read().decode("utf-8", errors="replace")
    assert [line for line in text.splitlines() if "Violation" in line] == []
