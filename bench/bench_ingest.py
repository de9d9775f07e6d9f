"""Beacons ingested per second by the orchestrator, beside raw pub/sub in the same run.

Raw limit: a publisher process sends 300 B messages as fast as nats-py lets it to a
subscriber process that only counts them. Figure: the same publisher sends Beacons
of 1,000 distinct instances to a real orchestrator (``python -m services.orchestrator``,
HTTP off); ingestion is read from the orchestrator's own ``beacons_ingested_total`` counter
on its ``metrics`` endpoint. Both rates run from the publisher's first message to the
consumer's last, and the rounds alternate, so machine noise hits both sides alike.
"""

from __future__ import annotations

import time

import anyio
import nats
import psutil
from nats.aio.client import Client
from nats.aio.msg import Msg

from bench.harness import Ctx, Proc, Row, await_json
from bench.procs import metrics, orchestrator_env, wait_metrics
from shared.codec import decode
from shared.contracts import Event
from shared.subjects import Subjects

NAME = "ingest"
RAW_MESSAGES = 300_000
BEACONS = 150_000
INSTANCES = 1_000
ROUNDS = 3
GOAL = 50_000.0
PREFIX = "benchin"
ORCH = "orch-bench"


async def raw_round(ctx: Ctx, url: str, n: int) -> tuple[float, float]:
    """Publisher process -> counting subscriber process; messages/s and CPU s per message."""
    ready, result, pub_result = (ctx.path(f"raw{n}-{x}.json") for x in ("ready", "res", "pub"))
    sub = ctx.python(
        f"raw-sub-{n}", ["-m", "bench._sub", url, "bench.raw", str(ready), str(result)]
    )
    await await_json(ready, 20, sub)
    pub = ctx.python(
        f"raw-pub-{n}", ["-m", "bench._pub", url, str(pub_result), "--count", str(RAW_MESSAGES)]
    )
    sent = await await_json(pub_result, 120, pub)
    got = await await_json(result, 120, sub)
    rate: float = got["count"] / (got["last"] - sent["start"])
    per_msg: float = got["cpu"] / got["count"]
    ctx.log(
        f"    round {n}: raw {rate:,.0f}/s received ({got['count']:,} of {sent['sent']:,}; "
        f"{per_msg * 1e6:.1f} µs CPU per message; "
        f"publisher {sent['sent'] / (sent['end'] - sent['start']):,.0f}/s)"
    )
    return rate, per_msg


class Sentinel:
    """When the orchestrator registered the sentinel instance (its last message)."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}

    async def on_event(self, msg: Msg) -> None:
        """Note the wall time a SERVICE_REGISTERED arrived, by instance."""
        event = decode(Event, msg.data)
        self.seen.setdefault(str(event.data.get("instance")), time.time())


async def beacon_round(
    ctx: Ctx, url: str, nc: Client, orch: Proc, sentinel: Sentinel, n: int
) -> tuple[float, float]:
    """Publisher process -> orchestrator; beacons ingested per second and CPU s per beacon."""
    before = await metrics(nc, PREFIX, ORCH)
    cpu = psutil.Process(orch.pid)
    cpu_before = sum(cpu.cpu_times()[:2])
    pub_result = ctx.path(f"beacons{n}-pub.json")
    name = f"sentinel-{n}"
    pub = ctx.python(
        f"beacon-pub-{n}",
        [
            *("-m", "bench._pub", url, str(pub_result), "--prefix", PREFIX),
            *("--count", str(BEACONS), "--instances", str(INSTANCES), "--sentinel", name),
        ],
    )
    sent = await await_json(pub_result, 120, pub)
    deadline = time.monotonic() + 120
    while name not in sentinel.seen:
        if time.monotonic() > deadline:
            raise TimeoutError(f"orchestrator never registered {name}:\n{orch.tail()}")
        await anyio.sleep(0.01)
    cpu_used = sum(cpu.cpu_times()[:2]) - cpu_before
    after = await metrics(nc, PREFIX, ORCH)
    ingested = after.custom["beacons_ingested_total"] - before.custom["beacons_ingested_total"]
    rate = ingested / (sentinel.seen[name] - sent["start"])
    ctx.log(
        f"    round {n}: orchestrator {rate:,.0f}/s ingested ({ingested:,.0f} of {sent['sent']:,}; "
        f"{cpu_used / ingested * 1e6:.1f} µs CPU per beacon; "
        f"publisher {sent['sent'] / (sent['end'] - sent['start']):,.0f}/s)"
    )
    return rate, cpu_used / ingested


async def measure(ctx: Ctx, url: str) -> Row:
    """Start the orchestrator, alternate raw and beacon rounds, keep the best of each."""
    orch = ctx.python(
        "orchestrator", ["-m", "services.orchestrator"], orchestrator_env(url, PREFIX, ORCH)
    )
    nc = await nats.connect(url, connect_timeout=5)
    sentinel = Sentinel()
    try:
        await wait_metrics(nc, orch, PREFIX, ORCH)
        subject = Subjects(PREFIX).event("orchestrator", "SERVICE_REGISTERED")
        await nc.subscribe(subject, cb=sentinel.on_event)
        raw: list[float] = []
        raw_cpu: list[float] = []
        ingest: list[float] = []
        cpu: list[float] = []
        for n in range(1, ROUNDS + 1):
            rate, per_msg = await raw_round(ctx, url, n)
            raw.append(rate)
            raw_cpu.append(per_msg)
            rate, per_beacon = await beacon_round(ctx, url, nc, orch, sentinel, n)
            ingest.append(rate)
            cpu.append(per_beacon)
        final = await metrics(nc, PREFIX, ORCH)
    finally:
        await nc.close()
    ctx.context(NAME, "orchestrator CPU per beacon (best round)", min(cpu) * 1e6, "µs")
    ctx.context(NAME, "raw subscriber CPU per message (best round)", min(raw_cpu) * 1e6, "µs")
    ctx.context(
        NAME, "beacons/s one orchestrator core could take at that CPU cost", 1 / min(cpu), "/s"
    )
    return Row(
        key=NAME,
        title="Beacons ingested/s by the orchestrator",
        figure=max(ingest),
        unit="/s",
        raw=max(raw),
        raw_label="pub/sub 300 B, publisher and subscriber processes",
        goal=GOAL,
        higher_is_better=True,
        notes=[
            f"{BEACONS:,} RUNNING beacons (237 B) of {INSTANCES:,} instances, then one STOPPED "
            f"beacon each, per round; best of {ROUNDS} rounds (orchestrator: "
            f"{', '.join(f'{r:,.0f}' for r in ingest)}; raw: "
            f"{', '.join(f'{r:,.0f}' for r in raw)})",
            f"{RAW_MESSAGES:,} raw messages per round; rates run from the publisher's first "
            "message to the consumer's last: for the orchestrator, the arrival of the "
            "SERVICE_REGISTERED of a sentinel instance whose first beacon is sent last; the "
            "count is the orchestrator's beacons_ingested_total (its own beacons included)",
            "orchestrator counters at the end: ingested "
            f"{final.custom['beacons_ingested_total']:,.0f}, "
            f"invalid {final.custom.get('beacons_invalid_total', 0):,.0f}, events emitted "
            f"{final.events_emitted:,}, acked {final.events_acked:,}, dropped "
            f"{final.events_dropped:,}; RSS {final.rss_bytes / 2**20:.0f} MB",
        ],
    )


def run(ctx: Ctx) -> list[Row]:
    """Measure on a nats-server of this benchmark's own."""
    server = ctx.server()
    return [anyio.run(measure, ctx, server.url)]
