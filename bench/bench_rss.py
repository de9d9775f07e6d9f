"""Idle RSS of one service process per kind, beside a bare connected Python process.

Each service kind runs as ``python -m services.<kind>`` (HTTP and Prometheus
endpoints on, on free ports, as in a real cluster), all on one nats-server and
prefix, so the orchestrator watches and probes the others and the collector polls
them. RSS (psutil) is read once every instance has been RUNNING for a few seconds.
The raw limit is a bare process that imports nats, msgspec and anyio, connects and
subscribes to one subject.
"""

from __future__ import annotations

import time

import anyio
import nats
import psutil

from bench.beacon_watch import Beacons
from bench.harness import Ctx, Proc, Row, await_json
from shared.cluster import service_env
from shared.subjects import Subjects

NAME = "rss"
PREFIX = "benchrss"
SETTLE_S = 4.0
GOAL = 60.0
KINDS: dict[str, dict[str, object]] = {
    "orchestrator": {"http_port": 0},
    "loop_manager": {},
    "status_metrics_collector": {"prometheus_port": 0},
}


def mb(proc: Proc) -> tuple[float, float]:
    """RSS and USS of a process, in MB (10^6 bytes, the strict reading of the goal)."""
    info = psutil.Process(proc.pid).memory_full_info()
    return info.rss / 1e6, info.uss / 1e6


async def measure(ctx: Ctx, url: str) -> list[Row]:
    """Start every kind and the bare process; read their memory once they idle."""
    nc = await nats.connect(url, connect_timeout=5)
    subjects = Subjects(PREFIX)
    procs: dict[str, Proc] = {}
    watches: dict[str, Beacons] = {}
    try:
        for kind in KINDS:
            watches[kind] = Beacons()
            subject = subjects.beacon(kind, f"{kind}-rss")
            await nc.subscribe(subject, cb=watches[kind].on_beacon)
        await nc.flush()
        start = time.monotonic()
        for kind, extra in KINDS.items():
            values = {"nats_url": url, "prefix": PREFIX, "instance": f"{kind}-rss", **extra}
            values["log_level"] = "WARNING"
            procs[kind] = ctx.python(kind, ["-m", f"services.{kind}"], service_env(kind, values))
        ready = ctx.path("bare-ready.json")
        bare = ctx.python("bare", ["-m", "bench._bare", url, str(ready)])
        await await_json(ready, 20, bare)
        for kind, watch in watches.items():
            try:
                await watch.first(start, 20, running=True)
            except TimeoutError:
                raise RuntimeError(f"{kind} not RUNNING:\n{procs[kind].tail()}") from None
        await anyio.sleep(SETTLE_S)
        bare_rss, bare_uss = mb(bare)
        ctx.context(NAME, "bare process USS (memory of its own)", bare_uss, "MB")
        rows = []
        for kind, proc in procs.items():
            rss, uss = mb(proc)
            ctx.context(NAME, f"{kind} USS (memory of its own)", uss, "MB")
            threads = psutil.Process(proc.pid).num_threads()
            rows.append(
                Row(
                    key=NAME,
                    title=f"Idle RSS of one {kind}",
                    figure=rss,
                    unit="MB",
                    raw=bare_rss,
                    raw_label="bare python: nats, msgspec, anyio imported, connected",
                    goal=GOAL,
                    higher_is_better=False,
                    notes=[
                        f"RSS {rss:.1f} MB, USS {uss:.1f} MB, {threads} threads, read "
                        f"{SETTLE_S:g} s after every instance was RUNNING; bare process RSS "
                        f"{bare_rss:.1f} MB, USS {bare_uss:.1f} MB"
                    ],
                )
            )
    finally:
        await nc.close()
    return rows


def run(ctx: Ctx) -> list[Row]:
    """Measure on a nats-server of this benchmark's own."""
    server = ctx.server()
    return anyio.run(measure, ctx, server.url)
