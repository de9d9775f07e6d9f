"""Job listing in pages, history retirement and counts, against a real job manager."""

from __future__ import annotations

import json
import time

import anyio
import pytest
from nats.aio.client import Client

from services.job_manager import history as history_module
from services.job_manager.history import History
from services.job_manager.reaper import LEASE_KEY
from services.job_manager.service import JobManagerService
from shared.codec import encode
from shared.contracts import Empty
from shared.jobs import JobCounts, JobList, JobQuery, JobRecord, JobRef, JobSpec, Requirements
from shared.kv import LeaseRecord, bucket_config, ensure_bucket
from shared.subjects import Subjects
from shared.testing.fixtures import ServiceFactory
from shared.testing.helpers import eventually
from tests.integration.test_cli_jobs import cli
from tests.integration.test_job_manager import call, ok

pytestmark = pytest.mark.anyio

POOLED = Requirements(capability="nobody", pooled=True)  # no agent: jobs stay queued


async def submit_many(nc: Client, prefix: str, n: int, labels: dict[str, str]) -> list[str]:
    """``n`` jobs submitted over the API, 20 at a time; their ids."""
    ids: list[str] = []

    async def one(i: int) -> None:
        spec = JobSpec(type="bulk", requirements=POOLED, labels={**labels, "i": str(i)})
        ids.append((await ok(nc, prefix, "submit", spec, JobRecord)).job_id)

    for start in range(0, n, 20):
        async with anyio.create_task_group() as tg:
            for i in range(start, min(n, start + 20)):
                tg.start_soon(one, i)
    return ids


async def test_300_jobs_with_4kb_labels_list_in_pages_and_via_the_cli(
    start_service: ServiceFactory,
    nc: Client,
    prefix: str,
    nats_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await start_service(JobManagerService)
    ids = await submit_many(nc, prefix, 300, {"blob": "x" * 4096})
    for job_id in ids[::2]:  # half terminal: those are read from the bucket by key
        await ok(nc, prefix, "cancel", JobRef(job_id=job_id), JobRecord)

    # Every page fits max_payload (1 MB here): 300 records of 4 KB take several.
    seen: list[str] = []
    cursor, pages = "", 0
    while True:
        page = await ok(nc, prefix, "list", JobQuery(limit=10_000, cursor=cursor), JobList)
        pages += 1
        assert len(json.dumps([j.job_id for j in page.jobs])) < nc.max_payload
        assert page.total == 300
        seen += [j.job_id for j in page.jobs]
        cursor = page.next_cursor
        if not cursor:
            break
    assert pages >= 2 and sorted(seen) == sorted(ids) and len(seen) == len(set(seen))

    common = ["--nats-url", nats_url, "--prefix", prefix]
    capsys.readouterr()
    assert await cli("jobs", *common, "--limit", "10000", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(j["job_id"] for j in listed["jobs"]) == sorted(ids)
    assert listed["next_cursor"] == ""

    # A limit smaller than a page: exactly that many, and a cursor to go on from.
    assert await cli("jobs", *common, "--limit", "7", "--json") == 0
    short = json.loads(capsys.readouterr().out)
    assert len(short["jobs"]) == 7 and short["next_cursor"]
    assert (
        await cli("jobs", *common, "--limit", "3", "--json", "--cursor", short["next_cursor"]) == 0
    )
    after = json.loads(capsys.readouterr().out)
    assert [j["job_id"] for j in after["jobs"]] == seen[7:10]

    counts = await ok(nc, prefix, "counts", Empty(), JobCounts)
    assert counts.states["CANCELLED"] == 150 and sum(counts.states.values()) == 300


async def test_a_cursor_that_is_not_one_is_a_400_and_a_usage_error(
    start_service: ServiceFactory,
    nc: Client,
    prefix: str,
    nats_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await start_service(JobManagerService)
    for bad in ("not-a-cursor", "W1swXQ", "%%%"):
        code, body = await call(nc, prefix, "list", JobQuery(cursor=bad))
        assert code == 400 and "cursor" in body["error"]["message"]
    capsys.readouterr()
    common = ["--nats-url", nats_url, "--prefix", prefix]
    assert await cli("jobs", *common, "--cursor", "not-a-cursor") == 2
    err = capsys.readouterr().err.strip()
    assert "cursor" in err and len(err.splitlines()) == 1


async def test_terminal_jobs_retire_to_history_where_get_still_finds_them(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    svc = await start_service(
        JobManagerService, history_after_s=0.2, history_interval=0.1, reaper_interval=0.1
    )
    keep = await submit_many(nc, prefix, 2, {})
    spec = JobSpec(type="bulk", requirements=POOLED, idempotency_key="retire-me")
    job = await ok(nc, prefix, "submit", spec, JobRecord)
    await ok(nc, prefix, "cancel", JobRef(job_id=job.job_id), JobRecord)

    async def retired() -> bool:
        listing = await ok(nc, prefix, "list", JobQuery(), JobList)
        return job.job_id not in {j.job_id for j in listing.jobs}

    await eventually(retired, timeout=20)
    assert (await ok(nc, prefix, "get", JobRef(job_id=job.job_id), JobRecord)).state == "CANCELLED"
    code, body = await call(nc, prefix, "cancel", JobRef(job_id=job.job_id))
    assert code == 409 and "retired" in body["error"]["message"]
    listing = await ok(nc, prefix, "list", JobQuery(), JobList)
    assert sorted(j.job_id for j in listing.jobs) == sorted(keep)  # live jobs never retire
    counts = await ok(nc, prefix, "counts", Empty(), JobCounts)
    assert counts.retired == 1 and counts.states["CANCELLED"] == 0
    # The idempotency key expired with the job: the same key now makes a new job.
    again = await ok(nc, prefix, "submit", spec, JobRecord)
    assert again.job_id != job.job_id
    history = svc.api.history
    assert isinstance(history, History) and history.details()["retired"] == 1
    code, _ = await call(nc, prefix, "get", JobRef(job_id="no-such-job"))
    assert code == 404


async def test_an_instance_without_the_lease_forgets_jobs_whose_deletion_it_missed(
    start_service: ServiceFactory, nc: Client, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history_module, "STALE_GRACE_S", 0.0)
    subjects = Subjects(prefix)
    leases = await ensure_bucket(
        nc.jetstream(), bucket_config(subjects.bucket("leases"), history=1, ttl=None)
    )
    # Another instance holds the reaper lease (and so the history duty) for good.
    await leases.put(LEASE_KEY, encode(LeaseRecord("elsewhere", time.time() + 3600)))
    svc = await start_service(JobManagerService, history_after_s=0.2, history_interval=0.1)
    job = (await submit_many(nc, prefix, 1, {}))[0]
    await ok(nc, prefix, "cancel", JobRef(job_id=job), JobRecord)
    counts = await ok(nc, prefix, "counts", Empty(), JobCounts)
    assert counts.states["CANCELLED"] == 1  # due, but not this instance's to retire
    # The holder retired it and its tombstone was purged while our watch was away:
    # the record vanishes with no event at all.
    bucket = subjects.bucket("jobs")
    await nc.jetstream().purge_stream(f"KV_{bucket}", subject=f"$KV.{bucket}.{job}")

    async def forgotten() -> bool:
        counts = await ok(nc, prefix, "counts", Empty(), JobCounts)
        return counts.states["CANCELLED"] == 0

    await eventually(forgotten, timeout=20)
    assert svc.health_check().details["history"]["stale_forgotten"] == 1
