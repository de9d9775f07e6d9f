"""The operator commands over existing endpoints, against real services and nats-server:
``loops``, ``scheduler``, ``nodes``, ``jobs inspect|retry`` and ``watch --since``."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from services.job_manager.service import JobManagerService
from services.loop_manager.service import LoopManagerService
from services.node_agent.service import NodeAgentService
from services.node_selector.service import NodeSelectorService
from services.selfplay_scheduler.service import SelfplaySchedulerService
from shared.cli import main
from shared.config import BaseConfig
from shared.contracts import ServiceStatus
from shared.service import Service
from shared.testing.builders import shell_agent
from shared.testing.fixtures import ServiceFactory, service_config
from shared.testing.helpers import eventually
from shared.testing.procs import Lines, spawn

pytestmark = pytest.mark.anyio

USAGE = "event_stream_usage"


async def cli(*argv: str) -> int:
    """``ringmaster *argv`` in a worker thread (each command runs its own event loop)."""
    return await anyio.to_thread.run_sync(main, list(argv))


async def test_loops_list_pause_resume_trigger(
    start_service: ServiceFactory, nats_url: str, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--nats-url", nats_url, "--prefix", prefix]
    assert await cli("loops", "list", *common, "--timeout", "0.5") == 3  # nobody hosts loops
    assert "nobody answers" in capsys.readouterr().err
    await start_service(LoopManagerService, loops={USAGE: 3600.0})
    assert await cli("loops", "list", *common, "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [loop["name"] for loop in listed["loops"]] == [USAGE]
    assert await cli("loops", "pause", USAGE, *common) == 0
    assert capsys.readouterr().out.startswith(f"{USAGE}: paused (paused,")
    assert await cli("loops", "resume", USAGE, *common) == 0
    assert capsys.readouterr().out.startswith(f"{USAGE}: resumed (active,")
    assert await cli("loops", "trigger", USAGE, *common) == 0
    assert await cli("loops", "list", *common) == 0
    assert USAGE in capsys.readouterr().out
    assert await cli("loops", "pause", "no_such_loop", *common) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no loop 'no_such_loop'" in err[0]


async def test_scheduler_priorities_and_override(
    start_service: ServiceFactory, nats_url: str, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--nats-url", nats_url, "--prefix", prefix]
    await start_service(JobManagerService, reaper_interval=0.1, dispatch_timeout_s=600.0)
    await start_service(
        SelfplaySchedulerService, interval_s=0.2, breaker_recovery_s=0.5, backlog_per_slot=0
    )
    assert await cli("scheduler", "override", "5x5k4", "50", *common) == 0
    assert "overrides: 5x5k4x50" in capsys.readouterr().out

    async def in_force() -> bool:  # the view is the scheduler's next round's
        assert await cli("scheduler", "priorities", *common, "--json") == 0
        return bool(json.loads(capsys.readouterr().out)["overrides"] == {"5x5k4": 50.0})

    await eventually(in_force, what="the override in the scheduler's priorities")
    assert await cli("scheduler", "priorities", *common) == 0
    assert "selfplay priorities" in capsys.readouterr().out
    assert await cli("scheduler", "override", "5x5k4", "--clear", *common) == 0
    assert "overrides: none" in capsys.readouterr().out
    assert await cli("scheduler", "override", "no_such_game", "2", *common) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


async def test_nodes_list_and_drain(
    start_service: ServiceFactory,
    nats_url: str,
    prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    common = ["--nats-url", nats_url, "--prefix", prefix]
    await start_service(NodeSelectorService)
    agent = await start_service(NodeAgentService, **shell_agent(tmp_path / "node", "ops-node"))

    async def listed() -> bool:
        await cli("nodes", "list", *common, "--json")
        nodes = json.loads(capsys.readouterr().out)["nodes"]
        return [n["info"]["node_id"] for n in nodes] == ["ops-node"]

    await eventually(listed, what="ops-node in the node selector's list")
    assert await cli("nodes", "list", *common) == 0
    assert "ops-node" in capsys.readouterr().out
    assert await cli("nodes", "drain", "absent-node", *common) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "ringmaster nodes: error: no node agent runs node 'absent-node'; nodes: ops-node"
    ]
    assert await cli("nodes", "drain", "ops-node", *common) == 0
    assert f"ops-node (node_agent/{agent.instance})" in capsys.readouterr().out
    await eventually(
        lambda: agent.status in (ServiceStatus.STOPPING, ServiceStatus.STOPPED) or agent.draining,
        what="the agent draining",
    )
    assert await cli("nodes", "drain", "bad.node", *common) == 2


async def test_jobs_inspect_and_retry(
    start_service: ServiceFactory,
    nats_url: str,
    prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    common = ["--nats-url", nats_url, "--prefix", prefix]
    await start_service(JobManagerService)
    await start_service(NodeAgentService, **shell_agent(tmp_path / "node", "retry-node"))
    submit = ["submit", *common, "--capability", "shell", "--pooled", "--key", "k1"]
    assert await cli(*submit, "--wait", "--json", "--", "sh", "-c", "exit 4") == 1
    old = json.loads(capsys.readouterr().out)
    assert await cli("jobs", "inspect", old["job_id"], *common) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["job_id"] == old["job_id"] and record["result"]["exit_code"] == 4
    assert await cli("jobs", *common, "--json") == 0  # without a verb: still the list
    assert json.loads(capsys.readouterr().out)["total"] == 1
    assert await cli("jobs", "retry", old["job_id"], *common, "--json") == 0
    new = json.loads(capsys.readouterr().out)
    assert new["job_id"] != old["job_id"]
    assert new["spec"]["args"] == old["spec"]["args"]
    assert new["spec"]["labels"]["retry_of"] == old["job_id"]
    assert await cli("jobs", "inspect", "no-such-job", *common) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


class Replayed(Service[BaseConfig]):
    """A service whose past events ``watch --since`` replays."""

    name = "replayed"
    description = "events for watch --since"


async def test_watch_since_replays_then_follows(nats_url: str, prefix: str) -> None:
    svc = Replayed(service_config(Replayed, nats_url, prefix))
    async with svc.running():
        pass  # SERVICE_STARTED and SERVICE_STOPPED, before anyone watches
    argv = ["watch", "--since", "1h", "--service", "replayed", "--count", "3", "--json"]
    async with spawn(*argv, "--nats-url", nats_url, "--prefix", prefix) as proc:
        await Lines(proc.stderr).until("watching .* since")
        again = Replayed(service_config(Replayed, nats_url, prefix))
        async with again.running():
            pass
        out = await Lines(proc.stdout).rest()
        assert await proc.wait() == 0
    types = [json.loads(line)["type"] for line in out]
    assert types == ["SERVICE_STARTED", "SERVICE_STOPPED", "SERVICE_STARTED"]
    assert f"/{svc.instance}" in json.loads(out[0])["source"]


@pytest.mark.parametrize("since", ["yesterday", "10x", "2999-01-01T00:00:00"])
def test_a_bad_since_is_one_line_and_exit_2(since: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["watch", "--since", since, "--nats-url", "nats://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ringmaster watch: error: --since")
