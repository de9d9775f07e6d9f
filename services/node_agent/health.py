"""The node agent's health: DEGRADED below a safety floor; details for operators.

Details show the running jobs with their progress, the floors' state, the job counters
(run, completed, failed, killed, handed back) and the invalid progress lines seen.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from shared.contracts import HealthCheckResult

if TYPE_CHECKING:
    from services.node_agent.service import NodeAgentService

#: Running jobs listed in health details at most (a hollow agent may hold thousands).
MAX_LISTED = 50


def _running(agent: NodeAgentService) -> tuple[int, list[dict[str, Any]]]:
    count, listed = 0, []
    if agent.real is not None:
        count = len(agent.real.running)
        listed = [job.view() for job in list(agent.real.running.values())[:MAX_LISTED]]
    for node in agent.hollow_nodes:
        count += len(node.running)
        for job in list(node.running.values())[: max(0, MAX_LISTED - len(listed))]:
            d = job.dispatch
            listed.append({"job_id": d.job_id, "attempt": d.attempt, "node_id": node.node_id})
    return count, listed


def agent_health(agent: NodeAgentService) -> HealthCheckResult:
    """The agent's own view of its health."""
    cfg, sample, floors = agent.config, agent.sample, agent.floors
    count, listed = _running(agent)
    free = sum(node.free() for node in agent.nodes)
    details: dict[str, Any] = {
        "node_id": agent.node_id,
        "hollow": len(agent.hollow_nodes),
        # What it runs: its declared commands, and `shell` only where enabled.
        "job_types": cfg.job_types,
        "running_jobs": count,
        "running": listed,
        "slots": cfg.capacity * len(agent.nodes),
        "free_slots": free,
        "floors": {
            "accepting": floors.accepting,
            "reason": floors.reason,
            "disk_free_mb": sample.disk_free_mb,
            "min_free_disk_mb": cfg.min_free_disk_mb,
            "memory_available_mb": sample.memory_available_mb,
            "min_memory_mb": cfg.min_memory_mb,
            "max_jobs": cfg.max_jobs,
        },
        "not_taking": agent.not_taking(),
        "jobs": agent.stats.as_dict(),
        "slot_gaps": agent.real.gaps.view() if agent.real is not None else {},
        # Output uploads by outcome (stored, sealed, duplicates, duplicate_chunks_left).
        "uploads": dict(agent.real.runner.blobs.counts) if agent.real is not None else {},
        "utilization": _utilization(agent),
        "gpus": _gpus(agent),
        "sample_errors": list(sample.errors),
    }
    if not floors.accepting:
        return HealthCheckResult.degraded(f"taking no work: {floors.reason}", **details)
    return HealthCheckResult.ok(f"{count} jobs running, {free} slots free", **details)


def _gpus(agent: NodeAgentService) -> dict[str, Any]:
    """GPU inventory and assignment: free devices, who holds which, refusals, waits."""
    inventory = agent.sample.gpus
    found: dict[str, Any] = {
        "source": agent.probe.gpus.source if agent.probe else "none",
        "count": len(inventory),
    }
    gates = [node.gate for node in agent.nodes]
    if agent.real is not None:
        found.update(agent.real.gpus.view(inventory))
    else:  # hollow nodes: sums only (there may be thousands)
        found["free"] = sum(g.gpus.free_count(inventory) for g in gates)
        found["refused"] = sum(g.gpus.refused for g in gates)
        found["waited"] = sum(g.gpus.waited for g in gates)
    found["waiting"] = [f"{g.parked[1].job_id}-{g.parked[1].attempt}" for g in gates if g.parked][
        :MAX_LISTED
    ]
    return found


def agent_metrics(agent: NodeAgentService) -> dict[str, float]:
    """Numbers for the metrics endpoint."""
    stats = agent.stats
    count, _ = _running(agent)
    return {
        "running_jobs": count,
        "jobs_run_total": stats.run,
        "jobs_completed_total": stats.completed,
        "jobs_failed_total": stats.failed,
        "jobs_killed_total": stats.killed,
        "jobs_handed_back_total": stats.handed_back,
        "invalid_progress_lines_total": stats.invalid_progress_lines,
        "reports_lost_total": stats.reports_lost,
        "gpus_free": float(sum(n.gate.gpus.free_count(agent.sample.gpus) for n in agent.nodes)),
        "gpu_refused_total": float(sum(n.gate.gpus.refused for n in agent.nodes)),
        "accepting": float(agent.floors.accepting),
        "utilization": _utilization(agent),
        **_gap_metrics(agent),
    }


def _utilization(agent: NodeAgentService) -> float:
    """The real node's busy share over the last minute (0 for hollow agents)."""
    if agent.real is None:
        return 0.0
    return round(agent.real.utilization.share(agent.config.capacity, time.monotonic()), 4)


def _gap_metrics(agent: NodeAgentService) -> dict[str, float]:
    if agent.real is None:
        return {}
    view = agent.real.gaps.view()
    found = {"slot_gaps": float(view["count"] or 0)}
    for key in ("p50_ms", "p99_ms"):
        value = view[key]
        if value is not None:
            found[f"slot_gap_{key}"] = float(value)
    return found
