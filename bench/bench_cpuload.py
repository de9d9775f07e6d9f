"""False LOST while both cores are saturated: live services must not be declared LOST.

A real orchestrator (defaults) watches ``SERVICES`` real loop_manager processes
(default 1 s beacons) on this benchmark's own nats-server. Once every instance is
RUNNING, one CPU burner per core (a subprocess spinning for ``BURN_S`` seconds,
bounded by its own deadline and killed at the end whatever happens) saturates the
machine. Every SERVICE_LOST of an instance that is alive is a false LOST; SUSPECT
events and the longest gap between two beacons of one instance, as the bench saw
them, are recorded beside it. There is no raw limit for a count: the beacon gaps are
the context.
"""

from __future__ import annotations

import itertools
import os
import time
from collections import Counter, defaultdict

import anyio
import nats
import psutil
from nats.aio.msg import Msg

from bench.harness import Ctx, Proc, Row
from bench.procs import env, orchestrator_env, wait_metrics
from shared.codec import decode
from shared.contracts import Beacon, Event, ServiceStatus
from shared.subjects import Subjects

NAME = "cpuload"
PREFIX = "benchcpu"
ORCH = "orch-cpu"
SERVICE = "loop_manager"
SERVICES = 4
BURN_S = 60.0
#: After the burn, how long LOST is still watched for (LOST needs > 3 silent intervals).
AFTER_S = 5.0
#: The burner: spin until its own deadline (it ends even if nobody kills it).
SPIN = (
    "import sys, time\n"
    "end = time.monotonic() + float(sys.argv[1])\n"
    "while time.monotonic() < end:\n"
    "    pass\n"
)


class Watch:
    """Beacon arrival times per instance, and lifecycle events of the watched service."""

    def __init__(self) -> None:
        self.beacons: dict[str, list[float]] = defaultdict(list)
        self.running: set[str] = set()
        self.events: Counter[str] = Counter()
        self.lost: list[str] = []

    async def on_beacon(self, msg: Msg) -> None:
        """Note one beacon."""
        b = decode(Beacon, msg.data)
        self.beacons[b.instance].append(time.monotonic())
        if b.status is ServiceStatus.RUNNING:
            self.running.add(b.instance)

    async def on_event(self, msg: Msg) -> None:
        """Count SUSPECT / LOST / RECOVERED of the watched service."""
        event = decode(Event, msg.data)
        if event.data.get("service") != SERVICE:
            return
        self.events[event.type] += 1
        if event.type == "SERVICE_LOST":
            self.lost.append(str(event.data.get("instance")))

    def worst_gap(self, start: float, end: float) -> float:
        """The longest gap between two beacons of one instance within [start, end]."""
        worst = 0.0
        for times in self.beacons.values():
            inside = [t for t in times if start <= t <= end]
            worst = max([worst, *(b - a for a, b in itertools.pairwise(inside))])
        return worst


async def measure(ctx: Ctx, url: str) -> Row:
    """Start the services, wait for RUNNING, burn, count false LOSTs."""
    subjects = Subjects(PREFIX)
    orch = ctx.python(
        "orchestrator", ["-m", "services.orchestrator"], orchestrator_env(url, PREFIX, ORCH)
    )
    watch = Watch()
    nc = await nats.connect(url, connect_timeout=5)
    burners: list[Proc] = []
    try:
        await wait_metrics(nc, orch, PREFIX, ORCH)
        await nc.subscribe(subjects.beacons, cb=watch.on_beacon)
        for kind in ("SERVICE_SUSPECT", "SERVICE_LOST", "SERVICE_RECOVERED"):
            await nc.subscribe(subjects.event("orchestrator", kind), cb=watch.on_event)
        names = [f"lm-{i}" for i in range(SERVICES)]
        for name in names:
            ctx.python(name, ["-m", f"services.{SERVICE}"], env(SERVICE, url, PREFIX, name))
        deadline = time.monotonic() + 60
        while not set(names) <= watch.running:  # polled: beacons arrive on their own
            if time.monotonic() > deadline:
                raise TimeoutError(f"not all RUNNING: {sorted(watch.running)}")
            await anyio.sleep(0.1)
        await anyio.sleep(2.0)  # every instance registered and beaconing steadily
        cores = os.cpu_count() or 2
        start = time.monotonic()
        for i in range(cores):
            burners.append(ctx.python(f"burner-{i}", ["-c", SPIN, str(BURN_S + 5)]))
        await anyio.sleep(BURN_S)
        burn_cpu = 0.0
        for proc in burners:
            times = psutil.Process(proc.pid).cpu_times()
            burn_cpu += times.user + times.system
        for proc in burners:
            proc.kill()
        burn_end = time.monotonic()
        await anyio.sleep(AFTER_S)
        alive = [p.name for p in ctx.procs if p.name in names and p.alive()]
    finally:
        for proc in burners:
            proc.kill()
        await nc.close()
    false_lost = [n for n in watch.lost if n in alive]
    gap = watch.worst_gap(start, burn_end + AFTER_S)
    share = burn_cpu / (burn_end - start) / cores
    ctx.context(NAME, "longest gap between two beacons of one instance while burning", gap, "s")
    ctx.context(NAME, "CPU the burners got, share of all cores", share * 100, "%")
    return Row(
        key=NAME,
        title=f"False LOST while both cores are saturated for {BURN_S:.0f} s",
        figure=len(false_lost),
        unit="",
        raw=None,
        raw_label="a count has no raw limit: see the beacon gaps in the notes",
        goal=0,
        higher_is_better=False,
        inclusive=True,
        notes=[
            f"{SERVICES} {SERVICE} processes and an orchestrator on defaults (1 s beacons, "
            f"LOST after > 3 silent intervals and an unanswered probe); {cores} burner "
            f"processes (one per core, `python -c` spinning) for {BURN_S:.0f} s, "
            f"then {AFTER_S:.0f} s more watched; the burners got {share:.0%} of all cores",
            f"events of the {SERVICE} instances: "
            + (", ".join(f"{k} {v}" for k, v in sorted(watch.events.items())) or "none")
            + f"; LOST of live instances: {false_lost or 'none'}",
            f"longest gap between two beacons of one instance (as the bench saw them, itself "
            f"starved too): {gap:.2f} s",
        ],
    )


def run(ctx: Ctx) -> list[Row]:
    """Measure on a nats-server of this benchmark's own."""
    server = ctx.server()
    return [anyio.run(measure, ctx, server.url)]
