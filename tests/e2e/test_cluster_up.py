"""The whole cluster as processes: ``ringmaster up``, a supervised child killed, a clean stop."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import nats
import nats.errors
import psutil
import pytest

from shared.codec import decode, encode
from shared.contracts import ClusterStatus, Empty, Liveness, ServiceStatus
from shared.embedded import free_port
from shared.srv import decode_ping, discover
from shared.testing.bounds import COLD_START, WAIT, timeout_for
from shared.testing.helpers import eventually, stream_events
from shared.testing.procs import Lines, spawn

# NATS up, cold start, the killed child back, the stop.
pytestmark = [pytest.mark.anyio, pytest.mark.e2e, timeout_for(WAIT, COLD_START, WAIT, WAIT)]

SERVICES = ("loop_manager", "status_metrics_collector")


def cluster_file(tmp_path: Path, prefix: str, nats_port: int) -> Path:
    """A cluster of the foundation's managers on private ports."""
    path = tmp_path / "ringmaster.toml"
    path.write_text(
        f"[cluster]\nprefix = '{prefix}'\nbeacon_interval = 0.25\ndata_dir = 'data'\n"
        f"nats_port = {nats_port}\nhttp_port = 0\n"
        "[services.loop_manager]\n"
        "[services.status_metrics_collector]\n"
        "[services.status_metrics_collector.config]\nprometheus_port = 0\n"
    )
    return path


async def test_up_runs_every_service_restarts_a_killed_child_and_stops_clean(
    tmp_path: Path, prefix: str
) -> None:
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    path = cluster_file(tmp_path, prefix, port)
    async with spawn("up", "--cluster", str(path), "--no-live", env=env) as up:
        out = Lines(up.stdout)
        await out.until(r"NATS:\s+nats://")
        nc = await nats.connect(url)
        try:

            async def status() -> ClusterStatus:
                reply = await nc.request(f"{prefix}.api.orchestrator.status", encode(Empty()))
                return decode(ClusterStatus, reply.data)

            async def all_running() -> ClusterStatus | None:
                try:
                    current = await status()
                except (nats.errors.NoRespondersError, TimeoutError):
                    return None  # the orchestrator is still starting
                running = {
                    v.service
                    for v in current.services
                    if v.status is ServiceStatus.RUNNING and v.liveness is Liveness.ALIVE
                }
                return current if running >= {"orchestrator", *SERVICES} else None

            first = await eventually(all_running, timeout=COLD_START, what="every service RUNNING")
            pings = [decode_ping(p) for p in await discover(nc, "PING", timeout=0.5)]
            assert {p.name for p in pings if p.metadata and p.metadata["prefix"] == prefix} >= {
                "orchestrator",
                *SERVICES,
            }
            victim = next(v for v in first.services if v.service == "loop_manager")
            pids = {v.pid for v in first.services}
            os.kill(victim.pid, signal.SIGKILL)

            async def back() -> bool:
                current = await all_running()
                return current is not None and any(
                    v.instance == victim.instance and v.pid != victim.pid for v in current.services
                )

            await eventually(back, timeout=WAIT, what="the killed child RUNNING again")
            events = await stream_events(nc, f"{prefix}_EVENTS")
            restarted = [e for e in events if e.type == "SERVICE_RESTARTED"]
            assert [e.data["instance"] for e in restarted] == [victim.instance]
            assert restarted[0].data["delay_s"] == 0
            pids |= {v.pid for v in (await status()).services}
        finally:
            await nc.close()
        up.send_signal(signal.SIGINT)
        with anyio.fail_after(WAIT):
            assert await up.wait() == 0
    survivors = [pid for pid in pids if psutil.pid_exists(pid) and _alive(pid)]
    assert survivors == []


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
