"""How busy the job records say each node was: idle gaps between jobs, games per second.

``python -m bench.gaps [--nats-url URL] [--prefix P] [--since EPOCH] [--json]`` reads every
job record of a running cluster (the jobs bucket, scanned once) and prints, per node and
over all nodes:

- the **idle gap** between the end of one attempt (``finished_at``) and the start of
  the next (``started_at``) on the same node: the time a slot waited on the control
  plane. A node of several slots runs jobs side by side, so its gaps are measured per
  slot: each start is paired with the earliest unpaired end before it;
- the **busy share**: run time over the span, per slot;
- **selfplay games per second**, from the ``games`` each completed selfplay job reports.

The record's ``started_at`` is the job manager's time of the agent's "started" report,
taken just before the agent starts the process; ``finished_at`` is its time of the final
report, after the outputs are uploaded. So a gap is purely the control plane's wait.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import msgspec

from shared.jobs import JobRecord, JobState


@dataclass(frozen=True)
class Span:
    """One attempt's run on a node."""

    node: str
    start: float
    end: float
    type: str
    games: int


def spans(records: Iterable[JobRecord], since: float = 0.0) -> list[Span]:
    """The finished runs of ``records`` that started after ``since``."""
    found = []
    for rec in records:
        if rec.started_at is None or rec.finished_at is None or not rec.node_id:
            continue
        if rec.started_at < since or rec.state is JobState.CANCELLED:
            continue
        games = 0
        if rec.state is JobState.COMPLETED and rec.result is not None:
            value = rec.result.result.get("games", 0)
            games = int(value) if isinstance(value, int | float) else 0
        found.append(Span(rec.node_id, rec.started_at, rec.finished_at, rec.spec.type, games))
    return found


def gaps(runs: Sequence[Span], slots: int = 1) -> list[float]:
    """Idle gaps on one node of ``slots`` slots, in seconds.

    Each run goes to the slot that freed first (greedy, by start time); a run that
    starts before that slot's last run ended overlaps it (the agent starts the next
    process while the last one's outputs upload) and counts as a gap of 0.
    """
    free_at: list[float] = []  # a heap: when each slot in use freed
    out = []
    for run in sorted(runs, key=lambda r: r.start):
        if len(free_at) >= slots:
            out.append(max(0.0, run.start - heapq.heappop(free_at)))
        heapq.heappush(free_at, run.end)
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


@dataclass(frozen=True)
class Summary:
    """Figures of a set of runs."""

    jobs: int
    selfplay_jobs: int
    selfplay_run_s_p50: float
    gap_s_p50: float
    gap_s_p90: float
    gap_s_p99: float
    busy_share: float
    games: int
    games_per_s: float
    span_s: float


def summarize(runs: Sequence[Span], slots: int = 1) -> Summary:
    """Gaps over every node, busy share per slot, games per second over the span."""
    if not runs:
        nan = float("nan")
        return Summary(0, 0, nan, nan, nan, nan, nan, 0, nan, 0.0)
    by_node: dict[str, list[Span]] = {}
    for run in runs:
        by_node.setdefault(run.node, []).append(run)
    all_gaps = [g for node_runs in by_node.values() for g in gaps(node_runs, slots)]
    first, last = min(r.start for r in runs), max(r.end for r in runs)
    span = max(last - first, 1e-9)
    selfplay = [r for r in runs if r.type == "selfplay"]
    games = sum(r.games for r in selfplay)
    busy = sum(r.end - r.start for r in runs) / (span * slots * len(by_node))
    return Summary(
        jobs=len(runs),
        selfplay_jobs=len(selfplay),
        selfplay_run_s_p50=statistics.median(r.end - r.start for r in selfplay) if selfplay else 0,
        gap_s_p50=percentile(all_gaps, 0.5),
        gap_s_p90=percentile(all_gaps, 0.9),
        gap_s_p99=percentile(all_gaps, 0.99),
        busy_share=busy,
        games=games,
        games_per_s=games / span,
        span_s=span,
    )


async def agent_views(url: str, prefix: str, agents: int) -> list[dict[str, Any]]:
    """Each supervised agent's own measures (``node_agent-<i>``): slot gaps, utilization."""
    from shared.bus import connect
    from shared.subjects import Subjects

    nc = await connect(url, name="bench-agents")
    views = []
    try:
        for i in range(agents):
            subject = Subjects(prefix).ctl("node_agent", f"node_agent-{i}")
            reply = await nc.request(subject, json.dumps({"command": "health"}).encode(), 5)
            details = json.loads(reply.data)["health"]["details"]
            views.append({"slot_gaps": details["slot_gaps"], "utilization": details["utilization"]})
    finally:
        await nc.drain()
    return views


async def read_records(url: str, prefix: str) -> list[JobRecord]:
    """Every job record of the cluster at ``url``."""
    from shared.bus import connect
    from shared.kv import read_all
    from shared.subjects import Subjects

    nc = await connect(url, name="bench-gaps")
    try:
        kv = await nc.jetstream().key_value(Subjects(prefix).bucket("jobs"))
        raw = await read_all(kv, timeout=30.0)
    finally:
        await nc.drain()
    decoder = msgspec.json.Decoder(JobRecord)
    # Idempotency keys share the bucket with the records; they are not jobs.
    return [decoder.decode(v) for key, (v, _) in raw.items() if not key.startswith("idem-") and v]


def main(argv: Sequence[str] | None = None) -> int:
    """Read, summarize, print."""
    parser = argparse.ArgumentParser(prog="python -m bench.gaps", description=__doc__)
    parser.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    parser.add_argument("--prefix", default="ringmaster")
    parser.add_argument("--since", type=float, default=0.0, help="only runs started after")
    parser.add_argument("--slots", type=int, default=1, help="slots per node")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    records = asyncio.run(read_records(args.nats_url, args.prefix))
    summary = summarize(spans(records, args.since), args.slots)
    if args.json:
        print(json.dumps(asdict(summary)))
    else:
        for name, value in asdict(summary).items():
            print(f"{name}: {value:.3f}" if isinstance(value, float) else f"{name}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
