"""A node killed -> every one of its jobs RUNNING on another node, beside the detection bound.

Real processes on this benchmark's own nats-server: one job manager and one node
selector (defaults: ``node_lost_after_s`` 5, ``reaper_interval`` 0.5, ``retry_base_s`` 1,
``lease_s`` 30) and real node agents (default 1 s NodeInfo interval) running shell jobs
(``sleep``). Each round: a victim agent serving capability ``fo<r>`` starts and takes
``JOBS`` jobs (submitted the default way: the selector picks the node); once all of
them run, a second agent serving ``fo<r>`` starts; then the victim is killed with
SIGKILL (its job processes die with it: parent-death signal). Per job, the bench times
kill -> JOB_FAILED ("node lost"), the JOB_RETRIED delay, and kill -> JOB_STARTED of
attempt 2 on the other node. The figure is the worst job of the worst round.

Raw limit: the configured detection bound, ``node_lost_after_s + reaper_interval``;
the retry backoff and the next reaper tick come on top of it by design.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sized
from dataclasses import dataclass, field

import anyio
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from bench.harness import Ctx, Proc, Row
from bench.procs import nodes_alive, start_agent, start_managers, submit
from services.job_manager.config import JobManagerConfig
from shared.codec import decode, encode
from shared.contracts import Event
from shared.jobs import JobRef, JobSpec, Requirements
from shared.subjects import Subjects

NAME = "failover"
PREFIX = "benchfo"
ROUNDS = 3
JOBS = 20
GOAL = 15.0


@dataclass
class Timeline:
    """What one round saw, in monotonic seconds."""

    victim: str
    killed_at: float = 0.0
    last_info: float = 0.0
    failed: dict[str, float] = field(default_factory=dict)
    delays: dict[str, float] = field(default_factory=dict)
    #: job_id -> (monotonic, attempt, node_id) of its first JOB_STARTED after the kill.
    moved: dict[str, tuple[float, int, str]] = field(default_factory=dict)
    first: dict[str, str] = field(default_factory=dict)
    changed: anyio.Event = field(default_factory=anyio.Event)

    async def on_event(self, msg: Msg) -> None:
        """JOB_STARTED, JOB_FAILED and JOB_RETRIED of this round's jobs."""
        now = time.monotonic()
        event = decode(Event, msg.data)
        job_id = str(event.data.get("job_id", ""))
        if event.type == "JOB_STARTED":
            node = str(event.data["node_id"])
            if not self.killed_at:
                self.first[job_id] = node
            elif node != self.victim:
                self.moved.setdefault(job_id, (now, int(event.data["attempt"]), node))
        elif event.type == "JOB_FAILED" and self.killed_at:
            self.failed.setdefault(job_id, now)
        elif event.type == "JOB_RETRIED" and self.killed_at:
            self.delays.setdefault(job_id, float(event.data["delay_s"]))
        self.changed.set()

    async def on_info(self, _msg: Msg) -> None:
        """A NodeInfo of the victim."""
        self.last_info = time.monotonic()

    async def until(self, done: int, got: Sized, timeout: float, what: str) -> None:
        """Wait until ``got`` holds ``done`` entries."""
        with anyio.move_on_after(timeout):
            while len(got) < done:
                self.changed = anyio.Event()
                await self.changed.wait()
        if len(got) < done:
            raise TimeoutError(f"{what}: {len(got)}/{done} within {timeout:g}s")


def agent(ctx: Ctx, url: str, node_id: str, capability: str) -> Proc:
    """A real node agent serving ``capability`` with ``JOBS`` slots, work dir in scratch."""
    return start_agent(
        ctx,
        url,
        PREFIX,
        node_id,
        capabilities=["shell", capability],
        slots=JOBS,
        work_dir=str(ctx.path(f"work-{node_id}")),
    )


async def one_round(ctx: Ctx, url: str, nc: Client, managers: list[Proc], r: int) -> Timeline:
    """Jobs on a victim node, a second node up, kill -9 the victim, time the move."""
    subjects = Subjects(PREFIX)
    capability, victim_id, other_id = f"fo{r}", f"fo{r}-victim", f"fo{r}-other"
    line = Timeline(victim_id)
    subs = [
        await nc.subscribe(subjects.event("job_manager", t), cb=line.on_event)
        for t in ("JOB_STARTED", "JOB_FAILED", "JOB_RETRIED")
    ]
    subs.append(await nc.subscribe(subjects.node(victim_id), cb=line.on_info))
    victim = agent(ctx, url, victim_id, capability)
    other: Proc | None = None
    ids: list[str] = []
    try:
        await nodes_alive(nc, subjects, lambda alive: victim_id in alive, [*managers, victim])
        spec = JobSpec(
            type="shell",
            args={"argv": ["sleep", "600"]},
            requirements=Requirements(capability=capability),
            max_attempts=3,
        )
        ids = [await submit(nc, subjects, spec) for _ in range(JOBS)]
        await line.until(JOBS, line.first, 30, "jobs RUNNING on the victim")
        if set(line.first.values()) != {victim_id}:
            raise RuntimeError(f"jobs ran on {set(line.first.values())}, not only {victim_id}")
        other = agent(ctx, url, other_id, capability)
        await nodes_alive(nc, subjects, lambda alive: other_id in alive, [*managers, other])
        line.killed_at = time.monotonic()
        victim.kill()
        await line.until(JOBS, line.moved, 60, "jobs RUNNING elsewhere")
    finally:
        for job_id in ids:  # the survivor kills their processes at once
            await nc.request(
                subjects.api("job_manager", "cancel"), encode(JobRef(job_id=job_id)), timeout=5
            )
        for sub in subs:
            await sub.unsubscribe()
        if other is not None:
            other.stop(timeout=15)
        victim.stop()
    return line


async def measure(ctx: Ctx, url: str) -> Row:
    """``ROUNDS`` rounds on one job manager and selector."""
    managers = start_managers(ctx, url, PREFIX)
    nc = await nats.connect(url, connect_timeout=5)
    try:
        lines = [await one_round(ctx, url, nc, managers, r) for r in range(ROUNDS)]
    finally:
        await nc.close()
    return row(ctx, lines)


def row(ctx: Ctx, lines: list[Timeline]) -> Row:
    """The goal row, its notes and the context figures."""
    cfg = JobManagerConfig()
    bound = cfg.node_lost_after_s + cfg.reaper_interval
    worst = [max(t for t, _, _ in line.moved.values()) - line.killed_at for line in lines]
    silent = [line.killed_at - line.last_info for line in lines]
    detect = [max(line.failed.values()) - line.killed_at for line in lines]
    delays = [d for line in lines for d in line.delays.values()]
    after = [
        line.moved[j][0] - line.failed[j] - line.delays[j]
        for line in lines
        for j in line.moved
        if j in line.failed and j in line.delays
    ]
    attempts = {a for line in lines for _, a, _ in line.moved.values()}
    ctx.context(NAME, "kill -9 -> last job JOB_FAILED (node lost), worst round", max(detect), "s")
    ctx.context(
        NAME, "retry backoff chosen (JOB_RETRIED delay_s), median", statistics.median(delays), "s"
    )
    ctx.context(
        NAME, "after the backoff -> JOB_STARTED elsewhere, median", statistics.median(after), "s"
    )
    return Row(
        key=NAME,
        title=f"Node killed -> all its {JOBS} jobs RUNNING elsewhere, worst of {ROUNDS} rounds",
        figure=max(worst),
        unit="s",
        raw=bound,
        raw_label="configured detection bound: node_lost_after_s + reaper_interval",
        goal=GOAL,
        higher_is_better=False,
        notes=[
            f"{ROUNDS} rounds; each: {JOBS} `sleep 600` shell jobs on a real node agent, a second "
            "agent up, kill -9 of the first; job manager and selector defaults "
            f"(node_lost_after_s {cfg.node_lost_after_s:g}, reaper_interval "
            f"{cfg.reaper_interval:g}, retry_base_s {cfg.retry_base_s:g}, lease_s {cfg.lease_s:g})",
            "kill -> every job RUNNING elsewhere per round: "
            + ", ".join(f"{w:.2f}" for w in worst)
            + f" s; attempts seen after the kill: {sorted(attempts)}",
            "kill -> last JOB_FAILED (node lost) per round: "
            + ", ".join(f"{d:.2f}" for d in detect)
            + " s; the victim's last NodeInfo came "
            + ", ".join(f"{s:.2f}" for s in silent)
            + " s before the kill",
            f"retry backoff (attempt 1, jittered into [{cfg.retry_base_s / 2:g}, "
            f"{cfg.retry_base_s:g}] s): median {statistics.median(delays):.2f} s, max "
            f"{max(delays):.2f} s; then the next reaper tick dispatches (selector, the other "
            f"node's pull, its started report): median {statistics.median(after):.2f} s, max "
            f"{max(after):.2f} s",
        ],
    )


def run(ctx: Ctx) -> list[Row]:
    """Measure on a nats-server of this benchmark's own."""
    server = ctx.server()
    return [anyio.run(measure, ctx, server.url)]
