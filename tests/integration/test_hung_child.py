"""A hung supervised manager (SIGSTOP: alive, silent) is killed and replaced.

Before the supervisor acted on LOST, the orchestrator declared such a job manager
LOST after about 3 s and left it hung for good: the same pid stayed the job manager
and every submit waited.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from nats.aio.client import Client

from services.orchestrator.service import OrchestratorService
from shared.codec import decode, encode
from shared.contracts import ClusterStatus, Empty, InstanceView, Liveness, ServiceStatus
from shared.events import ServiceLost, ServiceRestarted
from shared.jobs import JobRecord, JobSpec, JobState
from shared.subjects import Subjects
from shared.testing.fixtures import service_config
from shared.testing.helpers import eventually, stream_events

pytestmark = pytest.mark.anyio


async def instance(nc: Client, prefix: str, name: str) -> InstanceView | None:
    reply = await nc.request(
        Subjects(prefix).api("orchestrator", "status"), encode(Empty()), timeout=2
    )
    status = decode(ClusterStatus, reply.data)
    return next((v for v in status.services if v.instance == name), None)


async def test_a_sigstopped_manager_is_replaced_within_10s(
    nats_url: str, nc: Client, prefix: str, tmp_path: Path
) -> None:
    cluster_file = tmp_path / "ringmaster.toml"
    # Default 1 s beacons, as in the measurement: LOST after about 3 s of silence.
    cluster_file.write_text(
        f'[cluster]\nprefix = "{prefix}"\nbeacon_interval = 1.0\n\n[services.job_manager]\n'
    )
    config = service_config(
        OrchestratorService,
        nats_url,
        prefix,
        beacon_interval=1.0,
        check_interval=0.1,
        http_port=-1,
        cluster_file=str(cluster_file),
        data_dir=str(tmp_path),
    )
    orch = OrchestratorService(config)
    async with orch.running():

        async def running() -> InstanceView | None:
            view = await instance(nc, prefix, "job_manager-0")
            serving = view is not None and view.liveness is Liveness.ALIVE
            return view if serving and view.status is ServiceStatus.RUNNING else None

        first = await eventually(running, timeout=60, what="job_manager-0 RUNNING")
        os.kill(first.pid, signal.SIGSTOP)
        stopped_at = time.monotonic()

        async def replaced() -> InstanceView | None:
            view = await running()
            return view if view is not None and view.pid != first.pid else None

        # The deadline of the requirement, counted from the SIGSTOP.
        again = await eventually(replaced, timeout=10.0, what="a RUNNING replacement")
        took = time.monotonic() - stopped_at
        assert again.pid != first.pid
        assert orch.supervisor is not None
        child = next(c for c in orch.supervisor.snapshot() if c.instance == "job_manager-0")
        assert child.pid == again.pid and child.restarts == 1
        assert orch.watch.hung_kills == 1
        # Submits are answered again, by the replacement.
        reply = await nc.request(
            Subjects(prefix).api("job_manager", "submit"), encode(JobSpec(type="selfplay")), 5
        )
        assert "Nats-Service-Error-Code" not in (reply.headers or {}), reply.data
        assert decode(JobRecord, reply.data).state in (JobState.PENDING, JobState.DISPATCHED)
        print(f"replaced {took:.2f}s after the SIGSTOP")
    events = await stream_events(nc, Subjects(prefix).events_stream)
    types = [e.type for e in events if e.data.get("instance") == "job_manager-0"]
    assert ServiceLost.TYPE in types and ServiceRestarted.TYPE in types
