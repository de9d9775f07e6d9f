"""Supervised kill -9 -> RUNNING again, over 50 kills, beside a bare process start.

A real orchestrator supervises one loop_manager from a cluster file (beacons every
0.25 s). Each round kills the child with SIGKILL and times, from the kill, the
first beacon of the new process and its first RUNNING beacon. A shorter series at
the default 1 s interval follows, for context. Raw limits, measured in the same
run: ``python -c pass`` and a bare ``python -m services.loop_manager`` (0.25 s
beacons) from spawn to its first RUNNING beacon.

The cluster file sets ``restart_intensity = 1000`` (the default 5 in 60 s would give
up after the fifth kill) and ``restart_period_s = 0.5``, and each kill waits until the
child has run longer than that period: a child that stayed up longer than the period
starts its restart history afresh, so every kill gets the policy's first, immediate
restart. With the default 60 s period the kills would measure the exponential
backoff (0.5 s, 1 s, 2 s ... capped at 30 s) instead of the restart path.
"""

from __future__ import annotations

import os
import signal
import statistics
import sys
import time
from dataclasses import dataclass, field

import anyio
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from bench.beacon_watch import Beacons
from bench.harness import Ctx, Row, percentile
from bench.procs import orchestrator_env, wait_metrics
from shared.cluster import service_env
from shared.codec import decode
from shared.contracts import ChildView, ClusterStatus, Event
from shared.subjects import Subjects

NAME = "restart"
PREFIX = "benchrs"
ORCH = "orch-restart"
SERVICE = "loop_manager"
INTERVAL = 0.25
PERIOD = 0.5
KILLS = 50
DEFAULT_KILLS = 10
BARE_STARTS = 3
PASS_SPAWNS = 10
GOAL = 1.0


def cluster_toml(prefix: str, data_dir: str, interval: float) -> str:
    """The bench cluster file: one loop_manager, a high restart intensity, a short period."""
    return f"""[cluster]
prefix = "{prefix}"
beacon_interval = {interval}
data_dir = "{data_dir}"
http_port = 0
restart_intensity = 1000
restart_period_s = {PERIOD}

[services.{SERVICE}]
restart = "permanent"
"""


@dataclass
class Kills:
    """What one series of kills measured."""

    to_first: list[float]
    to_running: list[float]
    children: list[ChildView]
    #: ``delay_s`` of every SERVICE_RESTARTED: the backoff the supervisor chose.
    delays: list[float] = field(default_factory=list)
    #: When each SERVICE_RESTARTED arrived (monotonic): the new process was spawned.
    restarted_at: list[float] = field(default_factory=list)
    #: When each kill was sent (monotonic).
    killed_at: list[float] = field(default_factory=list)

    def to_spawned(self) -> list[float]:
        """Kill -> SERVICE_RESTARTED (the supervisor's reap, decision and spawn), per kill."""
        return [r - k for k, r in zip(self.killed_at, self.restarted_at, strict=False)]


async def kill_series(ctx: Ctx, url: str, nc: Client, interval: float, kills: int) -> Kills:
    """Run a supervising orchestrator, kill its child ``kills`` times, time each restart."""
    prefix = f"{PREFIX}{int(interval * 1000)}"
    data = ctx.dir / f"data-{prefix}"
    cluster = ctx.path(f"cluster-{prefix}.toml")
    cluster.write_text(cluster_toml(prefix, str(data), interval))
    env = orchestrator_env(
        url,
        prefix,
        ORCH,
        cluster_file=str(cluster),
        data_dir=str(data),
        beacon_interval=str(interval),
    )
    orch = ctx.python(f"orchestrator-{prefix}", ["-m", "services.orchestrator"], env)
    beacons = Beacons()
    subjects = Subjects(prefix)
    result = Kills([], [], [])
    all_restarted = anyio.Event()

    async def on_restarted(msg: Msg) -> None:
        data = decode(Event, msg.data).data
        result.restarted_at.append(time.monotonic())
        result.delays.append(float(data.get("delay_s", -1.0)))
        if len(result.delays) >= kills:
            all_restarted.set()

    sub = await nc.subscribe(subjects.beacon(SERVICE, f"{SERVICE}-0"), cb=beacons.on_beacon)
    restarted = await nc.subscribe(
        subjects.event("orchestrator", "SERVICE_RESTARTED"), cb=on_restarted
    )
    try:
        await wait_metrics(nc, orch, prefix, ORCH)
        current = await beacons.first(0.0, 20, running=True)
        reply = await nc.request(subjects.api("orchestrator", "status"), b"{}", timeout=2)
        children = decode(ClusterStatus, reply.data).children
        if [c.pid for c in children] != [current.pid]:
            raise RuntimeError(f"status children {children} do not match beacon pid {current.pid}")
        for k in range(kills):
            # Past the restart period, so the history resets and the restart is immediate.
            wait = current.started_at + PERIOD + 0.15 - time.time()
            if wait > 0:
                await anyio.sleep(wait)
            killed = time.monotonic()
            result.killed_at.append(killed)
            os.kill(current.pid, signal.SIGKILL)
            first = await beacons.first(killed, 15, not_pid=current.pid, running=False)
            current = await beacons.first(killed, 15, not_pid=current.pid, running=True)
            result.to_first.append(first.at - killed)
            result.to_running.append(current.at - killed)
            if k % 10 == 9:
                ctx.log(
                    f"    beacons every {interval:g} s, {k + 1} kills: p50 "
                    f"{statistics.median(result.to_running) * 1000:.0f} ms, "
                    f"max {max(result.to_running) * 1000:.0f} ms"
                )
        reply = await nc.request(subjects.api("orchestrator", "status"), b"{}", timeout=2)
        result.children = decode(ClusterStatus, reply.data).children
        with anyio.move_on_after(2):
            await all_restarted.wait()
    finally:
        await sub.unsubscribe()
        await restarted.unsubscribe()
        orch.stop(timeout=15)
    return result


async def pass_spawn(n: int) -> list[float]:
    """Seconds to spawn and reap ``python -c pass``, ``n`` times."""
    times: list[float] = []
    for _ in range(n):
        start = time.perf_counter()
        await anyio.run_process([sys.executable, "-c", "pass"])
        times.append(time.perf_counter() - start)
    return times


async def bare_start(ctx: Ctx, url: str, nc: Client, n: int) -> float:
    """Spawn ``python -m services.loop_manager`` -> its first RUNNING beacon; then stop it."""
    instance = f"bare-{n}"
    beacons = Beacons()
    sub = await nc.subscribe(Subjects(PREFIX).beacon(SERVICE, instance), cb=beacons.on_beacon)
    await nc.flush()
    env = service_env(
        SERVICE,
        {
            "nats_url": url,
            "prefix": PREFIX,
            "instance": instance,
            "beacon_interval": INTERVAL,
            "log_level": "WARNING",
        },
    )
    start = time.monotonic()
    proc = ctx.python(f"bare-{n}", ["-m", f"services.{SERVICE}"], env)
    try:
        seen = await beacons.first(start, 20, running=True)
    finally:
        proc.stop()
        await sub.unsubscribe()
    return seen.at - start


async def measure(ctx: Ctx, url: str) -> tuple[Row, Row]:
    """Kill the supervised child ``KILLS`` times; a few kills at 1 s beacons; raw limits."""
    nc = await nats.connect(url, connect_timeout=5)
    try:
        main = await kill_series(ctx, url, nc, INTERVAL, KILLS)
        default = await kill_series(ctx, url, nc, 1.0, DEFAULT_KILLS)
        bare = [await bare_start(ctx, url, nc, n) for n in range(BARE_STARTS)]
        passes = await pass_spawn(PASS_SPAWNS)
    finally:
        await nc.close()
    to_running, to_first, final = main.to_running, main.to_first, main.children
    spawned = main.to_spawned() or [float("nan")]
    ctx.context(
        NAME,
        f"kill -9 -> RUNNING at the default 1 s beacon interval, p50 of {DEFAULT_KILLS}",
        statistics.median(default.to_running),
        "s",
    )
    p99 = percentile(to_running, 0.99)
    ctx.context(NAME, "kill -9 -> RUNNING, p50", statistics.median(to_running), "s")
    ctx.context(
        NAME,
        "kill -9 -> first beacon of the new process (STARTING), p50",
        statistics.median(to_first),
        "s",
    )
    ctx.context(NAME, "python -c pass, spawn to exit, median", statistics.median(passes), "s")
    p50_row = Row(
        key=NAME,
        title=f"Supervised kill -9 -> RUNNING again, p50 of {KILLS}",
        figure=statistics.median(to_running),
        unit="s",
        raw=statistics.median(bare),
        raw_label=f"bare `python -m services.{SERVICE}` spawn -> RUNNING beacon, median",
        goal=GOAL,
        higher_is_better=False,
        notes=["the same 50 kills as the p99 row below"],
    )
    return p50_row, Row(
        key=NAME,
        title=f"Supervised kill -9 -> RUNNING again, p99 of {KILLS}",
        figure=p99,
        unit="s",
        raw=statistics.median(bare),
        raw_label=f"bare `python -m services.{SERVICE}` spawn -> RUNNING beacon, median",
        goal=GOAL,
        higher_is_better=False,
        notes=[
            f"{KILLS} kills of a supervised {SERVICE} (beacon_interval {INTERVAL} s): kill -> "
            f"RUNNING p50 {statistics.median(to_running) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
            f"max {max(to_running) * 1000:.0f} ms; kill -> first beacon of the new process "
            f"p50 {statistics.median(to_first) * 1000:.0f} ms, max {max(to_first) * 1000:.0f} ms",
            f"cluster file: restart_intensity = 1000 and restart_period_s = {PERIOD:g}, each kill "
            f"after the child ran > {PERIOD:g} s, so every kill gets the first (immediate) "
            "restart of the policy; with the default 5 restarts in 60 s the supervisor gives up "
            "after the fifth kill, and within one period later restarts back off 0.5, 1, 2 ... s",
            "supervisor at the end: "
            + ", ".join(f"{c.instance} restarts {c.restarts}, gave_up {c.gave_up}" for c in final)
            + f"; SERVICE_RESTARTED events {len(main.delays)}, restart delays chosen: "
            + (
                ", ".join(f"{d:.2f}" for d in main.delays if d)
                if any(main.delays)
                else "all 0 (immediate)"
            ),
            f"at the default 1 s beacon interval ({DEFAULT_KILLS} kills): kill -> RUNNING p50 "
            f"{statistics.median(default.to_running) * 1000:.0f} ms, max "
            f"{max(default.to_running) * 1000:.0f} ms; kill -> first beacon p50 "
            f"{statistics.median(default.to_first) * 1000:.0f} ms",
            "kill -> SERVICE_RESTARTED event (the supervisor reaped, decided and spawned; the "
            f"event is emitted after the spawn): p50 {statistics.median(spawned) * 1000:.0f} ms, "
            f"max {max(spawned) * 1000:.0f} ms; the rest is the new process starting",
            "raw: bare starts "
            + ", ".join(f"{b * 1000:.0f}" for b in bare)
            + f" ms; python -c pass median {statistics.median(passes) * 1000:.0f} ms",
        ],
    )


def run(ctx: Ctx) -> list[Row]:
    """Measure on a nats-server of this benchmark's own."""
    server = ctx.server()
    return list(anyio.run(measure, ctx, server.url))
