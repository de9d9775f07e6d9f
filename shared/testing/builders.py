"""Builders of valid messages for tests: one place that knows every required field.

A test names only the fields it is about; everything else gets a plausible default,
so a new required field in a contract changes this file, not thirty tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shared.jobs import GpuInfo, JobRecord, JobReport, JobResult, NodeInfo


def gpu_list(names: tuple[str, ...], memory_mb: int = 16_000) -> list[GpuInfo]:
    """GpuInfo entries indexed in order, one per model name."""
    return [GpuInfo(index=i, name=name, memory_total_mb=memory_mb) for i, name in enumerate(names)]


def node_info(
    node_id: str, *, gpus: tuple[str, ...] = (), gpu_memory_mb: int = 16_000, **fields: Any
) -> NodeInfo:
    """A healthy 4-slot CPU node, all slots free; ``fields`` override any NodeInfo field."""
    values: dict[str, Any] = {
        "hostname": node_id,
        "version": "test",
        "capabilities": ["cpu"],
        "slots": 4,
        "free_slots": 4,
        "cpu_count": 4,
        "load_1m": 0.0,
        "memory_total_mb": 16_000,
        "memory_available_mb": 8_000,
        "disk_free_mb": 100_000,
        "gpus": gpu_list(gpus, gpu_memory_mb),
    }
    values.update(fields)
    return NodeInfo(node_id=node_id, **values)


#: The cluster-file table of two local node agents that run the m,n,k workload, one
#: slot each: the tail of every test or chaos cluster that trains.
MNK_AGENTS = """[services.node_agent]
instances = 2
[services.node_agent.config]
capabilities = ["selfplay", "train", "evaluate", "prefetch"]
slots = 1
min_free_disk_mb = 1
min_memory_mb = 1
[services.node_agent.config.commands]
selfplay = ["{python}", "-m", "workloads.mnk", "selfplay"]
train = ["{python}", "-m", "workloads.mnk", "train"]
evaluate = ["{python}", "-m", "workloads.mnk", "evaluate"]
prefetch = ["{python}", "-m", "workloads.mnk", "prefetch"]
"""


def report_of(rec: JobRecord, phase: str, node: str, age: int = 0, ghost: int = 0) -> JobReport:
    """A report on ``rec``'s attempt ``age`` back, with a fencing ``ghost`` further back."""
    return JobReport(
        job_id=rec.job_id,
        attempt=rec.attempt - age,
        fencing=rec.fencing - age - ghost,
        node_id=node,
        phase=phase,
        progress=0.5,
        error="boom" if phase == "failed" else "",
        result=JobResult(exit_code=0) if phase == "completed" else None,
    )


def shell_agent(work_dir: Path, node_id: str, **overrides: Any) -> dict[str, Any]:
    """The settings of a node agent that runs shell jobs anywhere (no disk or memory floor)."""
    values: dict[str, Any] = {
        "node_id": node_id,
        "work_dir": str(work_dir),
        "capabilities": ["shell"],
        "min_free_disk_mb": 1,
        "min_memory_mb": 1,
    }
    return values | overrides
