"""Jobs through the whole lifecycle with 100 hollow nodes, beside raw request/reply and JetStream.

Real processes on this benchmark's own nats-server: one job manager, one node selector
and one node agent running ``--hollow 100`` (100 simulated nodes, 2 slots each, jobs of
``duration_s`` 0). Every job goes the real way: submit (PENDING, DISPATCHED, published
into ``P_JOBS``), pulled by a hollow node, reported started (RUNNING, JOB_STARTED) and
completed (COMPLETED, JOB_COMPLETED), then acked. The bench watches JOB_STARTED and
JOB_COMPLETED with core subscriptions.

- throughput: jobs submitted with ``IN_FLIGHT`` requests outstanding; completed jobs per
  second from the first submit to the last JOB_COMPLETED; pooled (``cap.cpu``, late
  binding) and targeted (``node.<id>`` chosen by the selector) rounds;
- latency: jobs submitted open-loop at ``PACED_RATE``/s; per job, the submit request
  sent -> its JOB_STARTED arrived.

Raw limits, same run: request/reply with 32 in flight and one by one against a trivial
responder process (``python -m bench.bench_jobs URL SUBJECT READY``), and pipelined
JetStream publishing. CPU seconds of every process per job are recorded per round.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_thread
import msgspec
import nats
import psutil
from nats.aio.client import Client
from nats.aio.msg import Msg

from bench.bench_events import raw_pipelined
from bench.harness import Ctx, Proc, Row, await_json, percentile, write_json
from shared.cluster import service_env
from shared.codec import decode, encode
from shared.contracts import Event
from shared.embedded import EmbeddedServer, free_port
from shared.intake import ERROR_CODE_HEADER, ERROR_HEADER
from shared.jobs import JobSpec, NodeList, Requirements
from shared.subjects import Subjects

NAME = "jobs"
PREFIX = "benchjobs"
HOLLOW = 100
WARMUP_JOBS = 200
POOLED_JOBS = 1_500
TARGETED_JOBS = 400
IN_FLIGHT = 64
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
#: Job manager instances sharing the load (one queue group, one reaper by lease);
#: ``RINGMASTER_BENCH_JOB_MANAGERS`` sets it, so one run can compare one and two.
MANAGERS = int(os.environ.get("RINGMASTER_BENCH_JOB_MANAGERS", "1"))
GOAL_P99 = 0.1
POOLED = Requirements(capability="cpu", pooled=True)
#: A memory minimum makes the node's choice matter, so the selector is asked; a job
#: needing only a capability goes to its pool by default.
TARGETED = Requirements(capability="cpu", min_memory_mb=1)


class _Submitted(msgspec.Struct):
    """The part of the submit reply the bench reads."""

    job_id: str


@dataclass
class Watch:
    """The first JOB_STARTED (monotonic, attempt, node) and JOB_COMPLETED of each job."""

    started: dict[str, tuple[float, int, str]] = field(default_factory=dict)
    completed: dict[str, float] = field(default_factory=dict)
    changed: anyio.Event = field(default_factory=anyio.Event)

    async def on_started(self, msg: Msg) -> None:
        """Record one JOB_STARTED."""
        data = decode(Event, msg.data).data
        seen = (time.monotonic(), int(data["attempt"]), str(data["node_id"]))
        self.started.setdefault(str(data["job_id"]), seen)
        self.changed.set()

    async def on_completed(self, msg: Msg) -> None:
        """Record one JOB_COMPLETED."""
        self.completed.setdefault(str(decode(Event, msg.data).data["job_id"]), time.monotonic())
        self.changed.set()

    async def subscribe(self, nc: Client, subjects: Subjects) -> None:
        """Core subscriptions on the two events (pending limits raised for bursts)."""
        for event, cb in (("JOB_STARTED", self.on_started), ("JOB_COMPLETED", self.on_completed)):
            await nc.subscribe(
                subjects.event("job_manager", event),
                cb=cb,
                pending_msgs_limit=1_000_000,
                pending_bytes_limit=512 * 2**20,
            )
        await nc.flush()

    async def until(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        """Wait until ``done()`` holds, or fail after ``timeout`` seconds."""
        with anyio.move_on_after(timeout):
            while not done():
                self.changed = anyio.Event()
                await self.changed.wait()
        if not done():
            raise TimeoutError(f"{what}: not within {timeout:g}s")


async def submit(nc: Client, subjects: Subjects, spec: JobSpec, timeout: float = 30.0) -> str:
    """Submit ``spec``; its job_id (raises on an error reply)."""
    reply = await nc.request(subjects.api("job_manager", "submit"), encode(spec), timeout=timeout)
    headers = reply.headers or {}
    if ERROR_CODE_HEADER in headers:
        raise RuntimeError(f"submit refused: {headers[ERROR_CODE_HEADER]} {headers[ERROR_HEADER]}")
    return decode(_Submitted, reply.data).job_id


def env(service: str, url: str, prefix: str, instance: str, **extra: object) -> dict[str, str]:
    """``RINGMASTER_<SERVICE>_*`` for one bench child (warnings only in its log)."""
    base = {"nats_url": url, "prefix": prefix, "instance": instance, "log_level": "WARNING"}
    return service_env(service, {**base, **extra})


def start_agent(ctx: Ctx, url: str, prefix: str, node_id: str, **extra: object) -> Proc:
    """``python -m services.node_agent`` as node ``node_id`` (floors low: a shared disk)."""
    values = {"node_id": node_id, "min_free_disk_mb": 1, "min_memory_mb": 1, **extra}
    return ctx.python(
        f"agent-{node_id}",
        ["-m", "services.node_agent"],
        env("node_agent", url, prefix, f"agent-{node_id}", **values),
    )


def start_managers(ctx: Ctx, url: str, prefix: str, managers: int = 1) -> list[Proc]:
    """``managers`` job managers (``job_manager``, ``job_manager-1`` ...) and the selector."""
    procs = [
        ctx.python(
            "job_manager" if n == 0 else f"job_manager-{n}",
            ["-m", "services.job_manager"],
            env("job_manager", url, prefix, f"jm-{n}"),
        )
        for n in range(managers)
    ]
    procs.append(
        ctx.python(
            "node_selector",
            ["-m", "services.node_selector"],
            env("node_selector", url, prefix, "sel-0"),
        )
    )
    return procs


def manager_cpu(cpu: dict[str, float]) -> float:
    """CPU per job of every job manager instance together."""
    return sum(v for k, v in cpu.items() if k.startswith("job_manager"))


async def nodes_alive(
    nc: Client, subjects: Subjects, want: Callable[[set[str]], bool], procs: list[Proc]
) -> set[str]:
    """Poll the selector's ``nodes`` until ``want(alive node ids)``; those ids."""
    deadline = time.monotonic() + 60
    while True:
        for proc in procs:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
        try:
            reply = await nc.request(subjects.api("node_selector", "nodes"), b"{}", timeout=2)
            alive = {v.info.node_id for v in decode(NodeList, reply.data).nodes if v.alive}
            if want(alive):
                return alive
        except (TimeoutError, nats.errors.Error, msgspec.DecodeError):
            pass  # not up yet: poll again
        if time.monotonic() > deadline:
            raise TimeoutError(f"nodes not alive in time:\n{procs[-1].tail()}")
        await anyio.sleep(0.2)


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds of each named process so far."""
    out: dict[str, float] = {}
    for name, pid in pids.items():
        times = psutil.Process(pid).cpu_times()
        out[name] = times.user + times.system
    return out


def per_job_ms(before: dict[str, float], after: dict[str, float], jobs: int) -> dict[str, float]:
    """CPU milliseconds per job of each process over a round."""
    return {k: (after[k] - before[k]) * 1000 / jobs for k in before}


def cpu_text(cpu: dict[str, float]) -> str:
    """``name x.xx ms`` for each process, and the total."""
    parts = [f"{k} {v:.2f}" for k, v in cpu.items()]
    return ", ".join(parts) + f" (total {sum(cpu.values()):.2f}) ms CPU per job"


def lat_text(values: list[float]) -> str:
    """p50 / p99 / max in milliseconds."""
    p50, p99 = percentile(values, 0.5) * 1000, percentile(values, 0.99) * 1000
    return f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(values) * 1000:.1f} ms"


def spread(rnd: Round) -> str:
    """How the round's jobs spread over the nodes."""
    top, n = rnd.nodes.most_common(1)[0]
    return f"ran on {len(rnd.nodes)} nodes, {n / rnd.jobs:.0%} of them on {top}"


@dataclass
class Round:
    """One throughput round: jobs/s, CPU ms per job per process, server messages per job."""

    rate: float
    cpu: dict[str, float]
    jobs: int
    msgs: tuple[float, float]
    nodes: Counter[str]


def varz(port: int) -> tuple[int, int]:
    """The server's in_msgs and out_msgs so far (monitoring endpoint)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/varz", timeout=5) as reply:
        data = json.load(reply)
    return int(data["in_msgs"]), int(data["out_msgs"])


async def throughput(
    nc: Client, subjects: Subjects, watch: Watch, req: Requirements, n: int, probe: Probe
) -> Round:
    """Submit ``n`` jobs with ``IN_FLIGHT`` outstanding; first submit -> last COMPLETED."""
    spec = JobSpec(type="bench", args={"duration_s": 0}, requirements=req)
    ids: list[str] = []
    left = iter(range(n))
    target = len(watch.completed) + n  # every job on this server is the bench's

    async def worker() -> None:
        for _ in left:
            ids.append(await submit(nc, subjects, spec))

    before, msgs = cpu_seconds(probe.pids), await anyio.to_thread.run_sync(varz, probe.port)
    start = time.monotonic()
    async with anyio.create_task_group() as tg:
        for _ in range(IN_FLIGHT):
            tg.start_soon(worker)
    await watch.until(lambda: len(watch.completed) >= target, 120, "all jobs COMPLETED")
    end = max(watch.completed[i] for i in ids)
    cpu = per_job_ms(before, cpu_seconds(probe.pids), n)
    in_, out = await anyio.to_thread.run_sync(varz, probe.port)
    nodes = Counter(watch.started[i][2] for i in ids)
    return Round(n / (end - start), cpu, n, ((in_ - msgs[0]) / n, (out - msgs[1]) / n), nodes)


async def paced(
    nc: Client, subjects: Subjects, watch: Watch, req: Requirements, n: int, rate: float
) -> list[float]:
    """Submit ``n`` jobs open-loop at ``rate``/s; submit sent -> JOB_STARTED, each."""
    spec = JobSpec(type="bench", args={"duration_s": 0}, requirements=req)
    sent: dict[str, float] = {}
    target = len(watch.completed) + n

    async def one() -> None:
        at = time.monotonic()
        sent[await submit(nc, subjects, spec)] = at

    start = time.monotonic()
    async with anyio.create_task_group() as tg:
        for i in range(n):
            await anyio.sleep(max(0.0, start + i / rate - time.monotonic()))
            tg.start_soon(one)
    await watch.until(lambda: len(watch.completed) >= target, 120, "all jobs COMPLETED")
    return [watch.started[j][0] - at for j, at in sent.items()]


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
    responder = ctx.python("responder", ["-m", "bench.bench_jobs", url, "bench.rr", str(ready)])
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


@dataclass
class Probe:
    """What the rounds read: the processes' pids and the server's monitoring port."""

    pids: dict[str, int]
    port: int


def monitored_server(ctx: Ctx) -> tuple[EmbeddedServer, int]:
    """As ``ctx.server()``, with the monitoring port on (for message counts)."""
    port, http = free_port(), free_port()
    server = EmbeddedServer(
        port=port,
        store_dir=ctx.dir / "nats",
        server_name="bench-jobs",
        http_port=http,
        log_file=ctx.dir / "nats.log",
    )
    ctx.servers.append(server)  # stopped by ctx.close() whatever happens
    server.start()
    return server, http


@dataclass
class Results:
    """Everything the rounds measured."""

    pooled: Round
    targeted: Round
    lat_pooled: list[float]
    lat_targeted: list[float]
    light_rate: float
    lat_light: list[float]
    idle: dict[str, float]
    raw: Raw = field(init=False)


async def rounds(ctx: Ctx, nc: Client, procs: list[Proc], probe: Probe) -> Results:
    """Idle CPU, then throughput and latency rounds against the running cluster."""
    subjects = Subjects(PREFIX)
    watch = Watch()
    await watch.subscribe(nc, subjects)
    await nodes_alive(nc, subjects, lambda alive: len(alive) >= HOLLOW, procs)
    before = cpu_seconds(probe.pids)
    await anyio.sleep(IDLE_S)
    idle = per_job_ms(before, cpu_seconds(probe.pids), 1)
    idle = {k: v / IDLE_S / 10 for k, v in idle.items()}  # ms per s -> % of a core
    await throughput(nc, subjects, watch, POOLED, WARMUP_JOBS, probe)  # warm every path up
    pooled = await throughput(nc, subjects, watch, POOLED, POOLED_JOBS, probe)
    ctx.log(f"    pooled: {pooled.rate:,.0f} jobs/s; {cpu_text(pooled.cpu)}; {spread(pooled)}")
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
    return Results(pooled, targeted, lat_pooled, lat_targeted, light, lat_light, idle)


async def measure(ctx: Ctx) -> list[Row]:
    """Start the cluster, run the rounds, stop it, then measure the raw limits."""
    server, http = monitored_server(ctx)
    assert server.pid is not None
    procs = start_managers(ctx, server.url, PREFIX, MANAGERS)
    procs.append(
        start_agent(ctx, server.url, PREFIX, "hollow", hollow=HOLLOW, capabilities=["cpu"])
    )
    pids = {p.name: p.pid for p in procs} | {"nats-server": server.pid, "bench": os.getpid()}
    nc = await nats.connect(server.url, connect_timeout=5, pending_size=64 * 2**20)
    try:
        results = await rounds(ctx, nc, procs, Probe(pids, http))
        for proc in procs:
            proc.stop()
        results.raw = await raw_limits(ctx, nc, server.url)
    finally:
        await nc.close()
    return report(ctx, results)


def report(ctx: Ctx, res: Results) -> list[Row]:
    """The goal rows, their notes and the context figures."""
    raw, pooled = res.raw, res.pooled
    rr_p50, rr_p99 = percentile(raw.rr_times, 0.5), percentile(raw.rr_times, 0.99)
    jm, total = manager_cpu(pooled.cpu), sum(pooled.cpu.values())
    ctx.context(NAME, "JetStream publish pipelined (400 B)", raw.js_rate, "/s")
    ctx.context(NAME, "request/reply one by one, p50", rr_p50 * 1e6, "µs")
    ctx.context(
        NAME, "request/reply, client CPU per round trip (32 in flight)", raw.rr_cpu * 1e6, "µs"
    )
    ctx.context(NAME, "pooled: job manager CPU per job", jm, "ms")
    ctx.context(NAME, "pooled: CPU per job, all processes", total, "ms")
    ctx.context(NAME, "pooled: nats-server messages in per job", pooled.msgs[0], "msgs")
    ctx.context(NAME, "pooled: nats-server messages out per job", pooled.msgs[1], "msgs")
    light = f"submit -> JOB_STARTED pooled at {res.light_rate:g}/s"
    ctx.context(NAME, f"{light}, p50", percentile(res.lat_light, 0.5) * 1e3, "ms")
    ctx.context(NAME, f"{light}, p99", percentile(res.lat_light, 0.99) * 1e3, "ms")
    setup = (
        f"{MANAGERS} job manager{'s' if MANAGERS > 1 else ''}, 1 node selector, "
        f"1 node agent with --hollow {HOLLOW} (2 slots each, "
        "capabilities [cpu]), jobs of duration_s 0, every service on its defaults; "
        "idle CPU before the rounds (% of a core): "
        + ", ".join(f"{k} {v:.1f}" for k, v in res.idle.items())
    )
    ceiling = (
        f"ceilings implied by the CPU per job: job manager alone {1000 / jm:,.0f} jobs/s on one "
        f"core; all processes {2000 / total:,.0f} jobs/s on 2 cores; the job manager's CPU per "
        f"job is {jm / 1000 / raw.rr_cpu:.0f} raw request/reply round trips' worth of client CPU"
    )
    rows = []
    for label, rnd in (("pooled (cap.cpu)", pooled), ("targeted (selector)", res.targeted)):
        rows.append(
            Row(
                key=NAME,
                title=f"Jobs/s through the whole lifecycle, {label}, {HOLLOW} hollow nodes, "
                f"{MANAGERS} job manager{'s' if MANAGERS > 1 else ''}",
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
                title=f"Submit -> RUNNING p{q * 100:.0f} at {PACED_RATE:g} jobs/s, {label}",
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


async def _respond(url: str, subject: str, ready: Path) -> None:
    """The trivial responder: answer every request with ``{}``."""
    nc = await nats.connect(url, connect_timeout=5)

    async def answer(msg: Msg) -> None:
        await msg.respond(b"{}")

    await nc.subscribe(subject, cb=answer)
    await nc.flush()
    write_json(ready, {"ready": True})
    await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(_respond, sys.argv[1], sys.argv[2], Path(sys.argv[3]))
