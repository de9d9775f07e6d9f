"""Every service runs with the generated NATS permissions, and nothing it does is refused.

All ten service kinds start on one nats-server of ``deploy/nats/server.conf`` with
the ``auth.conf`` and certificates of ``ringmaster nats-config --tls``, each with its
own user file and over TLS (the node agent with its node's own user and
certificate, ``--nodes``); a job
goes through the job manager, a node agent and the object store; each service is
probed with its own credentials, as its container would be; and the server logged
no permission violation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest

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
from shared.permissions import KINDS
from shared.service import Service
from shared.testing.cluster import AuthServer
from shared.testing.fixtures import service_config
from shared.testing.server import new_prefix

pytestmark = pytest.mark.anyio

PREFIX = new_prefix()


@pytest.fixture
def auth(tmp_path: Path) -> Iterator[AuthServer]:
    """A nats-server of deploy/nats/server.conf with the generated users."""
    server = AuthServer(tmp_path / "perm", PREFIX, nodes="perm-node:shell", tls=True)
    try:
        yield server
    finally:
        server.stop()


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
    auth: AuthServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = auth.url
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
            # The node agent runs as its host would: with its own node's user.
            who = "node-perm-node" if cls is NodeAgentService else cls.name
            files = auth.tls_files(who if cls is NodeAgentService else "client")
            cfg = service_config(
                cls, url, PREFIX, credentials_file=auth.user_file(who), **files, **extra
            )
            running.append(await stack.enter_async_context(cls(cfg).running()))
        assert {s.name for s in running} == set(KINDS)

        # A job goes through the job manager, the node agent and the object store.
        monkeypatch.setenv("RINGMASTER_CREDENTIALS_FILE", auth.user_file("operator"))
        for field, path in auth.tls_files().items():
            monkeypatch.setenv(f"RINGMASTER_{field.upper()}", path)
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
            who = "node-perm-node" if service.name == "node_agent" else service.name
            monkeypatch.setenv("RINGMASTER_CREDENTIALS_FILE", auth.user_file(who))
            probe = ["probe", service.name, "--instance", service.instance, "--metrics"]
            assert await cli(*probe, "--readiness", *common) == 0, capsys.readouterr()

        await anyio.sleep(1.0)  # a few beacon rounds, collector and orchestrator rounds
        for service in running:
            assert service.health_check().status.value in ("RUNNING", "DEGRADED"), service.name
    with log.open("rb") as f:
        f.seek(start)
        text = f.read().decode("utf-8", errors="replace")
    assert [line for line in text.splitlines() if "Violation" in line] == []
