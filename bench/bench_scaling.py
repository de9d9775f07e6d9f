"""How cost grows with the cluster: 10/100/1,000 hollow nodes, 10 to 10,000 beaconing instances.

Hollow nodes: for each N, a fresh nats-server with an orchestrator, a job manager, a
node selector and one node agent running ``--hollow N`` (``bench_jobs`` does the same
at N = 100): idle CPU of every process, pooled jobs/s (``JOBS`` jobs, 64 in flight),
submit -> JOB_STARTED p50/p99 at a fixed ``PACED_RATE``/s, RSS of each process.

Beaconing instances: for each N, a fresh orchestrator and a publisher process sending
valid Beacons for N distinct instance ids at the default 1 s interval
(``bench._beacons``): the orchestrator's CPU per beacon, its share of a core and its
RSS, against the beacons it counted. The raw limit for a beacon is the same publisher
and a subscriber that only counts (``bench_ingest``'s raw CPU per message).

The curves go to ``bench/scaling.png``; the growth (flat, linear, worse) of each cost
is the log-log slope of each step from one N to the next.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import anyio
import nats
import psutil
from nats.aio.client import Client

from bench.bench_ingest import metrics, orchestrator_env, wait_metrics
from bench.bench_jobs import (
    POOLED,
    Probe,
    Watch,
    cpu_seconds,
    monitored_server,
    nodes_alive,
    per_job_ms,
    start_agent,
    start_managers,
    submit,
)
from bench.harness import Ctx, Row, await_json, percentile
from shared.jobs import JobSpec
from shared.subjects import Subjects

NAME = "scaling"
NODES = (10, 100, 1000)
FLEETS = (10, 100, 1_000, 10_000)
JOBS = 600
WARMUP = 60
ROUND_S = 8.0
#: Seconds a round may take before what is not done counts as stalled.
BUDGET_S = 45.0
PACED_RATE = 50.0
PACED_S = 5
IDLE_S = 3.0
BEACON_S = 12.0
#: Seconds of the beacon run measured (after registration settled).
WINDOW_S = 6.0
PLOT = Path(__file__).resolve().parent / "scaling.png"


@dataclass
class NodePoint:
    """One hollow-node scale."""

    n: int
    rate: float
    paced_rate: float
    p50: float
    p99: float
    idle: dict[str, float]
    cpu_per_job: dict[str, float]
    rss: dict[str, float]
    #: Jobs of the throughput round not COMPLETED, and of the paced round not
    #: STARTED, within the time budget.
    unfinished: int = 0
    unstarted: int = 0


@dataclass
class FleetPoint:
    """One beaconing-instance scale."""

    n: int
    per_beacon_us: float
    core_share: float
    rss_mb: float
    ingested_rate: float
    sent_rate: float
    #: The orchestrator's CPU with no fleet, % of a core (not in per_beacon_us).
    idle_share: float


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
    ingested = m1.custom["beacons_ingested"] - m0.custom["beacons_ingested"]
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


def slope(x0: float, x1: float, y0: float, y1: float) -> float:
    """Log-log slope between two points (0 flat, 1 linear); NaN when a value is not > 0."""
    if y0 <= 0 or y1 <= 0 or not (math.isfinite(y0) and math.isfinite(y1)):
        return float("nan")
    return math.log(y1 / y0) / math.log(x1 / x0)


def word(k: float) -> str:
    """Words for a log-log slope."""
    if math.isnan(k):
        return "n/a"
    if k < -0.15:
        return "falls"
    if k < 0.15:
        return "flat"
    if k < 0.8:
        return "sublinear"
    if k <= 1.2:
        return "linear"
    return "worse than linear"


def trend(xs: list[float], ys: list[float]) -> str:
    """How ``ys`` grows with ``xs``, step by step: "flat, then falls (slopes 0.02, -0.66)"."""
    ks = [slope(xs[i], xs[i + 1], ys[i], ys[i + 1]) for i in range(len(xs) - 1)]
    words: list[str] = []
    for k in ks:
        if not words or words[-1] != word(k):
            words.append(word(k))
    return f"{', then '.join(words)} (slopes {', '.join(f'{k:.2f}' for k in ks)})"


def plot(nodes: list[NodePoint], fleets: list[FleetPoint]) -> None:
    """The four panels of ``bench/scaling.png`` (Agg: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    xs = [p.n for p in nodes]
    ax = axes[0][0]
    ax.plot(xs, [p.rate for p in nodes], "o-", label="jobs/s (pooled, 64 in flight)")
    ax.set(xscale="log", xlabel="hollow nodes", ylabel="jobs/s", title="Job throughput")
    ax.legend()
    ax = axes[0][1]
    ax.plot(xs, [p.p50 * 1000 for p in nodes], "o-", label="p50")
    ax.plot(xs, [p.p99 * 1000 for p in nodes], "s-", label="p99")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="hollow nodes",
        ylabel="ms",
        title=f"Submit -> RUNNING at {PACED_RATE:g} jobs/s (or half the throughput)",
    )
    ax.legend()
    ax = axes[1][0]
    for name in ("job_manager", "node_selector", "orchestrator", "agent-hollow", "nats-server"):
        ax.plot(xs, [p.idle[name] for p in nodes], "o-", label=f"{name} idle CPU %")
    ax.plot(xs, [p.rss["job_manager"] for p in nodes], "k--", label="job_manager RSS MB")
    ax.plot(xs, [p.rss["orchestrator"] for p in nodes], "k:", label="orchestrator RSS MB")
    ax.set(xscale="log", yscale="log", xlabel="hollow nodes", title="Idle CPU (% of a core), RSS")
    ax.legend(fontsize=7)
    ax = axes[1][1]
    fx = [p.n for p in fleets]
    ax.plot(fx, [p.core_share for p in fleets], "o-", label="orchestrator CPU, % of a core")
    ax.plot(fx, [p.per_beacon_us for p in fleets], "s-", label="µs CPU per beacon (above idle)")
    ax.plot(fx, [p.rss_mb for p in fleets], "k--", label="orchestrator RSS MB")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="beaconing instances (1 s interval)",
        title="Orchestrator cost per instance count",
    )
    ax.legend(fontsize=7)
    fig.suptitle("Ringmaster scaling on this machine (see RESULTS.md for the load)")
    fig.tight_layout()
    fig.savefig(PLOT, dpi=90)
    plt.close(fig)


def summary(nodes: list[NodePoint], fleets: list[FleetPoint]) -> list[str]:
    """The lines of RESULTS.md's scaling section: the numbers and how each cost grows."""
    xs = [float(p.n) for p in nodes]
    lines = [
        "![scaling](scaling.png)",
        "",
        "| hollow nodes | jobs/s | submit -> RUNNING at | p50 | p99 | idle CPU % (job_manager, "
        "selector, orchestrator, agent, nats-server) | job_manager CPU ms/job | RSS MB "
        "(job_manager, orchestrator, agent) | jobs not done in the time budget |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in nodes:
        idle = ", ".join(
            f"{p.idle[k]:.0f}"
            for k in ("job_manager", "node_selector", "orchestrator", "agent-hollow", "nats-server")
        )
        rss = ", ".join(f"{p.rss[k]:.0f}" for k in ("job_manager", "orchestrator", "agent-hollow"))
        lines.append(
            f"| {p.n:,} | {p.rate:,.0f} | {p.paced_rate:g}/s | {p.p50 * 1000:.0f} ms | "
            f"{p.p99 * 1000:.0f} ms | {idle} | "
            f"{p.cpu_per_job['job_manager']:.2f} | {rss} | {p.unfinished} of the throughput "
            f"round, {p.unstarted} of the paced round |"
        )
    lines += [
        "",
        "| beaconing instances | orchestrator µs CPU per beacon (above idle) | % of a core "
        "(idle without the fleet) | RSS MB | "
        "ingested/s | sent/s |",
        "|---|---|---|---|---|---|",
    ]
    for f in fleets:
        lines.append(
            f"| {f.n:,} | {f.per_beacon_us:.1f} | {f.core_share:.1f} ({f.idle_share:.1f}) | "
            f"{f.rss_mb:.0f} | "
            f"{f.ingested_rate:,.0f} | {f.sent_rate:,.0f} |"
        )
    fx = [float(f.n) for f in fleets]
    idle_total = [sum(p.idle.values()) for p in nodes]
    lines += [
        "",
        "How each cost grows from one scale to the next (log-log slope of each step: 0 is "
        "flat, 1 linear):",
        "",
        f"- hollow nodes: jobs/s {trend(xs, [p.rate for p in nodes])}; p99 "
        f"{trend(xs, [p.p99 for p in nodes])}; idle CPU of all processes "
        f"{trend(xs, idle_total)}; agent idle CPU "
        f"{trend(xs, [p.idle['agent-hollow'] for p in nodes])}; job manager idle CPU "
        f"{trend(xs, [p.idle['job_manager'] for p in nodes])}; job manager RSS "
        f"{trend(xs, [p.rss['job_manager'] for p in nodes])}; agent RSS "
        f"{trend(xs, [p.rss['agent-hollow'] for p in nodes])}",
        "- beaconing instances: orchestrator CPU "
        + trend(fx, [f.core_share for f in fleets])
        + "; CPU per beacon "
        + trend(fx, [f.per_beacon_us for f in fleets])
        + "; RSS "
        + trend(fx, [f.rss_mb for f in fleets]),
    ]
    best = min(f.per_beacon_us for f in fleets)
    short = [f.n for f in fleets if f.ingested_rate < 0.95 * f.sent_rate]
    lines.append(
        f"- one orchestrator core at the best CPU per beacon measured ({best:.1f} µs) takes "
        f"{1e6 / best:,.0f} beacons/s, that is {1e6 / best:,.0f} instances at a 1 s interval; "
        + (
            f"in this run it fell behind its publisher (ingested < 95 % of sent) at "
            f"{short[0]:,} instances"
            if short
            else "in this run it kept up with its publisher at every scale"
        )
    )
    idle_core = [p.n for p in nodes if sum(p.idle.values()) > 100]
    stalled = [p.n for p in nodes if p.unfinished or p.unstarted]
    agent_busy = [p.n for p in nodes if p.idle["agent-hollow"] > 50]
    parts = []
    first = nodes[0]
    for k, p in enumerate(nodes[1:], 1):
        peak = max(nodes[:k], key=lambda q: q.rate)
        why = []
        if p.rate < peak.rate / 2:
            why.append(f"throughput fell to {p.rate:,.0f}/s from {peak.rate:,.0f}/s at {peak.n:,}")
        if p.p50 > 5 * first.p50:
            why.append(
                f"the paced p50 rose to {p.p50 * 1000:,.0f} ms from {first.p50 * 1000:,.0f} ms "
                f"at {first.n:,}"
            )
        if why:
            parts.append(f"at {p.n:,} nodes " + " and ".join(why))
            break
    if stalled:
        parts.append(
            f"at {stalled[0]:,} nodes jobs did not finish within the {BUDGET_S:g} s budget of "
            "a round: this is where the job path stops scaling on this machine"
        )
    if agent_busy:
        parts.append(
            f"at {agent_busy[0]:,} nodes the one agent process simulating them needs more "
            "than half a core while idle (a NodeInfo per node per second and a pull kept "
            "waiting per pool), so part of the slowdown is the simulation's own process"
        )
    if idle_core:
        parts.append(f"at {idle_core[0]:,} nodes the idle cluster takes more than one core")
    lines.append(
        "- hollow nodes: "
        + ("; ".join(parts) if parts else "no stall and the idle cluster stays below one core")
    )
    return lines


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
