"""A silent instance is declared LOST: time from its last beacon to SERVICE_LOST.

A real orchestrator (defaults: ``check_interval`` 0.25 s, ``probe_timeout`` 0.5 s)
watches fake instances that beacon at the default 1 s interval, three times, then
fall silent. Two kinds, several of each at staggered offsets (so they meet the
sweep at different phases):

- dead: nothing answers its control subject (a killed process), so the probe gets
  "no responders" at once;
- hung: a subscriber takes the probe and never answers (a stuck process), so the
  probe waits its whole timeout.

The raw limit is the rule's floor: the probe goes out at the SUSPECT mark (more than
2 intervals of silence) and LOST follows its failure, so 2 s plus a no-responder
round trip (dead) or plus the probe timeout (hung), measured in this run. A hung
process (SIGSTOP) keeps its connection, so the server hands it the probe and nobody
answers: the fake hung instance here is what the orchestrator sees of one.
"""

from __future__ import annotations

import os
import signal
import statistics
import time
from collections.abc import Awaitable, Callable

import anyio
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from bench.bench_ingest import orchestrator_env, wait_metrics
from bench.bench_jobs import env
from bench.harness import Ctx, Row, percentile
from shared.codec import decode, encode
from shared.contracts import Beacon, Event, ServiceStatus
from shared.liveness import SUSPECT_AFTER
from shared.subjects import Subjects

NAME = "lost"
PREFIX = "benchlost"
ORCH = "orch-lost"
SERVICE = "silent"
INTERVAL = 1.0
BEACONS = 3
PER_KIND = 4
GOAL = 3.0
HUNG_GOAL = 3.5
PROBE_TIMEOUT = 0.5  # the orchestrator's default


def beacon(instance: str, seq: int) -> bytes:
    """One RUNNING beacon of a fake instance."""
    now = time.time()
    return encode(
        Beacon(
            service=SERVICE,
            instance=instance,
            version="bench",
            host="bench",
            pid=os.getpid(),
            status=ServiceStatus.RUNNING,
            healthy=True,
            started_at=now,
            sent_at=now,
            seq=seq,
            interval_s=INTERVAL,
        )
    )


async def no_responder_rtt(nc: Client, subject: str, n: int = 20) -> float:
    """Median seconds for a request nobody listens to to fail (a probe of a dead instance)."""
    times: list[float] = []
    for _ in range(n):
        start = time.perf_counter()
        try:
            await nc.request(subject, b"{}", timeout=1.0)
        except nats.errors.NoRespondersError:
            times.append(time.perf_counter() - start)
    if not times:
        raise RuntimeError("expected no responders")
    return statistics.median(times)


class Watch:
    """Arrival times of SUSPECT and LOST events and of probes, per instance."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.all_lost = anyio.Event()
        self.last_beacon: dict[str, float] = {}
        self.suspect: dict[str, float] = {}
        self.lost: dict[str, float] = {}
        self.probe: dict[str, float] = {}

    async def on_event(self, msg: Msg) -> None:
        """Record a SERVICE_SUSPECT or SERVICE_LOST of one of ours."""
        now = time.monotonic()
        event = decode(Event, msg.data)
        instance = str(event.data.get("instance", ""))
        if event.data.get("service") != SERVICE:
            return
        target = self.lost if event.type == "SERVICE_LOST" else self.suspect
        target.setdefault(instance, now)
        if len(self.lost) >= self.expected:
            self.all_lost.set()

    def probe_cb(self, instance: str) -> Callable[[Msg], Awaitable[None]]:
        """A control-subject callback that notes the probe and never answers."""

        async def on_probe(_msg: Msg) -> None:
            self.probe.setdefault(instance, time.monotonic())

        return on_probe


async def fake_instance(
    nc: Client, subjects: Subjects, watch: Watch, name: str, delay: float
) -> None:
    """Beacon ``BEACONS`` times at ``INTERVAL``, then fall silent."""
    await anyio.sleep(delay)
    for seq in range(1, BEACONS + 1):
        await nc.publish(subjects.beacon(SERVICE, name), beacon(name, seq))
        await nc.flush()
        watch.last_beacon[name] = time.monotonic()
        if seq < BEACONS:
            await anyio.sleep(INTERVAL)


async def sigstopped(ctx: Ctx, nc: Client, url: str) -> float:
    """A real loop_manager stopped with SIGSTOP: its last beacon -> SERVICE_LOST, seconds."""
    subjects = Subjects(PREFIX)
    name, seen, lost = "lm-stopped", anyio.Event(), anyio.Event()
    last: list[float] = []

    async def on_beacon(msg: Msg) -> None:
        if decode(Beacon, msg.data).status is ServiceStatus.RUNNING:
            last.append(time.monotonic())
            if len(last) >= BEACONS:
                seen.set()

    async def on_lost(msg: Msg) -> None:
        if decode(Event, msg.data).data.get("instance") == name:
            last.append(time.monotonic())
            lost.set()

    await nc.subscribe(subjects.beacon("loop_manager", name), cb=on_beacon)
    await nc.subscribe(subjects.event("orchestrator", "SERVICE_LOST"), cb=on_lost)
    proc = ctx.python(name, ["-m", "services.loop_manager"], env("loop_manager", url, PREFIX, name))
    with anyio.fail_after(60):
        await seen.wait()
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        with anyio.fail_after(8 * INTERVAL):
            await lost.wait()
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    # LOST is the last entry; before it, the last beacon (one already on its way when
    # the process stopped included). No callback runs between SIGCONT and here.
    return last[-1] - last[-2]


async def measure(ctx: Ctx, url: str) -> list[Row]:
    """Run dead and hung instances side by side; LOST latency from the last beacon."""
    subjects = Subjects(PREFIX)
    orch = ctx.python(
        "orchestrator", ["-m", "services.orchestrator"], orchestrator_env(url, PREFIX, ORCH)
    )
    nc = await nats.connect(url, connect_timeout=5)
    watch = Watch(2 * PER_KIND)
    try:
        await wait_metrics(nc, orch, PREFIX, ORCH)
        rtt = await no_responder_rtt(nc, subjects.ctl(SERVICE, "nobody"))
        await nc.subscribe(subjects.event("orchestrator", "SERVICE_LOST"), cb=watch.on_event)
        await nc.subscribe(subjects.event("orchestrator", "SERVICE_SUSPECT"), cb=watch.on_event)
        dead = [f"dead-{i}" for i in range(PER_KIND)]
        hung = [f"hung-{i}" for i in range(PER_KIND)]
        for name in hung:
            await nc.subscribe(subjects.ctl(SERVICE, name), cb=watch.probe_cb(name))
        await nc.flush()
        async with anyio.create_task_group() as tg:
            for i, name in enumerate(dead + hung):
                # Offsets spread over one sweep period, so every phase is sampled.
                tg.start_soon(fake_instance, nc, subjects, watch, name, (i % PER_KIND) * 0.07)
        with anyio.move_on_after(8 * INTERVAL):
            await watch.all_lost.wait()
        real_hung = await sigstopped(ctx, nc, url)
    finally:
        await nc.close()
    missing = sorted(set(dead + hung) - set(watch.lost))
    if missing:
        raise RuntimeError(
            f"no SERVICE_LOST for {missing} within {8 * INTERVAL:g}s:\n{orch.tail()}"
        )

    def since_last(times: dict[str, float], names: list[str]) -> list[float]:
        return [times[n] - watch.last_beacon[n] for n in names if n in times]

    lost_dead, lost_hung = since_last(watch.lost, dead), since_last(watch.lost, hung)
    lost_hung.append(real_hung)
    ctx.context(NAME, "real loop_manager under SIGSTOP: last beacon -> LOST", real_hung, "s")
    suspect = since_last(watch.suspect, dead + hung)
    probe_at = since_last(watch.probe, hung)
    probe_wait = [watch.lost[n] - watch.probe[n] for n in hung if n in watch.probe]
    floor = SUSPECT_AFTER * INTERVAL + rtt
    hung_floor = SUSPECT_AFTER * INTERVAL + PROBE_TIMEOUT
    ctx.context(
        NAME,
        "dead instance: last beacon -> SERVICE_LOST, median",
        statistics.median(lost_dead),
        "s",
    )
    ctx.context(
        NAME, "hung instance (probe never answered): -> SERVICE_LOST, max", max(lost_hung), "s"
    )
    ctx.context(NAME, "last beacon -> SERVICE_SUSPECT, median", statistics.median(suspect), "s")
    ctx.context(
        NAME, "last beacon -> probe arrives (hung), median", statistics.median(probe_at), "s"
    )
    parts = (
        f"SUSPECT after a median {statistics.median(suspect):.2f} s; the probe of a hung "
        f"instance goes out after {statistics.median(probe_at):.2f} s and LOST follows "
        f"{statistics.median(probe_wait):.2f} s later (probe_timeout {PROBE_TIMEOUT} s); a "
        f"no-responder probe fails in {rtt * 1000:.2f} ms"
    )
    spread = (
        "dead, last beacon -> LOST: "
        + ", ".join(f"{v:.2f}" for v in sorted(lost_dead))
        + " s; hung: "
        + ", ".join(f"{v:.2f}" for v in sorted(lost_hung))
        + f" s (p50 {percentile(lost_hung, 0.5):.2f} s)"
    )
    setup = (
        f"{PER_KIND} dead and {PER_KIND} hung fake instances at once, 3 beacons each at 1 s "
        "then silence, offsets spread over one sweep period (0.25 s); then one real "
        f"loop_manager (1 s beacons) stopped with SIGSTOP: LOST {real_hung:.2f} s after its "
        "last beacon (counted among the hung)"
    )
    return [
        Row(
            key=NAME,
            title="Silent instance -> LOST (1 s beacons, killed instance), worst of runs",
            figure=max(lost_dead),
            unit="s",
            raw=floor,
            raw_label="rule floor: 2 silent intervals + no-responder probe round trip",
            goal=GOAL,
            higher_is_better=False,
            inclusive=True,
            notes=[setup, spread, parts],
        ),
        Row(
            key=NAME,
            title="Hung instance (probe never answered) -> LOST, worst of runs",
            figure=max(lost_hung),
            unit="s",
            raw=hung_floor,
            raw_label="rule floor: 2 silent intervals + probe timeout",
            goal=HUNG_GOAL,
            higher_is_better=False,
            inclusive=True,
            notes=[setup, spread, parts],
        ),
    ]


def run(ctx: Ctx) -> list[Row]:
    """Measure on a nats-server of this benchmark's own."""
    server = ctx.server()
    return anyio.run(measure, ctx, server.url)
