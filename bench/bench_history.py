"""Job listing and the orchestrator's status with 20,000 terminal jobs in the jobs bucket.

Real processes on this benchmark's own nats-server: a job manager (``history_after_s``
0, so every record stays in the hot bucket) and an orchestrator (HTTP off). Before they
start, the bench writes ``TERMINAL_JOBS`` COMPLETED records (labels of ``LABEL_BYTES``)
straight into the jobs bucket, pipelined; then submits ``LIVE_JOBS`` pooled jobs that no
agent takes (PENDING/DISPATCHED, answered from memory).

Timed, each ``REPEAT`` times, one request at a time: ``list`` first page of COMPLETED
jobs (limit 100, terminal records read by key), of any state (the newest are live, in
memory), of one non-terminal state, ``counts``, the four
requests of the orchestrator's jobs view, and ``P.api.orchestrator.status``; once:
every page of ``list`` (limit 10,000, following ``next_cursor``). Raw limits, same run:
a KV get round trip, and one scan of the whole bucket (what ``list`` did before).
Then the job manager is restarted with ``history_after_s`` 1 and the bench times how
long it takes to retire every terminal record to the history bucket.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio
import nats
from nats.aio.client import Client

from bench.harness import Ctx, Row, percentile
from bench.procs import env
from shared.codec import decode, encode
from shared.contracts import ClusterStatus, Empty
from shared.jobs import JobCounts, JobList, JobQuery, JobRecord, JobSpec, JobState, Requirements
from shared.kv import bucket_config, ensure_bucket, read_all
from shared.provision import BUCKET_SPECS
from shared.subjects import Subjects

NAME = "history"
PREFIX = "benchhist"
TERMINAL_JOBS = 20_000
LIVE_JOBS = 200
LABEL_BYTES = 300
REPEAT = 200


async def _ask(nc: Client, subject: str, payload: bytes) -> bytes:
    reply = await nc.request(subject, payload, timeout=30)
    if reply.headers and "Nats-Service-Error-Code" in reply.headers:
        raise RuntimeError(f"{subject}: {reply.headers} {reply.data[:200]!r}")
    return reply.data


async def _fill(nc: Client, subjects: Subjects) -> None:
    history, ttl = BUCKET_SPECS["jobs"]
    kv = await ensure_bucket(
        nc.jetstream(), bucket_config(subjects.bucket("jobs"), history=history, ttl=ttl)
    )
    now = time.time() - 7200.0  # finished two hours ago: due for history when enabled
    spec = JobSpec(type="selfplay", labels={"note": "x" * LABEL_BYTES})

    async def put(i: int) -> None:
        at = now + i * 0.01
        rec = JobRecord(
            job_id=f"old-{i:06d}",
            spec=spec,
            state=JobState.COMPLETED,
            attempt=1,
            fencing=1,
            node_id=f"node-{i % 50}",
            submitted_at=at,
            updated_at=at + 1,
            started_at=at + 0.1,
            finished_at=at + 1,
        )
        await kv.put(rec.job_id, encode(rec))

    for start in range(0, TERMINAL_JOBS, 500):
        async with anyio.create_task_group() as tg:
            for i in range(start, min(TERMINAL_JOBS, start + 500)):
                tg.start_soon(put, i)


async def _timed(repeat: int, call: Callable[[], Awaitable[object]]) -> list[float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await call()
        times.append(time.perf_counter() - t0)
    return times


async def _wait_counts(nc: Client, subjects: Subjects, want: int, timeout: float) -> JobCounts:
    deadline = time.monotonic() + timeout
    while True:
        try:
            data = await _ask(nc, subjects.api("job_manager", "counts"), encode(Empty()))
            counts = decode(JobCounts, data)
            if sum(counts.states.values()) + counts.retired >= want:
                return counts
        except (TimeoutError, nats.errors.Error):
            pass  # not up yet
        if time.monotonic() > deadline:
            raise TimeoutError(f"the job manager did not count {want} jobs in {timeout}s")
        await anyio.sleep(0.2)


async def measure(ctx: Ctx) -> list[Row]:
    """Fill, start, time; then retire everything and time that."""
    url = ctx.server().url
    subjects = Subjects(PREFIX)
    nc = await nats.connect(url, connect_timeout=5)
    t0 = time.perf_counter()
    await _fill(nc, subjects)
    ctx.log(f"    {TERMINAL_JOBS:,} terminal records written in {time.perf_counter() - t0:.1f}s")
    t0 = time.perf_counter()
    jm = ctx.python(
        "job_manager",
        ["-m", "services.job_manager"],
        env("job_manager", url, PREFIX, "jm-0", history_after_s=0),
    )
    await _wait_counts(nc, subjects, TERMINAL_JOBS, 120)
    load_s = time.perf_counter() - t0
    orch = ctx.python(
        "orchestrator",
        ["-m", "services.orchestrator"],
        env("orchestrator", url, PREFIX, "orch-0", http_port=-1, jobs_view_interval=1.0),
    )
    pooled = JobSpec(type="selfplay", requirements=Requirements(capability="none", pooled=True))
    for _ in range(LIVE_JOBS):
        await _ask(nc, subjects.api("job_manager", "submit"), encode(pooled))

    list_subject = subjects.api("job_manager", "list")
    first = encode(JobQuery(limit=100))
    completed = encode(JobQuery(state=JobState.COMPLETED, limit=100))
    pending = encode(JobQuery(state=JobState.PENDING, limit=20))
    status_subject = subjects.api("orchestrator", "status")
    deadline = time.monotonic() + 60
    while True:  # the orchestrator's jobs view is fed (its counts include the bucket's)
        try:
            status = decode(ClusterStatus, await _ask(nc, status_subject, encode(Empty())))
            if status.jobs.counts.get("completed") == TERMINAL_JOBS:
                break
        except (TimeoutError, nats.errors.Error):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"orchestrator status never counted the jobs: {orch.tail()}")
        await anyio.sleep(0.5)

    async def view() -> None:
        for state in (JobState.RUNNING, JobState.DISPATCHED, JobState.PENDING):
            await _ask(nc, list_subject, encode(JobQuery(state=state, limit=20)))
        await _ask(nc, subjects.api("job_manager", "counts"), encode(Empty()))

    kv = await nc.jetstream().key_value(subjects.bucket("jobs"))
    key = "old-000000"
    t_first = await _timed(REPEAT, lambda: _ask(nc, list_subject, first))
    t_terminal = await _timed(REPEAT, lambda: _ask(nc, list_subject, completed))
    t_state = await _timed(REPEAT, lambda: _ask(nc, list_subject, pending))
    t_counts = await _timed(
        REPEAT, lambda: _ask(nc, subjects.api("job_manager", "counts"), encode(Empty()))
    )
    t_view = await _timed(REPEAT // 4, view)
    t_status = await _timed(REPEAT, lambda: _ask(nc, status_subject, encode(Empty())))
    t_get = await _timed(REPEAT, lambda: kv.get(key))

    t0 = time.perf_counter()
    cursor, pages, listed = "", 0, 0
    while True:
        page = decode(
            JobList, await _ask(nc, list_subject, encode(JobQuery(limit=10_000, cursor=cursor)))
        )
        pages, listed, cursor = pages + 1, listed + len(page.jobs), page.next_cursor
        if not cursor:
            break
    all_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    scanned = len(await read_all(kv, timeout=60))
    scan_s = time.perf_counter() - t0
    ctx.log(
        f"    listed {listed:,} jobs in {pages} pages in {all_s:.2f}s; a scan of "
        f"{scanned:,} keys took {scan_s:.2f}s"
    )

    # Retirement: restart the job manager with history on; every record is two hours old.
    jm.stop()
    t0 = time.perf_counter()
    ctx.python(
        "job_manager_history",
        ["-m", "services.job_manager"],
        env(
            "job_manager",
            url,
            PREFIX,
            "jm-1",
            history_after_s=1,
            history_interval=0.5,
            history_batch=2000,
        ),
    )
    deadline = time.monotonic() + 600
    while True:
        counts = await _wait_counts(nc, subjects, TERMINAL_JOBS, 120)
        if counts.states.get("COMPLETED", 0) == 0:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"retirement did not finish: {counts}")
        await anyio.sleep(0.5)
    retire_s = time.perf_counter() - t0
    await nc.close()

    get50 = p50(t_get)
    ctx.context(
        NAME, f"job manager start-up with {TERMINAL_JOBS:,} records (index load)", load_s, "s"
    )
    ctx.context(NAME, "list first page, any state (newest are live), p50", p50(t_first), "ms")
    ctx.context(NAME, "list, one non-terminal state, p50", p50(t_state), "ms")
    ctx.context(NAME, "counts, p50", p50(t_counts), "ms")
    ctx.context(NAME, "orchestrator jobs view (3 lists + counts), p50", p50(t_view), "ms")
    ctx.context(NAME, f"list, all {listed:,} jobs in {pages} pages", all_s, "s")
    ctx.context(NAME, "one scan of the bucket (list before pages)", scan_s, "s")
    ctx.context(NAME, f"retire {TERMINAL_JOBS:,} jobs to history (restart included)", retire_s, "s")
    return [
        Row(
            NAME,
            f"list first page of COMPLETED (100 of {TERMINAL_JOBS:,}, read by key), p50",
            p50(t_terminal),
            "ms",
            get50,
            "KV get round trip p50",
            25.0,
            False,
            notes=[f"p99 {p99(t_terminal):.1f} ms"],
        ),
        Row(
            NAME,
            "P.api.orchestrator.status, p50",
            p50(t_status),
            "ms",
            get50,
            "KV get round trip p50",
            5.0,
            False,
            notes=[f"p99 {p99(t_status):.1f} ms"],
        ),
    ]


def p50(times: list[float]) -> float:
    """The median, in milliseconds."""
    return percentile(times, 0.5) * 1e3


def p99(times: list[float]) -> float:
    """The 99th percentile, in milliseconds."""
    return percentile(times, 0.99) * 1e3


def run(ctx: Ctx) -> list[Row]:
    """Measure on a nats-server of this benchmark's own."""
    return anyio.run(measure, ctx)
