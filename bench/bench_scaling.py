"""How cost grows with the cluster: 10/100/1,000 hollow nodes, 10 to 10,000 beaconing instances.

Hollow nodes: for each N, a fresh nats-server with an orchestrator, a job manager, a
node selector and one node agent running ``--hollow N`` (``bench_jobs`` does the same
at N = 100): idle CPU of every process, pooled jobs/s (``JOBS`` jobs, 64 in flight),
submit -> JOB_STARTED p50/p99 at a fixed ``PACED_RATE``/s, RSS of each process.

Beaconing instances: for each N, a fresh orchestrator and a publisher process sending
valid Beacons for N distinct instance ids at the default 1 s interval
(``bench._beacons``): the orchestrator's CPU per beacon, its share of a core and its
RSS, against the beacons it counted, with its idle CPU (no fleet) measured first and
subtracted per beacon. The raw cost of a message is the ingest benchmark's raw
subscriber CPU per message, in the context list.

``bench.scaling_report`` writes the curves to ``bench/scaling.png`` and the section's
lines; the growth (flat, linear, worse) of each cost is the log-log slope of each
step from one N to the next.
"""

from __future__ import annotations

import os
import time

import anyio
import nats
import psutil
from nats.aio.client import Client

from bench.harness import Ctx, Row, await_json, percentile
from bench.lifecycle import POOLED, Probe, Watch
from bench.procs import (
    cpu_seconds,
    metrics,
    monitored_server,
    nodes_alive,
    orchestrator_env,
    per_job_ms,
    start_agent,
    start_managers,
    submit,
    wait_metrics,
)
from bench.scaling_report import (
    BUDGET_S,
    PACED_RATE,
    PLOT,
    FleetPoint,
    NodePoint,
    plot,
    summary,
)
from shared.jobs import JobSpec
from shared.subjects import Subjects

NAME = "scaling"
NODES = (10, 100, 1000)
FLEETS = (10, 100, 1_000, 10_000)
JOBS = 600
WARMUP = 60
ROUND_S = 8.0
PACED_S = 5
IDLE_S = 3.0
BEACON_S = 12.0
#: Seconds of the beacon run measured (after registration settled).
WINDOW_S = 6.0


async def closed_loop(
    nc: Client, subjects: Subjects, watch: Watch, n: int, budget_s: float, probe: Probe
) -> tuple[float, dict[str, float], int]:
    """``n`` jobs, 64 submits in flight: completed/s, CPU ms per completed job, completed.

    Bounded by ``budget_s``: a cluster that stalls yields what it finished by then.
    """
    spec = JobSpec(type="bench", args={"duration_s": 0}, requirements=POOLED)
    base, left = len(watch.completed), iter(range(n))

    async def worker() -> None:
        for _ in left:
            await submit(nc, subjects, spec)

    before, start = cpu_seconds(probe.pids), time.monotonic()
    with anyio.move_on_after(budget_s):
        async with anyio.create_task_group() as tg:
            for _ in range(64):
                tg.start_soon(worker)
        while len(watch.completed) < base + n:
            watch.changed = anyio.Event()
            await watch.changed.wait()
    done = len(watch.completed) - base
    cpu = per_job_ms(before, cpu_seconds(probe.pids), max(done, 1))
    return done / (time.monotonic() - start), cpu, done


async def open_loop(
    nc: Client, subjects: Subjects, watch: Watch, rate: float, seconds: float, budget_s: float
) -> tuple[list[float], int]:
    """Jobs submitted at ``rate``/s for ``seconds``: submit -> STARTED latencies, jobs missing."""
    spec = JobSpec(type="bench", args={"duration_s": 0}, requirements=POOLED)
    sent: dict[str, float] = {}
    n = int(rate * seconds)

    async def one() -> None:
        at = time.monotonic()
        sent[await submit(nc, subjects, spec)] = at

    start = time.monotonic()
    with anyio.move_on_after(seconds + budget_s):
        async with anyio.create_task_group() as tg:
            for i in range(n):
                await anyio.sleep(max(0.0, start + i / rate - time.monotonic()))
                tg.start_soon(one)
        while not all(j in watch.started for j in sent):
            watch.changed = anyio.Event()
            await watch.changed.wait()
    lat = [watch.started[j][0] - at for j, at in sent.items() if j in watch.started]
    return lat, n - len(lat)


def rss_mb(pids: dict[str, int]) -> dict[str, float]:
    """Resident memory of each process, MB."""
    return {k: psutil.Process(p).memory_info().rss / 2**20 for k, p in pids.items()}


async def node_point(parent: Ctx, n: int) -> NodePoint:
    """The whole job cluster at ``n`` hollow nodes, in a context of its own."""
    with Ctx(f"{NAME}-nodes-{n}") as ctx:
        server, http = monitored_server(ctx)
        assert server.pid is not None
        prefix = f"benchsc{n}"
        procs = start_managers(ctx, server.url, prefix)
        procs.append(
            ctx.python(
                "orchestrator",
                ["-m", "services.orchestrator"],
                orchestrator_env(server.url, prefix, "orch-sc"),
            )
        )
        procs.append(start_agent(ctx, server.url, prefix, "hollow", hollow=n, capabilities=["cpu"]))
        pids = {p.name: p.pid for p in procs} | {"nats-server": server.pid}
        nc = await nats.connect(server.url, connect_timeout=5, pending_size=64 * 2**20)
        try:
            subjects = Subjects(prefix)
            watch = Watch()
            await watch.subscribe(nc, subjects)
            await nodes_alive(nc, subjects, lambda alive: len(alive) >= n, procs)
            probe = Probe(pids | {"bench": os.getpid()}, http)
            await anyio.sleep(1.0)
            before = {k: sum(psutil.Process(p).cpu_times()[:2]) for k, p in pids.items()}
            await anyio.sleep(IDLE_S)
            idle = {
                k: (sum(psutil.Process(p).cpu_times()[:2]) - before[k]) / IDLE_S * 100
                for k, p in pids.items()
            }
            warm, _, _ = await closed_loop(nc, subjects, watch, WARMUP, BUDGET_S, probe)
            # About ROUND_S seconds of jobs at the warm-up's rate, at most JOBS.
            jobs = int(min(JOBS, max(WARMUP, warm * ROUND_S)))
            rnd_rate, cpu, done = await closed_loop(nc, subjects, watch, jobs, BUDGET_S, probe)
            # A fixed rate, unless the cluster cannot take it: then half its throughput.
            rate = min(PACED_RATE, max(1.0, round(rnd_rate / 2)))
            lat, missing = await open_loop(nc, subjects, watch, rate, PACED_S, BUDGET_S)
            rss = rss_mb(pids)
        finally:
            await nc.close()
    nan = float("nan")
    p50, p99 = (percentile(lat, 0.5), percentile(lat, 0.99)) if lat else (nan, nan)
    point = NodePoint(n, rnd_rate, rate, p50, p99, idle, cpu, rss, jobs - done, missing)
    parent.log(
        f"    {n} hollow nodes: {point.rate:,.0f} jobs/s ({point.unfinished} of {jobs} not "
        f"completed in {BUDGET_S:g} s, {missing} paced jobs not started); submit -> running at "
        f"{rate:g}/s p50 {point.p50 * 1000:.0f} ms, p99 {point.p99 * 1000:.0f} ms; idle "
        + ", ".join(f"{k} {v:.0f}%" for k, v in idle.items())
        + "; RSS "
        + ", ".join(f"{k} {v:.0f} MB" for k, v in rss.items())
    )
    return point


async def fleet_point(ctx: Ctx, url: str, n: int) -> FleetPoint:
    """A fresh orchestrator watching ``n`` beaconing instances."""
    prefix, instance = f"benchfl{n}", f"orch-fl{n}"
    orch = ctx.python(
        f"orchestrator-{n}",
        ["-m", "services.orchestrator"],
        orchestrator_env(url, prefix, instance),
    )
    nc = await nats.connect(url, connect_timeout=5)
    try:
        await wait_metrics(nc, orch, prefix, instance)
        proc = psutil.Process(orch.pid)
        # Its own cost with no fleet (its beacon, loops): subtracted per beacon below.
        idle_before = sum(proc.cpu_times()[:2])
        await anyio.sleep(IDLE_S)
        idle_share = (sum(proc.cpu_times()[:2]) - idle_before) / IDLE_S
        result = ctx.path(f"fleet-{n}.json")
        pub = ctx.python(
            f"fleet-{n}",
            ["-m", "bench._beacons", url, prefix, str(n), str(BEACON_S), str(result)],
        )
        await anyio.sleep(BEACON_S - WINDOW_S - 1.0)  # registration settles first
        m0, c0, t0 = (
            await metrics(nc, prefix, instance),
            sum(proc.cpu_times()[:2]),
            time.monotonic(),
        )
        await anyio.sleep(WINDOW_S)
        m1, c1, t1 = (
            await metrics(nc, prefix, instance),
            sum(proc.cpu_times()[:2]),
            time.monotonic(),
        )
        rss = proc.memory_info().rss / 2**20
        sent = await await_json(result, 60, pub)
    finally:
        await nc.close()
        orch.stop()
    ingested = m1.custom["beacons_ingested_total"] - m0.custom["beacons_ingested_total"]
    busy = (c1 - c0) / (t1 - t0)
    point = FleetPoint(
        n,
        max(0.0, busy - idle_share) * (t1 - t0) / max(ingested, 1) * 1e6,
        busy * 100,
        rss,
        ingested / (t1 - t0),
        sent["sent"] / (sent["end"] - sent["start"]),
        idle_share * 100,
    )
    ctx.log(
        f"    {n:,} beaconing instances: orchestrator {point.per_beacon_us:.1f} µs CPU per beacon "
        f"above its idle {point.idle_share:.1f}%, "
        f"{point.core_share:.0f}% of a core, RSS {rss:.0f} MB; ingested "
        f"{point.ingested_rate:,.0f}/s, sent {point.sent_rate:,.0f}/s (late slices {sent['late']})"
    )
    return point


async def measure(ctx: Ctx) -> list[str]:
    """Every scale, the plot, the summary lines."""
    nodes = [await node_point(ctx, n) for n in NODES]
    server = ctx.server()
    fleets = [await fleet_point(ctx, server.url, n) for n in FLEETS]
    await anyio.to_thread.run_sync(plot, nodes, fleets)
    ctx.log(f"    wrote {PLOT}")
    return summary(nodes, fleets)


def run(ctx: Ctx) -> list[Row]:
    """Measure; the results go to a section of their own, not to the goals table."""
    ctx.section("Scaling", anyio.run(measure, ctx))
    return []
