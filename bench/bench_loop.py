"""Loop efficiency: selfplay games per second through the whole cluster beside bare play.

The cluster is ``ringmaster up`` on a cluster file of its own (fresh ports and data):
every manager but the training coordinator (so every slot plays the one game
measured, and nothing but selfplay competes for the cores) and one node agent per core,
each with one slot, running the reference workload. After a warm-up (the scheduler
learns the job size from its first jobs) the games of every selfplay job are counted
over the measured span, each job pro rata to its overlap with the span.

The raw limit is the same workload with no control plane, on the same cores in the
same run: one ``python -m workloads.mnk selfplay`` per core, started at once, each
playing as many games as a cluster job of the learned size, timed from spawn to exit.

Slot idle gap: each agent's own measure (a job's process ending to the next one's
starting, while the next dispatch was held), the worse agent's p50 and p99. Over the
measured span the CPU is read from /proc as ``bench.busy`` does: cores busy and the
control plane's share of the busy CPU.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import anyio

from bench import busy, gaps
from bench.harness import Ctx, Row
from shared.embedded import free_port

NAME = "loop"
PREFIX = "benchloop"
GAME = "5x5k4"
TARGET_JOB_S = 10.0
WARMUP_S = 45.0
MEASURE_S = 90.0
GOAL_RATIO = 0.85
GOAL_GAP_P50_MS = 50.0
GOAL_GAP_P99_MS = 250.0


def cluster_toml(data_dir: Path, nats_port: int, http_port: int, agents: int) -> str:
    """Every manager but training, ``agents`` one-slot agents playing ``GAME``."""
    return f"""[cluster]
prefix = "{PREFIX}"
data_dir = "{data_dir}"
nats_port = {nats_port}
http_port = {http_port}

[services.state_manager]
[services.loop_manager]
[services.status_metrics_collector]
[services.status_metrics_collector.config]
prometheus_port = 0
[services.node_selector]
[services.job_manager]
[services.sync_planner]
[services.selfplay_scheduler]
[services.selfplay_scheduler.config]
games = ["{GAME}"]
target_job_s = {TARGET_JOB_S}

[services.node_agent]
instances = {agents}
[services.node_agent.config]
capabilities = ["selfplay", "prefetch"]
slots = 1
[services.node_agent.config.commands]
selfplay = ["{{python}}", "-m", "workloads.mnk", "selfplay"]
prefetch = ["{{python}}", "-m", "workloads.mnk", "prefetch"]
"""


def pro_rata_games(runs: list[gaps.Span], start: float, end: float) -> float:
    """Games played inside ``[start, end]``: each job's games times its overlap share."""
    total = 0.0
    for run in runs:
        length = run.end - run.start
        overlap = min(run.end, end) - max(run.start, start)
        if run.type == "selfplay" and length > 0 and overlap > 0:
            total += run.games * overlap / length
    return total


async def _cluster(ctx: Ctx, agents: int) -> tuple[float, float, list[dict[str, Any]], busy.Busy]:
    """Run the cluster; games per second over the span, the job size, gaps, CPU use."""
    nats_port, http_port = free_port(), free_port()
    cluster = ctx.path("cluster.toml")
    cluster.write_text(cluster_toml(ctx.dir / "data", nats_port, http_port, agents))
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    up = ctx.python("up", ["-m", "shared.cli", "up", "--no-live", "--cluster", str(cluster)], env)
    try:
        await anyio.sleep(WARMUP_S)
        if not up.alive():
            raise RuntimeError(f"the cluster stopped during the warm-up:\n{up.tail()}")
        first, start = busy.snapshot(up.pid), time.time()
        await anyio.sleep(MEASURE_S)
        last, end = busy.snapshot(up.pid), time.time()
        url = f"nats://127.0.0.1:{nats_port}"
        records = await gaps.read_records(url, PREFIX)
        agent_gaps = [v["slot_gaps"] for v in await gaps.agent_views(url, PREFIX, agents)]
    finally:
        up.stop(timeout=30)
    runs = gaps.spans(records)
    played = pro_rata_games(runs, start, end)
    sizes = [r.games for r in runs if r.type == "selfplay" and r.start >= start]
    size = float(max(sizes)) if sizes else 0.0
    return played / (end - start), size, agent_gaps, busy.between(first, last, os.cpu_count() or 1)


def _bare(ctx: Ctx, workers: int, games: int) -> float:
    """Games per second of ``workers`` bare selfplay processes of ``games`` games each."""
    procs = []
    start = time.monotonic()
    for i in range(workers):
        job = ctx.dir / f"bare-{i}"
        (job / "in").mkdir(parents=True)
        (job / "out").mkdir()
        env = {
            "RINGMASTER_JOB_ARGS": json.dumps({"game": GAME, "games": games, "seed": 7 + i}),
            "RINGMASTER_INPUTS_DIR": str(job / "in"),
            "RINGMASTER_OUTPUTS_DIR": str(job / "out"),
            "RINGMASTER_JOB_ID": f"bare-{i}",
            "RINGMASTER_JOB_ATTEMPT": "1",
        }
        procs.append(ctx.python(f"bare-{i}", ["-m", "workloads.mnk", "selfplay"], env))
    for proc in procs:
        code = proc.popen.wait(timeout=600)
        if code != 0:
            raise RuntimeError(f"bare selfplay exited {code}:\n{proc.tail()}")
    elapsed = time.monotonic() - start
    played = 0
    for i in range(workers):
        result = json.loads((ctx.dir / f"bare-{i}" / "out" / "result.json").read_text())
        played += int(result["games"])
    return played / elapsed


def run(ctx: Ctx) -> list[Row]:
    """Cluster first (it learns the job size), then bare play of that size per core."""
    agents = os.cpu_count() or 1
    rate, size, agent_gaps, cpu = anyio.run(_cluster, ctx, agents)
    if size <= 0:
        raise RuntimeError("no selfplay job ran in the measured span")
    raw = _bare(ctx, agents, int(size))
    p50 = max(float(v["p50_ms"] or 0.0) for v in agent_gaps)
    p99 = max(float(v["p99_ms"] or 0.0) for v in agent_gaps)
    counted = sum(int(v["count"]) for v in agent_gaps)
    notes = [f"{GAME}, {agents} one-slot agents, jobs of {size:.0f} games (~{TARGET_JOB_S:g} s)"]
    ctx.context("loop_cores_busy", "cores busy while the loop ran", 100 * cpu.busy_share, "%")
    ctx.context(
        "loop_control_share",
        "control plane's share of the busy CPU",
        100 * cpu.control_share_of_busy,
        "%",
    )
    ctx.context(
        "loop_other_cores", "CPU of processes outside the cluster", cpu.other_cores, "cores"
    )
    return [
        Row("loop_efficiency", "selfplay games/s through the cluster", rate, "games/s", raw,
            "bare selfplay, one process per core", GOAL_RATIO * raw, True, notes),
        Row("slot_gap_p50", "slot idle gap p50 (work queued)", p50, "ms", None,
            f"{counted} gaps on {agents} agents", GOAL_GAP_P50_MS, False),
        Row("slot_gap_p99", "slot idle gap p99 (work queued)", p99, "ms", None,
            f"{counted} gaps on {agents} agents", GOAL_GAP_P99_MS, False),
    ]  # fmt: skip
