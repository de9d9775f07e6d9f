"""The cluster heals by itself under aimed faults, run as processes (``ringmaster up``).

- kill -9 of the node agent running a job: the supervisor restarts the agent at once
  under the same node id, so the node never looks lost; its new incarnation does not
  list the job, so the job runs again within seconds, not after its 30 s lease;
- an 8 s stall of nats-server (SIGSTOP, then SIGCONT): nobody is condemned for the
  bus's silence, every service is RUNNING again within 5 s, and no job fails for good.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import nats
import nats.errors
import pytest
from nats.aio.client import Client

from shared.codec import decode, encode
from shared.contracts import ClusterStatus, Empty, Liveness, ServiceStatus
from shared.embedded import EmbeddedServer, free_port
from shared.jobs import JobRecord, JobRef, JobSpec, JobState, Requirements
from shared.testing.bounds import COLD_START, WAIT, timeout_for
from shared.testing.helpers import eventually
from shared.testing.procs import Lines, spawn

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

SERVICES = ("state_manager", "node_selector", "job_manager", "node_agent")


def cluster_file(tmp_path: Path, prefix: str, nats_port: int) -> Path:
    """Default beacons, leases and node timeouts: only the new rules can be quick."""
    path = tmp_path / "ringmaster.toml"
    path.write_text(
        f"[cluster]\nprefix = '{prefix}'\ndata_dir = 'data'\n"
        f"nats_port = {nats_port}\nhttp_port = -1\n"
        "[services.state_manager]\n[services.node_selector]\n[services.job_manager]\n"
        "[services.node_agent]\ninstances = 2\n[services.node_agent.config]\n"
        "slots = 1\nmin_free_disk_mb = 1\nmin_memory_mb = 1\n"
        # The tests' jobs are shell jobs: a node runs them only where it says so.
        'capabilities = ["cpu", "shell"]\n'
    )
    return path


class Api:
    """Requests to the cluster under test."""

    def __init__(self, nc: Client, prefix: str) -> None:
        self.nc, self.prefix = nc, prefix

    async def call(self, service: str, method: str, body: object) -> bytes:
        reply = await self.nc.request(
            f"{self.prefix}.api.{service}.{method}", encode(body), timeout=5
        )
        return reply.data

    async def status(self) -> ClusterStatus | None:
        try:
            return decode(ClusterStatus, await self.call("orchestrator", "status", Empty()))
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError, TimeoutError):
            return None

    async def ready(self) -> ClusterStatus | None:
        """The status once every service runs, both agents and both nodes alive."""
        status = await self.status()
        if status is None:
            return None
        up = [
            v
            for v in status.services
            if v.status is ServiceStatus.RUNNING and v.liveness is Liveness.ALIVE
        ]
        agents = [v for v in up if v.service == "node_agent"]
        alive_nodes = [n for n in status.nodes if n.alive]
        every = {v.service for v in up} >= {"orchestrator", *SERVICES} and len(agents) == 2
        # Nothing else may be listed as troubled (a LOST or DEGRADED leftover).
        if every and len(up) == len(status.services) and len(alive_nodes) == 2:
            return status
        return None

    async def submit(self, spec: JobSpec) -> JobRecord:
        return decode(JobRecord, await self.call("job_manager", "submit", spec))

    async def job(self, job_id: str) -> JobRecord:
        return decode(JobRecord, await self.call("job_manager", "get", JobRef(job_id=job_id)))


@asynccontextmanager
async def cluster_up(
    tmp_path: Path, prefix: str, nats_port: int, env: dict[str, str]
) -> AsyncIterator[Api]:
    path = cluster_file(tmp_path, prefix, nats_port)
    async with spawn("up", "--cluster", str(path), "--no-live", env=env) as up:
        await Lines(up.stdout).until(r"NATS:\s+nats://")
        nc = await nats.connect(f"nats://127.0.0.1:{nats_port}", max_reconnect_attempts=-1)
        try:
            yield Api(nc, prefix)
        finally:
            await nc.close()
        up.send_signal(signal.SIGINT)
        with anyio.fail_after(WAIT):
            assert await up.wait() == 0


def shell_job(script: str, key: str) -> JobSpec:
    return JobSpec(
        type="shell",
        args={"argv": ["sh", "-c", script]},
        requirements=Requirements(capability="shell"),
        max_attempts=3,
        idempotency_key=key,
    )


async def until(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    return await eventually(check, timeout=timeout, interval=0.1, what=what)


# NATS up, cold start, RUNNING, run 1, the rerun, finished, the stop.
@timeout_for(WAIT, COLD_START, WAIT, WAIT, 10.0, WAIT, WAIT)
async def test_kill_9_of_the_agent_running_a_job_runs_it_again_within_10s(
    tmp_path: Path, prefix: str
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    async with cluster_up(tmp_path, prefix, port, env) as api:
        status = await until(api.ready, COLD_START, "the cluster RUNNING")
        marker = tmp_path / "attempts.txt"
        # The first attempt would run for a minute; later ones finish at once.
        script = (
            f'echo "$RINGMASTER_JOB_ATTEMPT" >> {marker}; echo \'{{"progress": 0.1}}\'; '
            'if [ "$RINGMASTER_JOB_ATTEMPT" = 1 ]; then sleep 60; fi; '
            'echo ok > "$RINGMASTER_OUTPUTS_DIR/out"'
        )
        job = await api.submit(shell_job(script, "heal-kill"))

        async def running() -> JobRecord | None:
            rec = await api.job(job.job_id)
            return rec if rec.state is JobState.RUNNING and rec.node_id else None

        first = await until(running, WAIT, "the job RUNNING")
        await until(lambda: marker.exists() and marker.read_text().split() == ["1"], WAIT, "run 1")
        victim = next(
            c
            for c in status.children
            if c.service == "node_agent" and c.instance[-2:] == first.node_id[-2:]
        )
        assert victim.pid is not None
        os.kill(victim.pid, signal.SIGKILL)
        killed = time.monotonic()
        # The deadline of the requirement: a new attempt's process runs within 10 s.
        await until(lambda: "2" in marker.read_text().split(), 10.0, "the job running again")
        took = time.monotonic() - killed

        async def finished() -> JobRecord | None:
            rec = await api.job(job.job_id)
            return rec if rec.state in (JobState.COMPLETED, JobState.FAILED) else None

        done = await until(finished, WAIT, "the job finished")
        assert done.state is JobState.COMPLETED, done.error
        assert done.attempt == 2, took


# NATS up, cold start, a job RUNNING, the stall, healed, finished, the stop.
@timeout_for(WAIT, COLD_START, WAIT, 8.0, 5.0, 60.0, WAIT)
async def test_an_8s_nats_stall_heals_within_5s_and_no_job_fails_for_good(
    tmp_path: Path, prefix: str
) -> None:
    server = EmbeddedServer(
        port=free_port(), store_dir=tmp_path / "nats", log_file=tmp_path / "nats.log"
    )
    server.start()
    try:
        env = {**os.environ, "NATS_URL": server.url}
        async with cluster_up(tmp_path, prefix, server.port, env) as api:
            before = await until(api.ready, COLD_START, "the cluster RUNNING")
            script = 'sleep 6; echo ok > "$RINGMASTER_OUTPUTS_DIR/out"'
            jobs = [await api.submit(shell_job(script, f"heal-stall-{i}")) for i in range(3)]

            async def one_running() -> bool:
                states = [(await api.job(j.job_id)).state for j in jobs]
                return JobState.RUNNING in states

            await until(one_running, WAIT, "a job RUNNING")
            assert server.pid is not None
            os.kill(server.pid, signal.SIGSTOP)
            try:
                await anyio.sleep(8.0)
            finally:
                os.kill(server.pid, signal.SIGCONT)
            # The deadline of the requirement, counted from the SIGCONT.
            after = await until(api.ready, 5.0, "every service RUNNING after the stall")
            # Nobody was condemned for the bus's silence: no child was restarted.
            assert [(c.instance, c.restarts) for c in after.children] == [
                (c.instance, 0) for c in before.children
            ]
            assert {v.pid for v in after.services} == {v.pid for v in before.services}

            async def all_finished() -> list[JobRecord] | None:
                records = [await api.job(j.job_id) for j in jobs]
                return (
                    records
                    if all(r.state in (JobState.COMPLETED, JobState.FAILED) for r in records)
                    else None
                )

            records = await until(all_finished, 60.0, "every job finished")
            assert [r.state for r in records] == [JobState.COMPLETED] * 3, [
                r.error for r in records
            ]
    finally:
        server.stop()
