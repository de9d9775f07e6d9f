"""Jobs through the whole lifecycle with 100 hollow nodes, beside raw request/reply and JetStream.

Real processes on this benchmark's own nats-server: job managers, one node selector
and one node agent running ``--hollow 100`` (100 simulated nodes, 2 slots each, jobs
of ``duration_s`` 0). Every job goes the real way: submit (PENDING, DISPATCHED,
published into ``P_JOBS``), pulled by a hollow node, reported started (RUNNING,
JOB_STARTED) and completed (COMPLETED, JOB_COMPLETED), then acked. The bench watches
JOB_STARTED and JOB_COMPLETED with core subscriptions (``bench.lifecycle``).

The whole set of rounds runs once per count of job managers in ``MANAGERS`` (one,
then two: one queue group, one reaper by lease), each cluster under its own prefix
and stopped before the next starts, so the rows compare them within one run:

- throughput: jobs submitted with 64 requests outstanding; completed jobs per second
  from the first submit to the last JOB_COMPLETED; pooled (``cap.cpu``, late binding)
  and targeted (``node.<id>`` chosen by the selector) rounds;
- latency: jobs submitted open-loop at ``PACED_RATE``/s; per job, the submit request
  sent -> its JOB_STARTED arrived.

Raw limits, same run: request/reply with 32 in flight and one by one against a trivial
responder process (``bench._respond``), and pipelined JetStream publishing. CPU
seconds of every process per job are recorded per round.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import anyio
import nats
from nats.aio.client import Client

from bench.harness import Ctx, Proc, Row, await_json, percentile
from bench.lifecycle import (
    IN_FLIGHT,
    POOLED,
    TARGETED,
    Probe,
    Round,
    Watch,
    cpu_text,
    lat_text,
    manager_cpu,
    paced,
    spread,
    throughput,
)
from bench.procs import (
    cpu_seconds,
    health_details,
    manager_instance,
    monitored_server,
    nodes_alive,
    per_job_ms,
    start_agent,
    start_managers,
)
from bench.raw import raw_pipelined
from shared.embedded import EmbeddedServer
from shared.subjects import Subjects

NAME = "jobs"
PREFIX = "benchjobs"
HOLLOW = 100
WARMUP_JOBS = 200
POOLED_JOBS = 1_500
TARGETED_JOBS = 400
PACED_RATE = 200.0
PACED_POOLED = 800
PACED_TARGETED = 300
#: Seconds of the paced round at half the pooled throughput.
LIGHT_S = 5
#: Seconds of idle CPU measured before the rounds.
IDLE_S = 3.0
RR_IN_FLIGHT = 32
RR_REQUESTS = 20_000
RR_SERIAL = 2_000
JS_MESSAGES = 20_000
GOAL_RATE = 1_000.0
GOAL_P99 = 0.1
#: Job manager instances of each cluster the rounds run against (one queue group, one
#: reaper by lease); ``RINGMASTER_BENCH_JOB_MANAGERS`` ("1,2" by default) sets them.
MANAGERS = tuple(
    int(n) for n in os.environ.get("RINGMASTER_BENCH_JOB_MANAGERS", "1,2").split(",") if n
)


@dataclass
class Results:
    """Everything the rounds against one cluster measured."""

    managers: int
    pooled: Round
    targeted: Round
    lat_pooled: list[float]
    lat_targeted: list[float]
    light_rate: float
    lat_light: list[float]
    idle: dict[str, float]
    #: Reports of the pooled round decided on a fresh read of the record.
    reread: int


@dataclass
class Raw:
    """The raw limits measured in this run."""

    rr_rate: float
    rr_cpu: float
    rr_times: list[float]
    js_rate: float


async def raw_limits(ctx: Ctx, nc: Client, url: str) -> Raw:
    """A trivial responder process: request/reply rate, CPU, times; JetStream pipelined."""
    ready = ctx.path("responder.json")
    responder = ctx.python("responder", ["-m", "bench._respond", url, "bench.rr", str(ready)])
    try:
        await await_json(ready, 20, responder)
        left = iter(range(RR_REQUESTS))

        async def worker() -> None:
            for _ in left:
                await nc.request("bench.rr", b"{}", timeout=10)

        cpu, start = time.process_time(), time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(RR_IN_FLIGHT):
                tg.start_soon(worker)
        rate = RR_REQUESTS / (time.perf_counter() - start)
        rr_cpu = (time.process_time() - cpu) / RR_REQUESTS
        times: list[float] = []
        for _ in range(RR_SERIAL):
            at = time.perf_counter()
            await nc.request("bench.rr", b"{}", timeout=10)
            times.append(time.perf_counter() - at)
    finally:
        responder.stop()
    js = nc.jetstream()
    await js.add_stream(name="BENCH_JOBS_RAW", subjects=["bench.js.>"])
    js_rate, _ = await raw_pipelined(js, "bench.js.raw", b"x" * 400, JS_MESSAGES)
    return Raw(rate, rr_cpu, times, js_rate)


async def rounds(
    ctx: Ctx, nc: Client, procs: list[Proc], probe: Probe, prefix: str, managers: int
) -> Results:
    """Idle CPU, then throughput and latency rounds against the running cluster."""
    subjects = Subjects(prefix)
    watch = Watch()
    await watch.subscribe(nc, subjects)
    await nodes_alive(nc, subjects, lambda alive: len(alive) >= HOLLOW, procs)
    before = cpu_seconds(probe.pids)
    await anyio.sleep(IDLE_S)
    idle = per_job_ms(before, cpu_seconds(probe.pids), 1)
    idle = {k: v / IDLE_S / 10 for k, v in idle.items()}  # ms per s -> % of a core
    await throughput(nc, subjects, watch, POOLED, WARMUP_JOBS, probe)  # warm every path up
    rereads_before = await rereads(nc, subjects, managers)
    pooled = await throughput(nc, subjects, watch, POOLED, POOLED_JOBS, probe)
    reread = sum(await rereads(nc, subjects, managers)) - sum(rereads_before)
    ctx.log(f"    pooled: {pooled.rate:,.0f} jobs/s; {cpu_text(pooled.cpu)}; {spread(pooled)}")
    ctx.log(f"    pooled: reports decided on a fresh read: {reread} of {2 * POOLED_JOBS}")
    targeted = await throughput(nc, subjects, watch, TARGETED, TARGETED_JOBS, probe)
    ctx.log(
        f"    targeted: {targeted.rate:,.0f} jobs/s; {cpu_text(targeted.cpu)}; {spread(targeted)}"
    )
    lat_pooled = await paced(nc, subjects, watch, POOLED, PACED_POOLED, PACED_RATE)
    ctx.log(f"    submit -> running, pooled at {PACED_RATE:g}/s: {lat_text(lat_pooled)}")
    lat_targeted = await paced(nc, subjects, watch, TARGETED, PACED_TARGETED, PACED_RATE)
    ctx.log(f"    submit -> running, targeted at {PACED_RATE:g}/s: {lat_text(lat_targeted)}")
    light = round(min(PACED_RATE, pooled.rate / 2))
    lat_light = await paced(nc, subjects, watch, POOLED, int(light * LIGHT_S), light)
    ctx.log(f"    submit -> running, pooled at {light:g}/s: {lat_text(lat_light)}")
    return Results(
        managers, pooled, targeted, lat_pooled, lat_targeted, light, lat_light, idle, reread
    )


async def rereads(nc: Client, subjects: Subjects, managers: int) -> list[int]:
    """Each job manager's count of reports decided on a fresh read (its copy stale)."""
    found = []
    for n in range(managers):
        details = await health_details(nc, subjects, "job_manager", manager_instance(n))
        found.append(int(details["counts"].get("report_reread", 0)))
    return found


async def cluster(
    ctx: Ctx, nc: Client, server: EmbeddedServer, http: int, managers: int
) -> Results:
    """Start ``managers`` job managers, a selector and the hollow agent; run; stop them."""
    assert server.pid is not None
    prefix = f"{PREFIX}{managers}"
    ctx.log(f"  {_managers(managers)}:")
    procs = start_managers(ctx, server.url, prefix, managers)
    procs.append(
        start_agent(ctx, server.url, prefix, "hollow", hollow=HOLLOW, capabilities=["cpu"])
    )
    pids = {p.name: p.pid for p in procs} | {"nats-server": server.pid, "bench": os.getpid()}
    try:
        return await rounds(ctx, nc, procs, Probe(pids, http), prefix, managers)
    finally:
        for proc in procs:
            proc.stop()


async def measure(ctx: Ctx) -> list[Row]:
    """Run the rounds against each cluster in turn, then measure the raw limits."""
    server, http = monitored_server(ctx)
    nc = await nats.connect(server.url, connect_timeout=5, pending_size=64 * 2**20)
    try:
        results = [await cluster(ctx, nc, server, http, n) for n in MANAGERS]
        raw = await raw_limits(ctx, nc, server.url)
    finally:
        await nc.close()
    return [row for res in results for row in report(ctx, res, raw)]


def _managers(n: int) -> str:
    return f"{n} job manager{'s' if n > 1 else ''}"


def report(ctx: Ctx, res: Results, raw: Raw) -> list[Row]:
    """The goal rows of one cluster, their notes and its context figures."""
    pooled, who = res.pooled, _managers(res.managers)
    rr_p50, rr_p99 = percentile(raw.rr_times, 0.5), percentile(raw.rr_times, 0.99)
    jm, total = manager_cpu(pooled.cpu), sum(pooled.cpu.values())
    if res.managers == MANAGERS[0]:
        ctx.context(NAME, "JetStream publish pipelined (400 B)", raw.js_rate, "/s")
        ctx.context(NAME, "request/reply one by one, p50", rr_p50 * 1e6, "µs")
        ctx.context(
            NAME, "request/reply, client CPU per round trip (32 in flight)", raw.rr_cpu * 1e6, "µs"
        )
    ctx.context(NAME, f"{who}, pooled: job manager CPU per job (all instances)", jm, "ms")
    ctx.context(NAME, f"{who}, pooled: CPU per job, all processes", total, "ms")
    ctx.context(NAME, f"{who}, pooled: nats-server messages in per job", pooled.msgs[0], "msgs")
    ctx.context(NAME, f"{who}, pooled: nats-server messages out per job", pooled.msgs[1], "msgs")
    light = f"{who}, submit -> JOB_STARTED pooled at {res.light_rate:g}/s"
    ctx.context(NAME, f"{light}, p50", percentile(res.lat_light, 0.5) * 1e3, "ms")
    ctx.context(NAME, f"{light}, p99", percentile(res.lat_light, 0.99) * 1e3, "ms")
    setup = (
        f"{who}, 1 node selector, 1 node agent with --hollow {HOLLOW} (2 slots each, "
        "capabilities [cpu]), jobs of duration_s 0, every service on its defaults; "
        "idle CPU before the rounds (% of a core): "
        + ", ".join(f"{k} {v:.1f}" for k, v in res.idle.items())
    )
    ceiling = (
        f"ceilings implied by the CPU per job: job managers alone {1000 / jm:,.0f} jobs/s on "
        f"one core; all processes {2000 / total:,.0f} jobs/s on 2 cores; the job managers' CPU "
        f"per job is {jm / 1000 / raw.rr_cpu:.0f} raw request/reply round trips' worth of client "
        "CPU"
    )
    rows = []
    for label, rnd in (("pooled (cap.cpu)", pooled), ("targeted (selector)", res.targeted)):
        rows.append(
            Row(
                key=NAME,
                title=f"Jobs/s through the whole lifecycle, {label}, {HOLLOW} hollow nodes, {who}",
                figure=rnd.rate,
                unit="/s",
                raw=raw.rr_rate,
                raw_label=f"request/reply, {RR_IN_FLIGHT} in flight, trivial responder process",
                goal=GOAL_RATE,
                higher_is_better=True,
                notes=[
                    setup,
                    f"{rnd.jobs:,} jobs, {IN_FLIGHT} submits in flight; first submit -> last "
                    f"JOB_COMPLETED; {spread(rnd)}",
                    f"CPU per job: {cpu_text(rnd.cpu)}; nats-server messages per job: "
                    f"{rnd.msgs[0]:.1f} in, {rnd.msgs[1]:.1f} out",
                    ceiling,
                    *(
                        [
                            f"reports decided on a fresh read of the record (the instance's "
                            f"copy stale or missing): {res.reread:,} of {2 * rnd.jobs:,}"
                        ]
                        if rnd is pooled
                        else []
                    ),
                ],
            )
        )
    for label, lat, rnd, q, rr in (
        ("pooled", res.lat_pooled, pooled, 0.5, rr_p50),
        ("pooled", res.lat_pooled, pooled, 0.99, rr_p99),
        ("targeted", res.lat_targeted, res.targeted, 0.99, rr_p99),
    ):
        rows.append(
            Row(
                key=NAME,
                title=f"Submit -> RUNNING p{q * 100:.0f} at {PACED_RATE:g} jobs/s, {label}, {who}",
                figure=percentile(lat, q),
                unit="s",
                raw=rr,
                raw_label=f"request/reply round trip one by one, p{q * 100:.0f}",
                goal=GOAL_P99,
                higher_is_better=False,
                notes=[
                    f"{len(lat):,} jobs submitted open-loop at {PACED_RATE:g}/s; per job: submit "
                    f"request sent -> its JOB_STARTED arrived: {lat_text(lat)}; the {label} "
                    f"throughput measured above is {rnd.rate:,.0f}/s, so "
                    + (
                        "200/s is beyond it: the figure is queueing and grows with the run"
                        if rnd.rate < PACED_RATE
                        else "200/s is within it"
                    ),
                    f"at {res.light_rate:g}/s pooled (half the pooled throughput, at most "
                    f"{PACED_RATE:g}/s): {lat_text(res.lat_light)}",
                    f"bare round trip one by one: p50 {rr_p50 * 1000:.2f} ms, p99 "
                    f"{rr_p99 * 1000:.2f} ms",
                ],
            )
        )
    return rows


def run(ctx: Ctx) -> list[Row]:
    """Measure on a nats-server of this benchmark's own."""
    return anyio.run(measure, ctx)
