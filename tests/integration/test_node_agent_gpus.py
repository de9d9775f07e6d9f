"""GPUs per slot on a real server: the real job manager, node selector and node agent,
the agent with a declared 4-GPU inventory.

Jobs are shell jobs that write what they were shown (``CUDA_VISIBLE_DEVICES``) to a
marker file and then wait for the test to release them, so "side by side" and "waits"
are observed states, never timings.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client

from services.job_manager.service import JobManagerService
from services.node_agent.service import NodeAgentService
from services.node_selector.service import NodeSelectorService
from shared.codec import encode
from shared.jobs import JobRecord, JobRef, JobSpec, JobState, Requirements, SelectReply
from shared.jobs import SelectRequest as Select
from shared.subjects import Subjects
from shared.testing.fixtures import ServiceFactory
from shared.testing.helpers import eventually

pytestmark = pytest.mark.anyio

FAST = {"reaper_interval": 0.1, "retry_base_s": 0.05, "retry_max_s": 0.2}
GPUS = [{"index": i, "name": "NVIDIA A100-SXM4-40GB", "memory_total_mb": 40960} for i in range(4)]

#: Records what the job sees, then waits until the test creates ``<marker>.go``.
JOB = """
import json, os, sys, time
seen = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES")}
with open(sys.argv[1] + ".tmp", "w") as f:
    json.dump(seen, f)
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
while not os.path.exists(sys.argv[1] + ".go"):
    time.sleep(0.02)
"""


def agent_config(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "node_id": "gpu-node",
        "work_dir": str(tmp_path / "work"),
        "capabilities": ["cpu", "shell"],
        "slots": 4,
        "declared_gpus": GPUS,
        "min_free_disk_mb": 0,
        "min_memory_mb": 0,
        "fetch_timeout_s": 0.3,
        "progress_interval_s": 0.2,
        "report_timeout_s": 2.0,
    }
    values.update(overrides)
    return values


async def api(nc: Client, prefix: str, service: str, method: str, payload: Any) -> Any:
    msg = await nc.request(Subjects(prefix).api(service, method), encode(payload), timeout=5)
    code = (msg.headers or {}).get("Nats-Service-Error-Code")
    assert code is None, msg.data
    return json.loads(msg.data)


class Jobs:
    """Submits marker jobs to the real job manager and reads what they saw."""

    def __init__(self, nc: Client, prefix: str, tmp_path: Path) -> None:
        self.nc, self.prefix, self.dir = nc, prefix, tmp_path

    async def submit(self, name: str, **requirement: Any) -> str:
        argv = [sys.executable, "-c", JOB, str(self.dir / name)]
        req = Requirements(node_id="gpu-node", **requirement)
        spec = JobSpec(type="shell", args={"argv": argv}, requirements=req, max_attempts=2)
        rec = msgspec.convert(
            await api(self.nc, self.prefix, "job_manager", "submit", spec), JobRecord
        )
        return rec.job_id

    async def seen(self, name: str) -> dict[str, str]:
        marker = self.dir / name
        await eventually(marker.exists, what=f"job {name} running")
        found: dict[str, str] = json.loads(marker.read_text())
        return found

    def release(self, name: str) -> None:
        (self.dir / f"{name}.go").touch()

    async def record(self, job_id: str) -> JobRecord:
        body = await api(self.nc, self.prefix, "job_manager", "get", JobRef(job_id=job_id))
        return msgspec.convert(body, JobRecord)

    async def ends(self, job_id: str, state: JobState) -> JobRecord:
        async def done() -> JobRecord | None:
            rec = await self.record(job_id)
            return rec if rec.state is state else None

        return await eventually(done, timeout=30, what=f"{job_id} {state}")


async def test_gpu_jobs_get_disjoint_devices_a_third_waits_and_cpu_jobs_see_none(
    start_service: ServiceFactory, nc: Client, prefix: str, tmp_path: Path
) -> None:
    await start_service(JobManagerService, **FAST)
    agent = await start_service(NodeAgentService, **agent_config(tmp_path))
    jobs = Jobs(nc, prefix, tmp_path)
    a = await jobs.submit("a", gpus=2)
    b = await jobs.submit("b", gpus=2)
    seen_a, seen_b = await jobs.seen("a"), await jobs.seen("b")  # both run at once
    devices_a = set(seen_a["CUDA_VISIBLE_DEVICES"].split(","))
    devices_b = set(seen_b["CUDA_VISIBLE_DEVICES"].split(","))
    assert len(devices_a) == len(devices_b) == 2 and not devices_a & devices_b
    assert seen_a["NVIDIA_VISIBLE_DEVICES"] == seen_a["CUDA_VISIBLE_DEVICES"]
    assert agent.real is not None
    held = {g.index: g.assigned_to for g in agent.real.info().gpus}
    assert sorted(held.values()) == sorted([f"{a}-1"] * 2 + [f"{b}-1"] * 2)

    c = await jobs.submit("c", gpus=2)  # fits the node, not now: it waits

    def waiting() -> bool:
        return agent.health_check().details["gpus"]["waiting"] == [f"{c}-1"]

    await eventually(waiting, what="the third job waiting for GPUs")
    assert not (tmp_path / "c").exists()
    assert agent.health_check().details["gpus"]["free"] == 0
    jobs.release("a")
    await jobs.ends(a, JobState.COMPLETED)
    seen_c = await jobs.seen("c")
    assert set(seen_c["CUDA_VISIBLE_DEVICES"].split(",")) == devices_a  # a's, freed
    cpu = await jobs.submit("cpu")
    seen_cpu = await jobs.seen("cpu")
    assert seen_cpu == {"CUDA_VISIBLE_DEVICES": "", "NVIDIA_VISIBLE_DEVICES": ""}
    for name, job_id in (("b", b), ("c", c), ("cpu", cpu)):
        jobs.release(name)
        await jobs.ends(job_id, JobState.COMPLETED)
    details = agent.health_check().details["gpus"]
    assert (details["free"], details["waited"], details["refused"]) == (4, 1, 0)


async def test_a_job_needing_more_gpus_than_the_node_has_fails_with_a_clear_error(
    start_service: ServiceFactory, nc: Client, prefix: str, tmp_path: Path
) -> None:
    await start_service(JobManagerService, **FAST)
    agent = await start_service(NodeAgentService, **agent_config(tmp_path))
    jobs = Jobs(nc, prefix, tmp_path)
    big = await jobs.submit("big", gpus=8)
    rec = await jobs.ends(big, JobState.FAILED)
    assert rec.permanent and rec.attempt == 2
    assert rec.error == "refused: node gpu-node cannot fit it: needs 8 GPU(s); the node has 4"
    assert not (tmp_path / "big").exists()  # never run
    details = agent.health_check().details["gpus"]
    assert details["refused"] == 2 and "needs 8 GPU(s)" in details["last_refusal"]
    # Too much memory per device is the same refusal; the node still serves what fits.
    huge = await jobs.submit("huge", gpus=1, gpu_memory_mb=81920)
    assert "at least 81920 MB each" in (await jobs.ends(huge, JobState.FAILED)).error
    ok = await jobs.submit("ok", gpus=4)
    assert len((await jobs.seen("ok"))["CUDA_VISIBLE_DEVICES"].split(",")) == 4
    jobs.release("ok")
    await jobs.ends(ok, JobState.COMPLETED)


async def test_the_selector_sees_free_gpus_and_never_picks_a_node_short_of_them(
    start_service: ServiceFactory, nc: Client, prefix: str, tmp_path: Path
) -> None:
    selector = await start_service(NodeSelectorService)
    await start_service(JobManagerService, **FAST)
    await start_service(NodeAgentService, **agent_config(tmp_path))

    async def select(**requirement: Any) -> list[str]:
        request = Select(requirement=Requirements(**requirement))
        body = await api(nc, prefix, "node_selector", "select", request)
        return msgspec.convert(body, SelectReply).nodes

    await eventually(lambda: select(gpus=4), what="the GPU node in the selector's view")
    assert await select(gpus=8) == [] and await select(gpus=1, gpu_memory_mb=50_000) == []
    jobs = Jobs(nc, prefix, tmp_path)
    held = await jobs.submit("held", gpus=3)
    await jobs.seen("held")

    async def one_left() -> bool:
        return await select(gpus=2) == [] and await select(gpus=1) == ["gpu-node"]

    await eventually(one_left, what="NodeInfo showing 1 free GPU")
    jobs.release("held")
    await jobs.ends(held, JobState.COMPLETED)
    # The refusals of a job that asked too much do not make the node unhealthy.
    big = await jobs.submit("big", gpus=8)
    await jobs.ends(big, JobState.FAILED)
    counts = selector.health_check().details["counts"]
    await eventually(lambda: selector.health_check().details["counts"].get("refusals_ignored"))
    assert not selector.health_check().details["unhealthy"], counts


async def test_hollow_nodes_assign_from_the_declared_inventory(
    start_service: ServiceFactory, nc: Client, prefix: str, tmp_path: Path
) -> None:
    await start_service(JobManagerService, **FAST)
    agent = await start_service(NodeAgentService, **agent_config(tmp_path, hollow=2))
    jobs = Jobs(nc, prefix, tmp_path)
    results = []
    for gpus in (2, 0):
        spec = JobSpec(type="t", requirements=Requirements(node_id="gpu-node-h1", gpus=gpus))
        rec = msgspec.convert(await api(nc, prefix, "job_manager", "submit", spec), JobRecord)
        done = await jobs.ends(rec.job_id, JobState.COMPLETED)
        assert done.result is not None
        results.append(done.result.result.get("cuda_visible_devices"))
    assert results == ["0,1", None]
    spec = JobSpec(
        type="t", max_attempts=1, requirements=Requirements(node_id="gpu-node-h0", gpus=5)
    )
    rec = msgspec.convert(await api(nc, prefix, "job_manager", "submit", spec), JobRecord)
    failed = await jobs.ends(rec.job_id, JobState.FAILED)
    assert failed.error.startswith("refused: node gpu-node-h0 cannot fit it: needs 5 GPU(s)")
    assert agent.health_check().details["gpus"]["refused"] == 1


async def test_a_pooled_job_no_node_fits_fails_with_the_refusal_on_its_last_delivery(
    start_service: ServiceFactory, nc: Client, prefix: str, tmp_path: Path
) -> None:
    await start_service(JobManagerService, **FAST)
    agent = await start_service(NodeAgentService, **agent_config(tmp_path, max_deliver=2))
    req = Requirements(capability="shell", pooled=True, gpus=6)
    spec = JobSpec(type="shell", args={"argv": ["true"]}, requirements=req, max_attempts=1)
    rec = msgspec.convert(await api(nc, prefix, "job_manager", "submit", spec), JobRecord)
    assert rec.pool == "cap.shell"
    failed = await Jobs(nc, prefix, tmp_path).ends(rec.job_id, JobState.FAILED)
    # Handed back once for another node, then refused with its reason on the last delivery.
    assert failed.error == "refused: node gpu-node cannot fit it: needs 6 GPU(s); the node has 4"
    assert agent.health_check().details["gpus"]["refused"] == 2
