"""The 10-minute outcome of ``make run``: cores busy, slot gaps, games, generations, Elo.

``python -m bench.ten_minutes [--seconds 600] [--warmup 30] [--measure 180]`` starts
``ringmaster up`` on the repository's ``ringmaster.toml`` (what ``make run`` runs) with
a fresh data directory, then:

- reads /proc over ``--measure`` seconds after ``--warmup`` (``bench.busy``): cores
  busy and the control plane's share of the busy CPU;
- at ``--seconds``, reads the job records (``bench.gaps``: games per game, record
  gaps), every node agent's own slot gaps and utilization, and the champions with
  their Elo per generation (the models bucket);
- stops the cluster (SIGINT, as Ctrl-C) and leaves its data directory for
  ``python -m bench.mnk_strength --data-dir DIR``, which it runs last.

Prints Markdown for bench/RESULTS.md. Run it on a quiet machine: cores busy counts
every process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nats

from bench import busy, gaps
from bench.harness import ROOT
from shared.cluster import load_cluster
from shared.jobs import JobState
from shared.kv import read_all
from shared.subjects import Subjects

PREFIX = "ringmaster"
URL = "nats://127.0.0.1:4222"


async def _champions() -> list[dict[str, Any]]:
    nc = await nats.connect(URL)
    try:
        kv = await nc.jetstream().key_value(Subjects(PREFIX).bucket("models"))
        values = await read_all(kv, timeout=30.0)
    finally:
        await nc.close()
    rows = []
    for key, (value, _) in values.items():
        record = json.loads(value)
        if key.startswith("model.") and record.get("status") in ("champion", "archived"):
            rows.append(record)
    return sorted(rows, key=lambda r: (r.get("game", ""), r.get("generation", 0)))


def _agent_count() -> int:
    """Node agents ``ringmaster.toml`` runs (what ``make run`` starts)."""
    entry = load_cluster(ROOT / "ringmaster.toml").services.get("node_agent")
    return entry.instances if entry is not None else 0


def _games(records: list[Any]) -> Counter[str]:
    games: Counter[str] = Counter()
    for rec in records:
        if rec.spec.type == "selfplay" and rec.state is JobState.COMPLETED and rec.result:
            value = rec.result.result.get("games", 0)
            games[rec.spec.args.get("game", "?")] += int(value)
    return games


def main(argv: Sequence[str] | None = None) -> int:
    """Run, measure, stop, measure strength; print Markdown."""
    parser = argparse.ArgumentParser(prog="python -m bench.ten_minutes", description=__doc__)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--warmup", type=float, default=30.0)
    parser.add_argument("--measure", type=float, default=180.0)
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".ringmaster")
    args = parser.parse_args(argv)
    if args.warmup + args.measure > args.seconds:
        parser.error("--warmup + --measure must fit in --seconds")
    if args.data_dir.exists():
        parser.error(f"{args.data_dir} exists: move it away for a run from an empty store")
    up = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "up", "--no-live"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    started = time.monotonic()
    try:
        cpu = busy.measure(up.pid, args.warmup, args.measure)
        time.sleep(max(0.0, args.seconds - (time.monotonic() - started)))
        records = asyncio.run(gaps.read_records(URL, PREFIX))
        agents = asyncio.run(gaps.agent_views(URL, PREFIX, _agent_count()))
        champions = asyncio.run(_champions())
    finally:
        os.killpg(up.pid, signal.SIGINT)
        up.wait(timeout=120)
    summary = gaps.summarize(gaps.spans(records))
    print(f"## `make run`, {args.seconds:.0f} s from an empty store\n")
    for line in busy.report(cpu):
        print(f"- {line}")
    print(f"- jobs finished: {summary.jobs} ({summary.selfplay_jobs} selfplay)")
    print(f"- selfplay job run p50: {summary.selfplay_run_s_p50:.1f} s")
    print(f"- games per game: {dict(_games(records))}")
    for i, view in enumerate(agents):
        print(f"- node_agent-{i}: slot gaps {view['slot_gaps']}, busy {view['utilization']}")
    print("\n| game | generation | model | Elo |\n|---|---|---|---|")
    for c in champions:
        print(f"| {c.get('game')} | {c.get('generation')} | {c.get('model_id', '')[:12]} "
              f"| {c.get('elo', 0):.0f} |")  # fmt: skip
    sys.stdout.flush()
    strength = [sys.executable, "-m", "bench.mnk_strength", "--data-dir", str(args.data_dir)]
    return subprocess.call(strength, cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main())
