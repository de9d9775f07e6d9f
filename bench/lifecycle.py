"""Jobs driven through their whole lifecycle, as the job benchmarks measure them.

A :class:`Watch` follows JOB_STARTED and JOB_COMPLETED with core subscriptions;
:func:`throughput` submits with a fixed number of requests in flight and times the
first submit to the last JOB_COMPLETED, with the CPU of every process and the
server's messages per job; :func:`paced` submits open-loop at a rate and returns,
per job, submit sent -> its JOB_STARTED.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
import anyio.to_thread
from nats.aio.client import Client
from nats.aio.msg import Msg

from bench.harness import percentile
from bench.procs import cpu_seconds, per_job_ms, submit, varz
from shared.codec import decode
from shared.contracts import Event
from shared.jobs import JobSpec, Requirements
from shared.subjects import Subjects

#: Submits outstanding in a throughput round.
IN_FLIGHT = 64
POOLED = Requirements(capability="cpu", pooled=True)
#: A memory minimum makes the node's choice matter, so the selector is asked; a job
#: needing only a capability goes to its pool by default.
TARGETED = Requirements(capability="cpu", min_memory_mb=1)


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


@dataclass
class Probe:
    """What the rounds read: the processes' pids and the server's monitoring port."""

    pids: dict[str, int]
    port: int


@dataclass
class Round:
    """One throughput round: jobs/s, CPU ms per job per process, server messages per job."""

    rate: float
    cpu: dict[str, float]
    jobs: int
    msgs: tuple[float, float]
    nodes: Counter[str]


async def throughput(
    nc: Client,
    subjects: Subjects,
    watch: Watch,
    req: Requirements,
    n: int,
    probe: Probe,
    in_flight: int = IN_FLIGHT,
) -> Round:
    """Submit ``n`` jobs with ``in_flight`` outstanding; first submit -> last COMPLETED."""
    spec = JobSpec(type="bench", args={"duration_s": 0}, requirements=req)
    ids: list[str] = []
    left = iter(range(n))
    target = len(watch.completed) + n  # every job under this prefix is the bench's

    async def worker() -> None:
        for _ in left:
            ids.append(await submit(nc, subjects, spec))

    before, msgs = cpu_seconds(probe.pids), await anyio.to_thread.run_sync(varz, probe.port)
    start = time.monotonic()
    async with anyio.create_task_group() as tg:
        for _ in range(in_flight):
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


def manager_cpu(cpu: dict[str, float]) -> float:
    """CPU per job of every job manager instance together."""
    return sum(v for k, v in cpu.items() if k.startswith("job_manager"))


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
