"""The scaling benchmark's results: its data points, how each cost grows, the plot.

``bench_scaling`` measures the points; this module turns them into the lines of the
"Scaling" section of RESULTS.md and into ``bench/scaling.png`` (matplotlib, Agg).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

#: The paced round's rate, unless the cluster cannot take it (then half its throughput).
PACED_RATE = 50.0
#: Seconds a round may take before what is not done counts as stalled.
BUDGET_S = 45.0
PLOT = Path(__file__).resolve().parent / "scaling.png"


@dataclass
class NodePoint:
    """One hollow-node scale."""

    n: int
    rate: float
    paced_rate: float
    p50: float
    p99: float
    idle: dict[str, float]
    cpu_per_job: dict[str, float]
    rss: dict[str, float]
    #: Jobs of the throughput round not COMPLETED, and of the paced round not
    #: STARTED, within the time budget.
    unfinished: int = 0
    unstarted: int = 0


@dataclass
class FleetPoint:
    """One beaconing-instance scale."""

    n: int
    per_beacon_us: float
    core_share: float
    rss_mb: float
    ingested_rate: float
    sent_rate: float
    #: The orchestrator's CPU with no fleet, % of a core (not in per_beacon_us).
    idle_share: float


def slope(x0: float, x1: float, y0: float, y1: float) -> float:
    """Log-log slope between two points (0 flat, 1 linear); NaN when a value is not > 0."""
    if y0 <= 0 or y1 <= 0 or not (math.isfinite(y0) and math.isfinite(y1)):
        return float("nan")
    return math.log(y1 / y0) / math.log(x1 / x0)


def word(k: float) -> str:
    """Words for a log-log slope."""
    if math.isnan(k):
        return "n/a"
    if k < -0.15:
        return "falls"
    if k < 0.15:
        return "flat"
    if k < 0.8:
        return "sublinear"
    if k <= 1.2:
        return "linear"
    return "worse than linear"


def trend(xs: list[float], ys: list[float]) -> str:
    """How ``ys`` grows with ``xs``, step by step: "flat, then falls (slopes 0.02, -0.66)"."""
    ks = [slope(xs[i], xs[i + 1], ys[i], ys[i + 1]) for i in range(len(xs) - 1)]
    words: list[str] = []
    for k in ks:
        if not words or words[-1] != word(k):
            words.append(word(k))
    return f"{', then '.join(words)} (slopes {', '.join(f'{k:.2f}' for k in ks)})"


def plot(nodes: list[NodePoint], fleets: list[FleetPoint]) -> None:
    """The four panels of ``bench/scaling.png`` (Agg: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    xs = [p.n for p in nodes]
    ax = axes[0][0]
    ax.plot(xs, [p.rate for p in nodes], "o-", label="jobs/s (pooled, 64 in flight)")
    ax.set(xscale="log", xlabel="hollow nodes", ylabel="jobs/s", title="Job throughput")
    ax.legend()
    ax = axes[0][1]
    ax.plot(xs, [p.p50 * 1000 for p in nodes], "o-", label="p50")
    ax.plot(xs, [p.p99 * 1000 for p in nodes], "s-", label="p99")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="hollow nodes",
        ylabel="ms",
        title=f"Submit -> RUNNING at {PACED_RATE:g} jobs/s (or half the throughput)",
    )
    ax.legend()
    ax = axes[1][0]
    for name in ("job_manager", "node_selector", "orchestrator", "agent-hollow", "nats-server"):
        ax.plot(xs, [p.idle[name] for p in nodes], "o-", label=f"{name} idle CPU %")
    ax.plot(xs, [p.rss["job_manager"] for p in nodes], "k--", label="job_manager RSS MB")
    ax.plot(xs, [p.rss["orchestrator"] for p in nodes], "k:", label="orchestrator RSS MB")
    ax.set(xscale="log", yscale="log", xlabel="hollow nodes", title="Idle CPU (% of a core), RSS")
    ax.legend(fontsize=7)
    ax = axes[1][1]
    fx = [p.n for p in fleets]
    ax.plot(fx, [p.core_share for p in fleets], "o-", label="orchestrator CPU, % of a core")
    ax.plot(fx, [p.per_beacon_us for p in fleets], "s-", label="µs CPU per beacon (above idle)")
    ax.plot(fx, [p.rss_mb for p in fleets], "k--", label="orchestrator RSS MB")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="beaconing instances (1 s interval)",
        title="Orchestrator cost per instance count",
    )
    ax.legend(fontsize=7)
    fig.suptitle("Ringmaster scaling on this machine (see RESULTS.md for the load)")
    fig.tight_layout()
    fig.savefig(PLOT, dpi=90)
    plt.close(fig)


def summary(nodes: list[NodePoint], fleets: list[FleetPoint]) -> list[str]:
    """The lines of RESULTS.md's scaling section: the numbers and how each cost grows."""
    xs = [float(p.n) for p in nodes]
    lines = [
        "![scaling](scaling.png)",
        "",
        "| hollow nodes | jobs/s | submit -> RUNNING at | p50 | p99 | idle CPU % (job_manager, "
        "selector, orchestrator, agent, nats-server) | job_manager CPU ms/job | RSS MB "
        "(job_manager, orchestrator, agent) | jobs not done in the time budget |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in nodes:
        idle = ", ".join(
            f"{p.idle[k]:.0f}"
            for k in ("job_manager", "node_selector", "orchestrator", "agent-hollow", "nats-server")
        )
        rss = ", ".join(f"{p.rss[k]:.0f}" for k in ("job_manager", "orchestrator", "agent-hollow"))
        lines.append(
            f"| {p.n:,} | {p.rate:,.0f} | {p.paced_rate:g}/s | {p.p50 * 1000:.0f} ms | "
            f"{p.p99 * 1000:.0f} ms | {idle} | "
            f"{p.cpu_per_job['job_manager']:.2f} | {rss} | {p.unfinished} of the throughput "
            f"round, {p.unstarted} of the paced round |"
        )
    lines += [
        "",
        "| beaconing instances | orchestrator µs CPU per beacon (above idle) | % of a core "
        "(idle without the fleet) | RSS MB | "
        "ingested/s | sent/s |",
        "|---|---|---|---|---|---|",
    ]
    for f in fleets:
        lines.append(
            f"| {f.n:,} | {f.per_beacon_us:.1f} | {f.core_share:.1f} ({f.idle_share:.1f}) | "
            f"{f.rss_mb:.0f} | "
            f"{f.ingested_rate:,.0f} | {f.sent_rate:,.0f} |"
        )
    fx = [float(f.n) for f in fleets]
    idle_total = [sum(p.idle.values()) for p in nodes]
    lines += [
        "",
        "How each cost grows from one scale to the next (log-log slope of each step: 0 is "
        "flat, 1 linear):",
        "",
        f"- hollow nodes: jobs/s {trend(xs, [p.rate for p in nodes])}; p99 "
        f"{trend(xs, [p.p99 for p in nodes])}; idle CPU of all processes "
        f"{trend(xs, idle_total)}; agent idle CPU "
        f"{trend(xs, [p.idle['agent-hollow'] for p in nodes])}; job manager idle CPU "
        f"{trend(xs, [p.idle['job_manager'] for p in nodes])}; job manager RSS "
        f"{trend(xs, [p.rss['job_manager'] for p in nodes])}; agent RSS "
        f"{trend(xs, [p.rss['agent-hollow'] for p in nodes])}",
        "- beaconing instances: orchestrator CPU "
        + trend(fx, [f.core_share for f in fleets])
        + "; CPU per beacon "
        + trend(fx, [f.per_beacon_us for f in fleets])
        + "; RSS "
        + trend(fx, [f.rss_mb for f in fleets]),
    ]
    best = min(f.per_beacon_us for f in fleets)
    short = [f.n for f in fleets if f.ingested_rate < 0.95 * f.sent_rate]
    lines.append(
        f"- one orchestrator core at the best CPU per beacon measured ({best:.1f} µs) takes "
        f"{1e6 / best:,.0f} beacons/s, that is {1e6 / best:,.0f} instances at a 1 s interval; "
        + (
            f"in this run it fell behind its publisher (ingested < 95 % of sent) at "
            f"{short[0]:,} instances"
            if short
            else "in this run it kept up with its publisher at every scale"
        )
    )
    idle_core = [p.n for p in nodes if sum(p.idle.values()) > 100]
    stalled = [p.n for p in nodes if p.unfinished or p.unstarted]
    agent_busy = [p.n for p in nodes if p.idle["agent-hollow"] > 50]
    parts = []
    first = nodes[0]
    for k, p in enumerate(nodes[1:], 1):
        peak = max(nodes[:k], key=lambda q: q.rate)
        why = []
        if p.rate < peak.rate / 2:
            why.append(f"throughput fell to {p.rate:,.0f}/s from {peak.rate:,.0f}/s at {peak.n:,}")
        if p.p50 > 5 * first.p50:
            why.append(
                f"the paced p50 rose to {p.p50 * 1000:,.0f} ms from {first.p50 * 1000:,.0f} ms "
                f"at {first.n:,}"
            )
        if why:
            parts.append(f"at {p.n:,} nodes " + " and ".join(why))
            break
    if stalled:
        parts.append(
            f"at {stalled[0]:,} nodes jobs did not finish within the {BUDGET_S:g} s budget of "
            "a round: this is where the job path stops scaling on this machine"
        )
    if agent_busy:
        parts.append(
            f"at {agent_busy[0]:,} nodes the one agent process simulating them needs more "
            "than half a core while idle (a NodeInfo per node per second and a pull kept "
            "waiting per pool), so part of the slowdown is the simulation's own process"
        )
    if idle_core:
        parts.append(f"at {idle_core[0]:,} nodes the idle cluster takes more than one core")
    lines.append(
        "- hollow nodes: "
        + ("; ".join(parts) if parts else "no stall and the idle cluster stays below one core")
    )
    return lines
