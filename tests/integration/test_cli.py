"""The ``ringmaster`` command line against a real nats-server and real processes.

Commands run in-process through ``shared.cli.main`` (in a worker thread, since each
runs its own event loop) where that is enough, and as ``python -m shared.cli``
subprocesses where signals, streaming output or the process tree matter.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from nats.aio.client import Client

from shared.cli import main
from shared.cluster import service_env
from shared.codec import decode, encode
from shared.config import BaseConfig
from shared.contracts import ClusterStatus, ControlCommand, ControlReply, Event, ServiceStatus
from shared.embedded import free_port
from shared.service import Service
from shared.srv import decode_ping, discover
from shared.testing.fixtures import ServiceFactory, service_config
from shared.testing.helpers import eventually
from shared.testing.procs import CLI, REPO, WAIT, Lines, open_child, spawn

pytestmark = pytest.mark.anyio

needs_orchestrator = pytest.mark.skipif(
    not (REPO / "services" / "orchestrator" / "service.py").exists(),
    reason="services/orchestrator/service.py does not exist yet",
)


class Demo(Service[BaseConfig]):
    """The smallest service, to probe and watch."""

    name = "demo"
    description = "a demo service for CLI tests"


async def cli(*argv: str) -> int:
    """``ringmaster *argv`` in-process, in a worker thread (it runs its own event loop)."""
    return await anyio.to_thread.run_sync(main, list(argv))


async def control(nc: Client, prefix: str, service: str, instance: str, command: str) -> None:
    cmd = ControlCommand(command=command)  # type: ignore[arg-type]
    reply = await nc.request(f"{prefix}.ctl.{service}.{instance}", encode(cmd), timeout=5)
    assert decode(ControlReply, reply.data).ok


# -- status ---------------------------------------------------------------------


async def test_status_without_orchestrator_exits_3(
    nats_url: str, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli("status", "--nats-url", nats_url, "--prefix", prefix, "--timeout", "1") == 3
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("ringmaster status: error: no orchestrator answered")
    assert prefix in lines[0]


async def test_unreachable_nats_fails_fast_with_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = "nats://127.0.0.1:1"
    assert await cli("status", "--nats-url", url, "--connect-timeout", "1") != 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("ringmaster status: error: ")
    assert url in lines[0]


@needs_orchestrator
async def test_status_against_an_orchestrator(
    nats_url: str, prefix: str, nc: Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    values = {
        "nats_url": nats_url,
        "prefix": prefix,
        "instance": "orchestrator-1",
        "http_port": -1,
        "beacon_interval": 0.2,
        "data_dir": str(tmp_path),
    }
    env = {**os.environ, **service_env("orchestrator", values)}
    base = ["--nats-url", nats_url, "--prefix", prefix]

    async def status_until(code: int) -> tuple[str, str]:
        """Ask until ``status --json`` exits with ``code``; that run's stdout and stderr."""
        with anyio.fail_after(WAIT):
            while True:
                capsys.readouterr()
                if await cli("status", "--json", *base) == code:
                    captured = capsys.readouterr()
                    return captured.out, captured.err
                await anyio.sleep(0.2)

    async with await open_child(
        [sys.executable, "-m", "services.orchestrator"], env=env, cwd=REPO
    ) as orch:
        try:
            out, _ = await status_until(0)
            status = decode(ClusterStatus, out.encode())
            assert status.prefix == prefix
            mine = [s for s in status.services if s.service == "orchestrator"]
            assert [(s.instance, s.status) for s in mine] == [
                ("orchestrator-1", ServiceStatus.RUNNING)
            ]
            assert await cli("status", *base) == 0
            table = capsys.readouterr().out
            assert "orchestrator-1" in table and "RUNNING" in table

            await control(nc, prefix, "orchestrator", "orchestrator-1", "pause")
            out, err = await status_until(1)
            assert json.loads(out)["prefix"] == prefix
            assert "ringmaster status: orchestrator/orchestrator-1 is PAUSED" in err
            await control(nc, prefix, "orchestrator", "orchestrator-1", "resume")
            await status_until(0)
        finally:
            orch.terminate()
            with anyio.fail_after(WAIT):
                await orch.wait()
    assert orch.returncode == 0


# -- probe ----------------------------------------------------------------------


async def test_probe_liveness_and_readiness(
    start_service: ServiceFactory,
    nats_url: str,
    prefix: str,
    nc: Client,
    capsys: pytest.CaptureFixture[str],
) -> None:
    svc = await start_service(Demo)
    base = ["--nats-url", nats_url, "--prefix", prefix, "--timeout", "5"]
    assert await cli("probe", "demo", *base) == 0
    assert f"demo/{svc.instance}: alive, RUNNING" in capsys.readouterr().out
    assert await cli("probe", "demo", "--instance", svc.instance, "--readiness", *base) == 0
    assert "ready, RUNNING" in capsys.readouterr().out

    await control(nc, prefix, "demo", svc.instance, "pause")
    assert await cli("probe", "demo", "--readiness", *base) == 1
    assert "not ready, PAUSED" in capsys.readouterr().out
    assert await cli("probe", "demo", *base) == 0  # paused is still alive


async def test_probe_of_a_missing_service_exits_1(
    nats_url: str, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--nats-url", nats_url, "--prefix", prefix, "--timeout", "1"]
    assert await cli("probe", "nobody_here", *base) == 1
    assert await cli("probe", "nobody_here", "--instance", "x-1", "--readiness", *base) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2
    assert all("not alive" in line for line in out)


# -- watch ----------------------------------------------------------------------


async def test_watch_json_prints_an_event_as_it_happens(
    start_service: ServiceFactory, nats_url: str, prefix: str
) -> None:
    argv = [
        "watch",
        "--json",
        "--service",
        "demo",
        "--count",
        "1",
        "--nats-url",
        nats_url,
        "--prefix",
        prefix,
    ]
    async with spawn(*argv) as proc:
        err = Lines(proc.stderr)
        await err.until(rf"watching {prefix}\.event\.demo\.>")
        svc = await start_service(Demo)
        out = await Lines(proc.stdout).rest()
        assert await proc.wait() == 0
    assert len(out) == 1
    event = decode(Event, out[0].encode())
    assert event.type == "SERVICE_STARTED"
    assert event.source == f"/{prefix}/demo/{svc.instance}"


async def test_watch_filters_by_type_and_survives_bad_messages(
    nats_url: str, prefix: str, nc: Client
) -> None:
    argv = [
        "watch",
        "--type",
        "SERVICE_STOPPED",
        "--count",
        "1",
        "--nats-url",
        nats_url,
        "--prefix",
        prefix,
    ]
    async with spawn(*argv) as proc:
        err = Lines(proc.stderr)
        await err.until("watching")
        await nc.publish(f"{prefix}.event.demo.thing.failed", b"not json at all")
        await nc.flush()
        svc = Demo(service_config(Demo, nats_url, prefix))
        async with svc.running():
            pass
        out = await Lines(proc.stdout).rest()
        assert await proc.wait() == 0
        warnings = await err.rest()
    assert len(out) == 1
    assert f"/{prefix}/demo/{svc.instance} SERVICE_STOPPED" in out[0]
    assert f"instance={svc.instance}" in out[0]
    assert any("undecodable message #1" in line for line in err.seen + warnings)


# -- nats-server and up ---------------------------------------------------------


async def test_nats_server_command_runs_until_interrupted(tmp_path: Path) -> None:
    port = free_port()
    async with spawn("nats-server", "--port", str(port), "--store-dir", str(tmp_path)) as proc:
        await Lines(proc.stdout).until(f"listening on nats://127.0.0.1:{port}")
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        proc.send_signal(signal.SIGINT)
        with anyio.fail_after(WAIT):
            assert await proc.wait() == 0


def test_up_on_a_taken_port_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("NATS_URL", raising=False)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cluster = tmp_path / "ringmaster.toml"
        cluster.write_text(f"[cluster]\nnats_port = {port}\ndata_dir = 'data'\n")
        assert main(["up", "--cluster", str(cluster), "--no-live"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("ringmaster up: error: port 127.0.0.1:")
    assert "already in use" in lines[0]


@needs_orchestrator
async def test_up_runs_restarts_and_stops_the_orchestrator(
    tmp_path: Path, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    cluster = tmp_path / "ringmaster.toml"
    cluster.write_text(
        f"[cluster]\nprefix = '{prefix}'\nbeacon_interval = 0.2\ndata_dir = 'data'\n"
        f"nats_port = {port}\nhttp_port = 0\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    url = f"nats://127.0.0.1:{port}"
    base = ["--nats-url", url, "--prefix", prefix]
    async with spawn("up", "--cluster", str(cluster), "--no-live", env=env) as up:
        out = Lines(up.stdout)
        await out.until(rf"NATS:\s+{url}")
        first = await out.until(r"orchestrator/orchestrator-1: RUNNING ALIVE, pid (\d+)")
        assert await cli("status", *base) == 0

        os.kill(int(first.group(1)), signal.SIGKILL)
        await out.until(r"exited with signal SIGKILL")
        restarted = await out.until(r"orchestrator restarted \(pid (\d+), restart 1\)")
        assert restarted.group(1) != first.group(1)
        await out.until(rf"orchestrator/orchestrator-1: RUNNING ALIVE, pid {restarted.group(1)}")

        up.send_signal(signal.SIGINT)
        await out.until("cluster stopped")
        with anyio.fail_after(WAIT):
            assert await up.wait() == 0
    assert (tmp_path / "data" / "logs" / "orchestrator-1.log").is_file()
    assert (tmp_path / "data" / "nats").is_dir()
    capsys.readouterr()
    assert await cli("status", *base, "--connect-timeout", "1") == 3  # the server is gone too


# -- new-service ----------------------------------------------------------------


def _project_copy(root: Path) -> None:
    """A project root like the repository's: services/, tests/ and the shared library."""
    (root / "services").mkdir()
    (root / "services" / "__init__.py").write_text("")
    (root / "tests").mkdir()
    (root / "tests" / "__init__.py").write_text("")
    shutil.copy(REPO / "tests" / "conftest.py", root / "tests" / "conftest.py")
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    (root / "shared").symlink_to(REPO / "shared", target_is_directory=True)


async def _check(root: Path, *argv: str, env: dict[str, str] | None = None) -> None:
    result = await anyio.run_process(argv, cwd=root, env=env, check=False)
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, f"{' '.join(argv)} failed:\n{output}"


@needs_orchestrator
async def test_new_service_is_clean_tested_and_discoverable(
    tmp_path: Path, nats_url: str, prefix: str, nc: Client, start_service: ServiceFactory
) -> None:
    from services.orchestrator.service import OrchestratorService

    orchestrator = await start_service(OrchestratorService, http_port=-1)
    root = tmp_path / "project"
    root.mkdir()
    _project_copy(root)
    await _check(root, *CLI, "new-service", "demo_widget", "--dir", str(root))
    files = [
        "services/demo_widget",
        "tests/unit/test_demo_widget_policy.py",
        "tests/integration/test_demo_widget.py",
    ]
    bin_dir = Path(sys.executable).parent
    await _check(root, str(bin_dir / "ruff"), "check", *files)
    await _check(root, str(bin_dir / "ruff"), "format", "--check", *files)
    await _check(root, str(bin_dir / "mypy"), "--strict", *files)
    test_env: dict[str, Any] = {**os.environ, "RINGMASTER_TEST_NATS_URL": nats_url}
    await _check(
        root,
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        *files[1:],
        env=test_env,
    )

    # Run by name, as a container would, and found through $SRV like any service.
    instance = "demo_widget-cli"
    argv = [
        "service",
        "demo_widget",
        "--nats-url",
        nats_url,
        "--prefix",
        prefix,
        "--instance",
        instance,
        "--beacon-interval",
        "0.2",
    ]
    async with spawn(*argv, cwd=root) as proc:
        with anyio.fail_after(WAIT):
            while True:
                replies = await discover(nc, "PING", "demo_widget", timeout=0.5)
                if any(decode_ping(reply).id == instance for reply in replies):
                    break
        # The orchestrator knows it from its beacons, with no change to the orchestrator.
        await eventually(
            lambda: any(
                v.service == "demo_widget" and v.instance == instance
                for v in orchestrator.cluster_status().services
            ),
            timeout=WAIT,
            what="the orchestrator to register demo_widget",
        )
        proc.terminate()
        with anyio.fail_after(WAIT):
            assert await proc.wait() == 0
