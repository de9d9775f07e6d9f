"""Jobs through the real cluster: submit, run, an agent killed mid-job, exactly one completion."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import nats
import nats.errors
import pytest

from shared.codec import decode, encode
from shared.contracts import ClusterStatus, Empty, Liveness, ServiceStatus
from shared.embedded import free_port
from shared.jobs import JobRecord, JobRef, JobSpec, JobState, Requirements
from shared.testing.bounds import COLD_START, WAIT, timeout_for
from shared.testing.helpers import eventually, stream_events
from shared.testing.procs import Lines, spawn

#: A bound on the job finishing after its agent was killed (lease and retry included).
RERUN_BOUND = 60.0

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.e2e,
    # NATS up, cold start, RUNNING, its process, the rerun, the stop.
    timeout_for(WAIT, COLD_START, WAIT, WAIT, RERUN_BOUND, WAIT),
]

SERVICES = ("state_manager", "node_selector", "job_manager", "node_agent")


def cluster_file(tmp_path: Path, prefix: str, nats_port: int) -> Path:
    """Two one-slot agents, short leases so a dead agent's job is retried quickly."""
    path = tmp_path / "ringmaster.toml"
    path.write_text(
        f"[cluster]\nprefix = '{prefix}'\nbeacon_interval = 0.25\ndata_dir = 'data'\n"
        f"nats_port = {nats_port}\nhttp_port = -1\n"
        "[services.state_manager]\n[services.node_selector]\n"
        "[services.job_manager]\n[services.job_manager.config]\n"
        "lease_s = 3.0\nnode_lost_after_s = 2.0\nretry_base_s = 0.2\n"
        "[services.node_agent]\ninstances = 2\n[services.node_agent.config]\n"
        "slots = 1\nmin_free_disk_mb = 1\nmin_memory_mb = 1\ncapabilities = ['cpu', 'shell']\n"
    )
    return path


async def test_agent_killed_mid_job_reruns_elsewhere_and_completes_once(
    tmp_path: Path, prefix: str
) -> None:
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    async with spawn(
        "up", "--cluster", str(cluster_file(tmp_path, prefix, port)), "--no-live", env=env
    ) as up:
        await Lines(up.stdout).until(r"NATS:\s+nats://")
        nc = await nats.connect(url)
        try:

            async def call(service: str, method: str, body: object) -> bytes:
                reply = await nc.request(
                    f"{prefix}.api.{service}.{method}", encode(body), timeout=5
                )
                return reply.data

            async def ready() -> ClusterStatus | None:
                try:
                    status = decode(ClusterStatus, await call("orchestrator", "status", Empty()))
                except (nats.errors.NoRespondersError, TimeoutError):
                    return None
                up_now = [
                    v
                    for v in status.services
                    if v.status is ServiceStatus.RUNNING and v.liveness is Liveness.ALIVE
                ]
                kinds = {v.service for v in up_now}
                agents = [v for v in up_now if v.service == "node_agent"]
                alive_nodes = [n for n in status.nodes if n.alive]
                if kinds >= set(SERVICES) and len(agents) == 2 and len(alive_nodes) == 2:
                    return status
                return None

            status = await eventually(ready, timeout=COLD_START, what="the cluster RUNNING")
            marker = tmp_path / "attempts.txt"
            script = (
                f'echo "$RINGMASTER_JOB_ATTEMPT" >> {marker}; '
                'echo \'{"progress": 0.1}\'; sleep 4; echo ok > "$RINGMASTER_OUTPUTS_DIR/out"'
            )
            spec = JobSpec(
                type="shell",
                args={"argv": ["sh", "-c", script]},
                requirements=Requirements(capability="shell"),
                max_attempts=3,
                idempotency_key="e2e-kill",
            )
            job = decode(JobRecord, await call("job_manager", "submit", spec))

            async def state() -> JobRecord:
                return decode(
                    JobRecord, await call("job_manager", "get", JobRef(job_id=job.job_id))
                )

            running = await eventually(
                lambda: _when(state(), lambda r: r.state is JobState.RUNNING and r.node_id),
                timeout=WAIT,
                what="the job RUNNING",
            )
            first_node = running.node_id
            # Kill the agent only once the job's process really runs.
            await eventually(
                lambda: marker.exists() and marker.read_text().strip() == "1",
                timeout=WAIT,
                what="the first attempt's process",
            )
            victim = next(
                c
                for c in status.children
                if c.service == "node_agent" and c.instance[-2:] == first_node[-2:]
            )
            assert victim.pid is not None
            os.kill(victim.pid, signal.SIGKILL)

            done = await eventually(
                lambda: _when(state(), lambda r: r.state in (JobState.COMPLETED, JobState.FAILED)),
                timeout=RERUN_BOUND,
                what="the job to finish after its agent was killed",
            )
            assert done.state is JobState.COMPLETED, done.error
            assert done.attempt >= 2
            assert done.node_id != first_node  # the selector excluded the node that failed it
            assert done.result is not None and [o.name for o in done.result.outputs] == ["out"]
            events = await stream_events(nc, f"{prefix}_EVENTS")
            completed = [
                e for e in events if e.type == "JOB_COMPLETED" and e.data["job_id"] == job.job_id
            ]
            assert len(completed) == 1
            assert marker.read_text().split() == [str(n) for n in range(1, done.attempt + 1)]
        finally:
            await nc.close()
        up.send_signal(signal.SIGINT)
        with anyio.fail_after(WAIT):
            assert await up.wait() == 0


async def _when(record: object, test: object) -> object:
    value = await record  # type: ignore[misc]
    return value if test(value) else None  # type: ignore[operator]
