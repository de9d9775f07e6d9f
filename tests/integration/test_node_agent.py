"""The node agent on a real server, driven by a job-manager stand-in speaking the real
protocol: JobDispatch messages in ``P_JOBS``, reports answered on
``P.api.job_manager.report`` (a JobRecord, or a 409 error reply), JOB_CANCELLED events."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from services.node_agent.service import NodeAgentService
from services.node_agent.sweep import register, sweep_orphans
from shared.blobs import BlobStore, ensure_store
from shared.codec import decode, encode
from shared.config import BaseConfig
from shared.contracts import ControlCommand, ErrorBody, ErrorReply, ServiceStatus
from shared.events import JobCancelled, build_event
from shared.intake import ERROR_CODE_HEADER, ERROR_HEADER
from shared.jobs import DataRef, JobDispatch, JobRecord, JobReport, JobSpec, JobState, NodeInfo
from shared.provision import ensure_stream, jobs_stream_config
from shared.subjects import Subjects
from shared.testing.fixtures import ServiceFactory, service_config
from shared.testing.helpers import eventually, stream_events
from shared.testing.procs import open_child

pytestmark = pytest.mark.anyio

_STATES = {"started": JobState.RUNNING, "progress": JobState.RUNNING}


class JobManagerStandIn:
    """Dispatches into ``P_JOBS`` and answers reports like the job manager would."""

    def __init__(self, nc: Client, prefix: str, lease_s: float = 30.0) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.subjects = Subjects(prefix)
        self.lease_s = lease_s
        self.reports: list[JobReport] = []
        self.specs: dict[str, JobSpec] = {}
        #: (job_id, phase) pairs answered with a 409 Conflict.
        self.refuse: set[tuple[str, str]] = set()

    async def start(self) -> None:
        await ensure_stream(self.js, jobs_stream_config(self.subjects, BaseConfig()))
        subject = self.subjects.node_report("*")
        self.sub = await self.nc.subscribe(subject, cb=self._on_report)

    async def _on_report(self, msg: Msg) -> None:
        report = decode(JobReport, msg.data)
        self.reports.append(report)
        if (report.job_id, report.phase) in self.refuse:
            body = encode(ErrorReply(ErrorBody(code=409, message="stale attempt")))
            headers = {ERROR_HEADER: "stale attempt", ERROR_CODE_HEADER: "409"}
            await self.nc.publish(msg.reply, body, headers=headers)
            return
        now = time.time()
        record = JobRecord(
            job_id=report.job_id,
            spec=self.specs[report.job_id],
            state=_STATES.get(report.phase, JobState.COMPLETED),
            attempt=report.attempt,
            fencing=report.fencing,
            node_id=report.node_id,
            submitted_at=now,
            updated_at=now,
            lease_expires_at=now + self.lease_s,
            progress=report.progress,
        )
        await msg.respond(encode(record))

    async def dispatch(self, spec: JobSpec, pool: str) -> JobDispatch:
        job_id = f"job-{uuid.uuid4().hex[:8]}"
        self.specs[job_id] = spec
        d = JobDispatch(job_id=job_id, attempt=1, fencing=7, spec=spec, dispatched_at=time.time())
        headers = {"Nats-Msg-Id": f"{job_id}-1"}
        await self.js.publish(self.subjects.jobs(pool), encode(d), headers=headers)
        return d

    def of(self, job_id: str, phase: str | None = None) -> list[JobReport]:
        return [r for r in self.reports if r.job_id == job_id and phase in (None, r.phase)]

    async def final(self, job_id: str, timeout: float = 30.0) -> JobReport:
        def done() -> JobReport | None:
            ends = [r for r in self.of(job_id) if r.phase in ("completed", "failed")]
            return ends[0] if ends else None

        return await eventually(done, timeout=timeout, what=f"final report of {job_id}")

    async def queued(self) -> int:
        return (await self.js.stream_info(self.subjects.jobs_stream)).state.messages


@pytest.fixture
async def manager(nc: Client, prefix: str) -> AsyncIterator[JobManagerStandIn]:
    jm = JobManagerStandIn(nc, prefix)
    await jm.start()
    yield jm
    await jm.sub.unsubscribe()


def agent_config(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "node_id": f"n-{uuid.uuid4().hex[:6]}",
        "work_dir": str(tmp_path / "work"),
        "capabilities": ["cpu", "shell"],
        "slots": 2,
        "min_free_disk_mb": 0,
        "min_memory_mb": 0,
        "fetch_timeout_s": 0.3,
        "progress_interval_s": 0.2,
        "report_timeout_s": 2.0,
    }
    values.update(overrides)
    return values


def shell(script: str, *args: str, **spec: Any) -> JobSpec:
    return JobSpec(type="shell", args={"argv": [sys.executable, "-c", script, *args]}, **spec)


#: Starts a grandchild ``sleep``, records both pids, reports progress, then waits.
LONG_JOB = """
import json, os, subprocess, sys, time
child = subprocess.Popen(["sleep", "120"])
print(json.dumps({"progress": 0.25}), flush=True)
open(sys.argv[1], "w").write(f"{os.getpid()} {child.pid}")
time.sleep(120)
"""


async def job_pids(pidfile: Path) -> tuple[int, int]:
    def read() -> str | None:
        return pidfile.read_text() if pidfile.exists() else None

    text = await eventually(read, what="pid file")
    leader, child = (int(p) for p in text.split())
    return leader, child


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    alive = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            continue  # gone while we looked: not a member any more
    return alive


async def assert_group_gone(leader: int, child: int) -> None:
    await eventually(lambda: not group_members(leader), timeout=15, what="job group killed")
    gone = not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    assert gone


async def test_shell_job_runs_and_uploads_outputs(
    start_service: ServiceFactory,
    manager: JobManagerStandIn,
    nc: Client,
    prefix: str,
    tmp_path: Path,
) -> None:
    store = await ensure_store(nc.jetstream(), Subjects(prefix).data_store)
    payload = b"games of tic-tac-toe\n" * 10
    source = await BlobStore(store).put_bytes("games.txt", payload)
    agent = await start_service(NodeAgentService, **agent_config(tmp_path))
    script = """
import json, os, pathlib
out = pathlib.Path(os.environ["RINGMASTER_OUTPUTS_DIR"])
data = (pathlib.Path(os.environ["RINGMASTER_INPUTS_DIR"]) / "in" / "games.txt").read_bytes()
args = json.loads(os.environ["RINGMASTER_JOB_ARGS"])
print("a line that is not progress", flush=True)
(out / "data").mkdir()
(out / "data" / "upper.txt").write_bytes(data.upper())
result = {"job": os.environ["RINGMASTER_JOB_ID"], "attempt": os.environ["RINGMASTER_JOB_ATTEMPT"],
          "cwd": os.getcwd(), "seed": args["seed"]}
(out / "result.json").write_text(json.dumps(result))
"""
    spec = JobSpec(
        type="shell",
        args={"argv": [sys.executable, "-c", script], "seed": 3},
        inputs=[DataRef(name="in/games.txt", sha256=source.sha256, size=source.size)],
    )
    d = await manager.dispatch(spec, "cap.shell")  # the shared capability pool
    report = await manager.final(d.job_id)
    assert report.phase == "completed", report.error
    assert manager.of(d.job_id)[0].phase == "started"
    assert (report.node_id, report.attempt, report.fencing) == (agent.node_id, 1, 7)
    expected = payload.upper()
    assert report.result is not None and report.result.exit_code == 0
    assert report.result.outputs == [
        DataRef(
            name="data/upper.txt", sha256=hashlib.sha256(expected).hexdigest(), size=len(expected)
        )
    ]
    assert report.result.result["job"] == d.job_id
    assert report.result.result["attempt"] == "1"
    assert report.result.result["seed"] == 3
    assert report.result.result["cwd"].endswith(f"{d.job_id}-1")
    stored = await store.get(report.result.outputs[0].sha256)
    assert stored.data == expected
    assert await eventually(_is_zero(manager), what="dispatch acked")
    stats = agent.health_check().details["jobs"]
    assert stats["completed"] == 1 and stats["invalid_progress_lines"] >= 1


async def test_a_busy_slot_holds_its_next_job_and_starts_it_when_the_process_ends(
    start_service: ServiceFactory, manager: JobManagerStandIn, tmp_path: Path
) -> None:
    agent = await start_service(NodeAgentService, **agent_config(tmp_path, slots=1))
    sleeper = shell("import time; time.sleep(0.6)")
    first, second, third = [await manager.dispatch(sleeper, "cap.shell") for _ in range(3)]
    for d in (first, second, third):
        assert (await manager.final(d.job_id)).phase == "completed"
    assert await eventually(_is_zero(manager), what="every dispatch acked")
    details = agent.health_check().details
    # The second and third were pulled while the slot was busy, and each started in a
    # slot freed with its dispatch already held: two gaps measured.
    assert details["jobs"]["prefetched"] >= 2
    assert details["slot_gaps"]["count"] == 2
    starts = [manager.of(d.job_id, "started")[0] for d in (first, second, third)]
    assert [r.job_id for r in starts] == [first.job_id, second.job_id, third.job_id]
    assert 0.0 < details["utilization"] <= 1.0


def _is_zero(manager: JobManagerStandIn) -> Any:
    async def check() -> bool:
        return await manager.queued() == 0

    return check


async def test_corrupted_or_missing_input_is_refused_and_never_run(
    start_service: ServiceFactory,
    manager: JobManagerStandIn,
    nc: Client,
    prefix: str,
    tmp_path: Path,
) -> None:
    store = await ensure_store(nc.jetstream(), Subjects(prefix).data_store)
    good = b"the bytes the job expects"
    sha = hashlib.sha256(good).hexdigest()
    await store.put(sha, b"tampered bytes under the good name")  # raw API: no hash check
    await start_service(NodeAgentService, **agent_config(tmp_path))
    marker = tmp_path / "ran"
    touch = f"open({str(marker)!r}, 'w').close()"
    bad = await manager.dispatch(
        shell(touch, inputs=[DataRef(name="in.bin", sha256=sha, size=len(good))]), "cap.cpu"
    )
    missing_sha = hashlib.sha256(b"never stored").hexdigest()
    missing = await manager.dispatch(
        shell(touch, inputs=[DataRef(name="gone.bin", sha256=missing_sha, size=12)]), "cap.cpu"
    )
    report = await manager.final(bad.job_id)
    assert report.phase == "failed"
    assert "in.bin" in report.error and "does not match" in report.error
    report = await manager.final(missing.job_id)
    assert report.phase == "failed" and "gone.bin" in report.error and "missing" in report.error
    assert not marker.exists()
    assert await eventually(_is_zero(manager), what="failed attempts acked")


async def test_timeout_kills_the_whole_process_group(
    start_service: ServiceFactory, manager: JobManagerStandIn, tmp_path: Path
) -> None:
    config = agent_config(tmp_path, type_timeouts_s={"shell": 1.5})
    agent = await start_service(NodeAgentService, **config)
    pidfile = tmp_path / "pids"
    d = await manager.dispatch(
        shell(LONG_JOB, str(pidfile), timeout_s=600), f"node.{agent.node_id}"
    )
    leader, child = await job_pids(pidfile)
    assert os.getpgid(child) == leader != os.getpgrp()  # its own group, grandchild included
    report = await manager.final(d.job_id)
    assert report.phase == "failed" and report.error == "timed out after 1.5s"
    await assert_group_gone(leader, child)
    assert agent.health_check().details["jobs"]["killed"] == 1


async def test_cancel_kills_a_running_job(
    start_service: ServiceFactory,
    manager: JobManagerStandIn,
    nc: Client,
    prefix: str,
    tmp_path: Path,
) -> None:
    agent = await start_service(NodeAgentService, **agent_config(tmp_path))
    pidfile = tmp_path / "pids"
    d = await manager.dispatch(shell(LONG_JOB, str(pidfile)), f"node.{agent.node_id}")
    leader, child = await job_pids(pidfile)
    # The job's progress line became a progress report and a JOB_PROGRESS event.
    await eventually(
        lambda: any(r.progress == 0.25 for r in manager.of(d.job_id, "progress")),
        what="progress report",
    )

    async def progress_event() -> bool:
        events = await stream_events(nc, f"{prefix}_EVENTS")
        return any(e.type == "JOB_PROGRESS" and e.data["job_id"] == d.job_id for e in events)

    await eventually(progress_event, what="JOB_PROGRESS event")
    subjects = Subjects(prefix)
    event = build_event(prefix, "job_manager", "jm-test", 1, JobCancelled(job_id=d.job_id))
    await nc.jetstream().publish(subjects.event("job_manager", "JOB_CANCELLED"), encode(event))
    await assert_group_gone(leader, child)
    assert await eventually(_is_zero(manager), what="cancelled dispatch acked")
    assert not manager.of(d.job_id, "completed") and not manager.of(d.job_id, "failed")
    assert agent.health_check().details["jobs"]["killed"] == 1


async def test_conflict_on_progress_kills_and_on_start_drops(
    start_service: ServiceFactory, manager: JobManagerStandIn, tmp_path: Path
) -> None:
    agent = await start_service(NodeAgentService, **agent_config(tmp_path))
    pidfile, marker = tmp_path / "pids", tmp_path / "ran"
    superseded = await manager.dispatch(shell(LONG_JOB, str(pidfile)), f"node.{agent.node_id}")
    manager.refuse.add((superseded.job_id, "progress"))
    leader, child = await job_pids(pidfile)
    await assert_group_gone(leader, child)
    stale = shell(f"open({str(marker)!r}, 'w').close()")
    refused = await manager.dispatch(stale, f"node.{agent.node_id}")
    manager.refuse.add((refused.job_id, "started"))
    await eventually(lambda: manager.of(refused.job_id, "started"), what="started report")
    assert await eventually(_is_zero(manager), what="both dispatches gone from the stream")
    assert not marker.exists()
    assert [r.phase for r in manager.of(refused.job_id)] == ["started"]
    assert agent.health_check().details["jobs"]["refused"] == 1


async def test_commands_map_types_and_unknown_types_fail(
    start_service: ServiceFactory, manager: JobManagerStandIn, tmp_path: Path
) -> None:
    script = "import sys; sys.stderr.write('boom\\n'); sys.exit(3)"
    commands = {"crash": ["{python}", "-c", script], "hello": ["{python}", "-c", "print(1)"]}
    agent = await start_service(NodeAgentService, **agent_config(tmp_path, commands=commands))
    pool = f"node.{agent.node_id}"
    hello = await manager.dispatch(JobSpec(type="hello"), pool)
    crash = await manager.dispatch(JobSpec(type="crash"), pool)
    unknown = await manager.dispatch(JobSpec(type="train"), pool)
    assert (await manager.final(hello.job_id)).phase == "completed"
    report = await manager.final(crash.job_id)
    assert (report.phase, report.error) == ("failed", "exit code 3: boom")
    assert report.result is not None and report.result.exit_code == 3
    report = await manager.final(unknown.job_id)
    assert (report.phase, report.error) == ("failed", "no command for job type train")


async def test_disk_floor_refuses_work_and_degrades(
    start_service: ServiceFactory,
    manager: JobManagerStandIn,
    nc: Client,
    prefix: str,
    tmp_path: Path,
) -> None:
    config = agent_config(tmp_path, min_free_disk_mb=10**9)
    infos: list[NodeInfo] = []

    async def on_info(msg: Msg) -> None:
        infos.append(decode(NodeInfo, msg.data))

    await nc.subscribe(Subjects(prefix).node(config["node_id"]), cb=on_info)
    agent = await start_service(NodeAgentService, **config)
    d = await manager.dispatch(shell("print(1)"), f"node.{agent.node_id}")
    await eventually(lambda: len(infos) >= 4, what="several NodeInfos")
    assert all(not i.accepting and "free disk" in i.reason and i.free_slots == 0 for i in infos)
    health = agent.health_check()
    assert health.status is ServiceStatus.DEGRADED and "free disk" in health.message
    assert health.details["floors"]["accepting"] is False
    assert await manager.queued() == 1 and not manager.of(d.job_id)
    kv = await nc.jetstream().key_value(f"{prefix}_nodes")
    stored = decode(NodeInfo, (await kv.get(agent.node_id)).value or b"")
    assert stored.accepting is False and stored.node_id == agent.node_id


async def test_hollow_nodes_publish_and_complete_jobs(
    start_service: ServiceFactory,
    manager: JobManagerStandIn,
    nc: Client,
    prefix: str,
    tmp_path: Path,
) -> None:
    config = agent_config(tmp_path, hollow=3)
    seen: dict[str, NodeInfo] = {}

    async def on_info(msg: Msg) -> None:
        info = decode(NodeInfo, msg.data)
        seen[info.node_id] = info

    await nc.subscribe(Subjects(prefix).nodes, cb=on_info)
    agent = await start_service(NodeAgentService, **config)
    ids = [f"{agent.node_id}-h{i}" for i in range(3)]
    await eventually(lambda: set(seen) == set(ids), what="three hollow NodeInfos")
    assert all(seen[i].hollow and seen[i].accepting for i in ids)
    sleep = JobSpec(type="sleep", args={"duration_s": 0.3})
    jobs = {i: await manager.dispatch(sleep, f"node.{i}") for i in ids}
    pooled = await manager.dispatch(JobSpec(type="sleep"), "cap.cpu")
    for node_id, d in jobs.items():
        report = await manager.final(d.job_id)
        assert (report.phase, report.node_id) == ("completed", node_id)
        assert report.result is not None and report.result.result == {}
    assert (await manager.final(pooled.job_id)).node_id in ids
    assert await eventually(_is_zero(manager), what="every dispatch acked")
    kv = await nc.jetstream().key_value(f"{prefix}_nodes")
    assert set(ids) <= set(await kv.keys())


async def test_stop_kills_running_job(
    nats_url: str, manager: JobManagerStandIn, prefix: str, tmp_path: Path
) -> None:
    config = service_config(NodeAgentService, nats_url, prefix, **agent_config(tmp_path))
    agent = NodeAgentService(config)
    pidfile = tmp_path / "pids"
    async with agent.running():
        d = await manager.dispatch(shell(LONG_JOB, str(pidfile)), f"node.{agent.node_id}")
        leader, child = await job_pids(pidfile)
    assert not group_members(leader)
    await assert_group_gone(leader, child)
    report = await manager.final(d.job_id)
    assert (report.phase, report.error) == ("failed", "killed: agent stopping")


async def test_drain_hands_back_running_job(
    start_service: ServiceFactory,
    manager: JobManagerStandIn,
    nc: Client,
    prefix: str,
    tmp_path: Path,
) -> None:
    agent = await start_service(NodeAgentService, **agent_config(tmp_path, drain_grace_s=0.5))
    pidfile = tmp_path / "pids"
    d = await manager.dispatch(shell(LONG_JOB, str(pidfile)), f"node.{agent.node_id}")
    leader, child = await job_pids(pidfile)
    command = encode(ControlCommand(command="drain", reason="test"))
    await nc.request(Subjects(prefix).ctl("node_agent", agent.instance), command, timeout=5)
    report = await manager.final(d.job_id)
    assert (report.phase, report.error) == ("failed", "handed back: agent draining")
    await assert_group_gone(leader, child)
    assert agent.health_check().details["jobs"]["handed_back"] == 1


async def test_deleted_consumer_is_rebound(
    start_service: ServiceFactory,
    manager: JobManagerStandIn,
    nc: Client,
    prefix: str,
    tmp_path: Path,
) -> None:
    agent = await start_service(NodeAgentService, **agent_config(tmp_path))
    js = nc.jetstream()
    stream = Subjects(prefix).jobs_stream

    async def bound() -> bool:
        try:
            await js.consumer_info(stream, f"node-{agent.node_id}")
        except NotFoundError:
            return False
        return True

    await eventually(bound, what="the node's consumer")
    await js.delete_consumer(stream, f"node-{agent.node_id}")
    d = await manager.dispatch(
        JobSpec(type="shell", args={"argv": ["true"]}), f"node.{agent.node_id}"
    )
    assert (await manager.final(d.job_id)).phase == "completed"
    assert agent.health_check().details["jobs"]["rebinds"] >= 1


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_no_job_process_outlives_a_killed_agent(
    start_service: ServiceFactory,
    manager: JobManagerStandIn,
    nats_url: str,
    prefix: str,
    tmp_path: Path,
) -> None:
    config = agent_config(tmp_path, beacon_interval=0.2)
    argv = [sys.executable, "-m", "services.node_agent", "--nats-url", nats_url]
    for name, value in config.items():
        text = json.dumps(value) if isinstance(value, list) else str(value)
        argv += ["--" + name.replace("_", "-"), text]
    argv += ["--prefix", prefix]
    pidfile = tmp_path / "pids"
    with (tmp_path / "agent.log").open("wb") as log:
        proc = await open_child(argv, stdout=log, stderr=subprocess.STDOUT)
    leader = child = 0
    try:
        await manager.dispatch(shell(LONG_JOB, str(pidfile)), f"node.{config['node_id']}")
        leader, child = await job_pids(pidfile)
        proc.kill()
        # The leader dies with its agent (parent-death signal); its own child is orphaned.
        await eventually(lambda: not alive(leader), what="job leader gone with the agent")
        assert alive(child)
        # The next agent on this work directory kills what the last one left behind.
        agent = await start_service(NodeAgentService, **config)
        await eventually(lambda: not alive(child), what="orphaned grandchild killed")
        assert agent.health_check().details["jobs"]["orphans_killed"] == 1
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        for pid in (leader, child):
            if pid and alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_sweep_spares_groups_that_are_not_the_jobs(tmp_path: Path) -> None:
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        register(tmp_path, "job-1-1", stranger.pid, "job-1")
        (tmp_path / "job-1-1").mkdir()
        assert sweep_orphans(tmp_path) == []
        assert alive(stranger.pid)
        assert not (tmp_path / "job-1-1").exists()  # the stale directory goes all the same
        assert sweep_orphans(tmp_path) == []  # and so does the registration
    finally:
        stranger.kill()
        stranger.wait()
