"""Cold start: ``ringmaster up`` to every service RUNNING, beside bare process spawns.

``python -m shared.cli up --no-live`` runs a cluster file with the orchestrator, a
loop_manager and a status_metrics_collector at the default 1 s beacon interval, on
fresh ports and a fresh data directory (so ``up`` starts its own embedded
nats-server, with an empty JetStream store: a real cold start). The time runs from
spawning ``up`` until ``P.api.orchestrator.status`` lists every instance RUNNING and
ALIVE. The raw limit spawns the same number of Python processes (``up``, the
orchestrator and two services) at once and waits for all of them to exit.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from dataclasses import dataclass, field

import anyio
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from bench.harness import Ctx, Row
from shared.codec import decode
from shared.contracts import Beacon, ClusterStatus, Liveness, ServiceStatus
from shared.embedded import free_port
from shared.subjects import Subjects

NAME = "coldstart"
PREFIX = "benchcold"
RUNS = 3
GOAL = 3.0
EXPECTED = ("orchestrator-1", "loop_manager-0", "status_metrics_collector-0")
PROCESSES = 4  # up, the orchestrator, two services


def cluster_toml(data_dir: str, nats_port: int, http_port: int) -> str:
    """A cluster file like the repository's, on fresh ports and a fresh data directory."""
    return f"""[cluster]
prefix = "{PREFIX}"
beacon_interval = 1.0
data_dir = "{data_dir}"
nats_port = {nats_port}
http_port = {http_port}

[services.loop_manager]
restart = "permanent"

[services.status_metrics_collector]
restart = "permanent"
[services.status_metrics_collector.config]
prometheus_port = 0
"""


async def connect_when_up(port: int, deadline: float) -> Client:
    """Connect to the server ``up`` starts, once its port accepts connections.

    The port is polled with plain TCP first: a refused first connect makes nats-py
    wait its ``reconnect_time_wait`` before the next try, which would be measured too.
    """
    while True:
        try:
            stream = await anyio.connect_tcp("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await anyio.sleep(0.01)
            continue
        await stream.aclose()
        return await nats.connect(f"nats://127.0.0.1:{port}", connect_timeout=2)


def all_running(status: ClusterStatus) -> bool:
    """Whether every expected instance is RUNNING and ALIVE."""
    seen = {
        v.instance
        for v in status.services
        if v.status is ServiceStatus.RUNNING and v.liveness is Liveness.ALIVE
    }
    return all(name in seen for name in EXPECTED)


@dataclass
class Timeline:
    """Seconds from spawning ``up``: its server listening, each instance's first RUNNING
    beacon, and every instance RUNNING and ALIVE in the orchestrator's status."""

    server: float = 0.0
    running: dict[str, float] = field(default_factory=dict)
    total: float = 0.0


async def cold_start(ctx: Ctx, n: int) -> Timeline:
    """One ``ringmaster up`` until every instance is RUNNING in its status; then stop it."""
    nats_port, http_port = free_port(), free_port()
    cluster = ctx.path(f"cluster-{n}.toml")
    cluster.write_text(cluster_toml(str(ctx.dir / f"data-{n}"), nats_port, http_port))
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    subjects = Subjects(PREFIX)
    timeline = Timeline()

    async def on_beacon(msg: Msg) -> None:
        beacon = decode(Beacon, msg.data)
        if beacon.status is ServiceStatus.RUNNING:
            timeline.running.setdefault(beacon.instance, time.monotonic() - start)

    start = time.monotonic()
    up = ctx.python(
        f"up-{n}", ["-m", "shared.cli", "up", "--no-live", "--cluster", str(cluster)], env
    )
    deadline = start + 30
    try:
        nc = await connect_when_up(nats_port, deadline)
        timeline.server = time.monotonic() - start
        try:
            await nc.subscribe(subjects.beacons, cb=on_beacon)
            while True:
                try:
                    reply = await nc.request(subjects.api("orchestrator", "status"), b"{}", 0.5)
                    if all_running(decode(ClusterStatus, reply.data)):
                        timeline.total = time.monotonic() - start
                        return timeline
                except (TimeoutError, nats.errors.Error):
                    pass  # the orchestrator is not answering yet
                if time.monotonic() > deadline or not up.alive():
                    raise TimeoutError(f"cluster not RUNNING within 30 s:\n{up.tail()}")
                await anyio.sleep(0.02)
        finally:
            await nc.close()
    finally:
        # SIGTERM: `up` stops the orchestrator, which stops its children, then the server.
        up.stop(timeout=30)


async def bare_spawns() -> float:
    """Seconds to spawn ``PROCESSES`` ``python -c pass`` at once and reap them all."""
    start = time.monotonic()
    async with anyio.create_task_group() as tg:
        for _ in range(PROCESSES):
            tg.start_soon(anyio.run_process, [sys.executable, "-c", "pass"])
    return time.monotonic() - start


async def import_spawns() -> float:
    """Seconds to spawn the four processes at once, each only importing its modules."""
    modules = [
        "shared.cli",
        "services.orchestrator.service",
        "services.loop_manager.service",
        "services.status_metrics_collector.service",
    ]
    start = time.monotonic()
    async with anyio.create_task_group() as tg:
        for module in modules:
            tg.start_soon(anyio.run_process, [sys.executable, "-c", f"import {module}"])
    return time.monotonic() - start


async def measure(ctx: Ctx) -> Row:
    """``RUNS`` cold starts and as many bare spawns, alternating."""
    starts: list[float] = []
    bare: list[float] = []
    timelines: list[Timeline] = []
    for n in range(RUNS):
        timelines.append(await cold_start(ctx, n))
        starts.append(timelines[-1].total)
        bare.append(await bare_spawns())
        ctx.log(f"    run {n + 1}: cold start {starts[-1]:.2f} s, bare spawns {bare[-1]:.3f} s")
    imports = statistics.median([await import_spawns() for _ in range(RUNS)])
    ctx.context(NAME, "the same 4 processes at once, each only importing its modules", imports, "s")
    return Row(
        key=NAME,
        title="Cold start: `ringmaster up` -> every service RUNNING, median",
        figure=statistics.median(starts),
        unit="s",
        raw=statistics.median(bare),
        raw_label=f"{PROCESSES} `python -c pass` spawned at once, all exited",
        goal=GOAL,
        higher_is_better=False,
        notes=[
            f"{RUNS} runs: " + ", ".join(f"{s:.2f}" for s in starts) + " s; each with its own "
            "embedded nats-server started by `up`, an empty store, the default 1 s beacon "
            f"interval; instances {', '.join(EXPECTED)}",
            "bare spawns: " + ", ".join(f"{b * 1000:.0f}" for b in bare) + " ms",
            "timeline from spawning `up` (median of the runs): its nats-server listening "
            f"{statistics.median(t.server for t in timelines):.2f} s, first RUNNING beacon of "
            + ", ".join(
                f"{name} {statistics.median(t.running.get(name, t.total) for t in timelines):.2f} s"
                for name in EXPECTED
            )
            + "; `up` then starts the orchestrator, which starts the services, so three Python "
            "starts (with their imports) run one after the other",
        ],
    )


def run(ctx: Ctx) -> list[Row]:
    """``up`` starts a nats-server of its own for each run."""
    return [anyio.run(measure, ctx)]
