"""A job's end is announced even when the job manager dies between the write and the event.

Each test loses the terminal event the way a crash does (the process dies after the
record's compare-and-set, before the event reached the stream) and checks that the
event still arrives exactly once: from the agent's repeated report, from a restarted
manager's sweep, and from a real process killed at its failpoint.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import anyio
import msgspec
import nats.errors
import pytest
from nats.aio.client import Client

from services.job_manager.service import JobManagerService
from shared.failpoints import fired
from shared.jobs import JobRecord, JobRef, JobResult, JobSpec, JobState
from shared.outbox import Outbox
from shared.testing.fixtures import service_config
from shared.testing.helpers import eventually
from shared.testing.procs import open_child
from tests.integration.test_job_manager import FAST, StandIn, call, events, ok

pytestmark = pytest.mark.anyio

S = JobState


def lose(svc: JobManagerService, suffix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``svc`` lose every event whose subject ends with ``suffix``, as a crash would."""
    outbox: Outbox = svc.outbox
    publish = outbox.publish

    async def dying(
        subject: str, payload: bytes, msg_id: str, headers: dict[str, str] | None = None
    ) -> bool:
        if subject.endswith(suffix):
            return False  # never reaches the stream: the process "died" first
        return await publish(subject, payload, msg_id, headers)

    monkeypatch.setattr(outbox, "publish", dying)


async def test_a_repeated_report_announces_a_completion_lost_in_a_crash(
    nc: Client, nats_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The sweep waits a minute here: only the repeated report can announce.
    cfg = service_config(JobManagerService, nats_url, prefix, announce_interval=60.0, **FAST)
    async with JobManagerService(cfg).running() as svc:
        lose(svc, "job.completed", monkeypatch)
        rec = await ok(nc, prefix, "submit", JobSpec(type="selfplay"), JobRecord)
        async with StandIn(nc, prefix, "cap.cpu").pulling() as agent:
            d = await agent.run_one(JobResult(result={"games": 1}))
    assert (await _record(nc, prefix, rec.job_id)).state is S.COMPLETED
    assert await events(nc, prefix, "JOB_COMPLETED") == []
    second = msgspec.structs.replace(cfg, instance=cfg.instance + "-2")
    async with JobManagerService(second).running() as svc2:
        # The agent lost the reply with the manager and reports again.
        result = msgspec.to_builtins(JobResult(result={"games": 1}))
        code, body = await StandIn(nc, prefix, "cap.cpu").report(d, "completed", result=result)
        assert code == 200, body
        (completed,) = await eventually(lambda: events(nc, prefix, "JOB_COMPLETED"))
        assert (completed["job_id"], completed["attempt"]) == (rec.job_id, 1)
        done = await eventually(lambda: _announced(nc, prefix, rec.job_id))
        assert done.state is S.COMPLETED
        assert svc2.health_check().details["counts"]["reannounced"] == 1
        # A third report is a plain duplicate: announced already, nothing more is sent.
        code, _ = await StandIn(nc, prefix, "cap.cpu").report(d, "completed", result=result)
        assert code == 200
        await anyio.sleep(0.3)
        assert len(await events(nc, prefix, "JOB_COMPLETED")) == 1


async def _record(nc: Client, prefix: str, job_id: str) -> JobRecord:
    # Read from the bucket itself: no manager runs to answer ``get``.
    kv = await nc.jetstream().key_value(f"{prefix}_jobs")
    entry = await kv.get(job_id)
    return msgspec.json.decode(entry.value or b"", type=JobRecord)


async def _announced(nc: Client, prefix: str, job_id: str) -> JobRecord | None:
    rec = await ok(nc, prefix, "get", JobRef(job_id=job_id), JobRecord)
    return rec if rec.announced else None


async def test_a_restarted_manager_announces_a_cancel_lost_in_a_crash(
    nc: Client, nats_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = service_config(JobManagerService, nats_url, prefix, announce_interval=0.2, **FAST)
    async with JobManagerService(cfg).running() as svc:
        lose(svc, "job.cancelled", monkeypatch)
        rec = await ok(nc, prefix, "submit", JobSpec(type="selfplay"), JobRecord)
        await ok(nc, prefix, "cancel", JobRef(job_id=rec.job_id, reason="test"), JobRecord)
        await anyio.sleep(0.5)  # its own sweep retries, and loses again
    assert await events(nc, prefix, "JOB_CANCELLED") == []
    # No report will come for a cancelled job: the next manager finds the obligation.
    second = msgspec.structs.replace(cfg, instance=cfg.instance + "-2")
    async with JobManagerService(second).running():
        (cancelled,) = await eventually(lambda: events(nc, prefix, "JOB_CANCELLED"))
        assert cancelled["job_id"] == rec.job_id
        await eventually(lambda: _announced(nc, prefix, rec.job_id))


async def _stop(proc: Any) -> None:
    if proc.returncode is None:
        proc.terminate()
        with anyio.move_on_after(10):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def _env(nats_url: str, prefix: str, instance: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "NATS_URL": nats_url, **extra}
    for field, value in {
        "prefix": prefix,
        "instance": instance,
        "beacon_interval": "0.2",
        "events_max_bytes": str(16 << 20),
        "announce_interval": "0.2",
        "reaper_interval": "0.1",
    }.items():
        env[f"RINGMASTER_JOB_MANAGER_{field.upper()}"] = value
    return env


async def test_a_manager_killed_at_its_failpoint_still_announces_the_completion(
    nc: Client, nats_url: str, prefix: str, tmp_path: Path
) -> None:
    cmd = [sys.executable, "-m", "services.job_manager"]
    armed = {
        "RINGMASTER_FAILPOINTS": "job_manager.report.after_write=crash(once)",
        "RINGMASTER_FAILPOINTS_DIR": str(tmp_path),
    }
    log = (tmp_path / "jm.log").open("ab")
    first = await open_child(
        cmd, env=_env(nats_url, prefix, "jm-a", **armed), stdout=log, stderr=log
    )
    try:
        rec = await eventually(
            lambda: _submitted(nc, prefix), timeout=30, what="the manager to answer"
        )
        async with StandIn(nc, prefix, "cap.cpu").pulling() as agent:
            d, msg = await agent.take()
            code, body = await agent.report(d, "started")
            assert code == 200, body
            # The first terminal write fires the point: no reply, the process is gone.
            with pytest.raises((TimeoutError, nats.errors.Error)):
                await agent.report(d, "completed")
            with anyio.fail_after(10):
                await first.wait()
            assert first.returncode == -9
            assert fired(tmp_path) == {"job_manager.report.after_write": 1}
            await msg.ack()
    finally:
        await _stop(first)
    assert (await _record(nc, prefix, rec.job_id)).state is S.COMPLETED
    second = await open_child(
        cmd, env=_env(nats_url, prefix, "jm-b", **armed), stdout=log, stderr=log
    )
    try:
        (completed,) = await eventually(
            lambda: events(nc, prefix, "JOB_COMPLETED"), timeout=30, what="the announcement"
        )
        assert completed["job_id"] == rec.job_id
    finally:
        await _stop(second)
        log.close()


async def _submitted(nc: Client, prefix: str) -> JobRecord | None:
    try:
        spec = JobSpec(type="selfplay", idempotency_key="the-one")
        code, body = await call(nc, prefix, "submit", spec)
    except (TimeoutError, nats.errors.Error):  # not up yet
        return None
    return msgspec.convert(body, JobRecord) if code == 200 else None
