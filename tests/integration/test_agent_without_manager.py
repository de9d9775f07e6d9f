"""The node agent when the job manager goes away mid-job and comes back.

The job runs on; its completed report finds nobody and is tried again with backoff;
once a job manager is back the report lands, and the job ends COMPLETED exactly once.
"""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec
import pytest
from nats.aio.client import Client

from services.job_manager.service import JobManagerService
from services.node_agent.service import NodeAgentService
from shared.codec import decode, encode
from shared.jobs import JobRecord, JobRef, JobSpec, JobState, Requirements
from shared.subjects import Subjects
from shared.testing.fixtures import ServiceFactory, service_config
from shared.testing.helpers import eventually, stream_events

pytestmark = pytest.mark.anyio

#: Runs until the test lets it go, then writes one output.
HELD_JOB = """
import os, pathlib, sys, time
go = pathlib.Path(sys.argv[1])
while not go.exists():
    time.sleep(0.05)
pathlib.Path(os.environ["RINGMASTER_OUTPUTS_DIR"], "out").write_text("done")
"""


async def test_a_job_that_ends_while_the_manager_is_away_completes_once(
    start_service: ServiceFactory, nc: Client, nats_url: str, prefix: str, tmp_path: Path
) -> None:
    agent = await start_service(
        NodeAgentService,
        node_id="n1",
        work_dir=str(tmp_path / "work"),
        capabilities=["shell"],
        slots=1,
        min_free_disk_mb=0,
        min_memory_mb=0,
        progress_interval_s=0.2,
        report_timeout_s=1.0,
        report_attempts=100,  # capped backoff: minutes of patience, not seconds
    )
    # A lease far longer than the outage: this is about the report, not the reaper.
    jm_config = service_config(
        JobManagerService, nats_url, prefix, lease_s=600.0, dispatch_timeout_s=600.0
    )
    subjects = Subjects(prefix)

    async def call(method: str, body: object) -> JobRecord:
        reply = await nc.request(subjects.api("job_manager", method), encode(body), timeout=5)
        return decode(JobRecord, reply.data)

    go = tmp_path / "go"
    spec = JobSpec(
        type="shell",
        args={"argv": [sys.executable, "-c", HELD_JOB, str(go)]},
        requirements=Requirements(capability="shell", node_id="n1"),
        max_attempts=1,
    )
    async with JobManagerService(jm_config).running():
        job = await call("submit", spec)

        async def running() -> JobRecord | None:
            rec = await call("get", JobRef(job_id=job.job_id))
            return rec if rec.state is JobState.RUNNING else None

        await eventually(running, what="the job RUNNING")
    # The job manager is stopped; the job ends now and its report finds nobody.
    go.touch()

    def reports(outcome: str) -> int:
        return int(agent.stats.reports.get(f"completed:{outcome}", 0))

    await eventually(lambda: reports("unavailable") >= 2, what="the report tried again")
    assert reports("accepted") == 0

    back = msgspec.structs.replace(jm_config, instance=jm_config.instance + "-back")
    async with JobManagerService(back).running():

        async def announced() -> JobRecord | None:
            rec = await call("get", JobRef(job_id=job.job_id))
            return rec if rec.state is JobState.COMPLETED and rec.announced else None

        done = await eventually(announced, timeout=30.0, what="the job COMPLETED and announced")
    assert done.attempt == 1 and done.result is not None
    assert [o.name for o in done.result.outputs] == ["out"]
    assert reports("accepted") == 1 and agent.stats.reports_lost == 0
    events = await stream_events(nc, subjects.events_stream)
    completed = [e for e in events if e.type == "JOB_COMPLETED" and e.data["job_id"] == job.job_id]
    assert len(completed) == 1
