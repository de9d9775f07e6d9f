"""How the node selector ranks nodes for a requirement: pure functions, no I/O.

A node is a candidate when it is alive, not in the unhealthy overlay, not excluded,
accepting, has a free slot, serves the capability, has enough available memory, is
the pinned node if the requirement names one, and, for GPU work, has at least
``requirement.gpu_count`` free GPUs (no job holds them, per its NodeInfo) each with
``gpu_memory_mb`` or more, after the GPUs of the picks handed out since its last
NodeInfo are counted as taken. Candidates are ordered by :func:`rank_key`, smallest
first:

1. GPU power: for GPU work the best fitting free GPU's entry in the power table,
   strongest first; for other work the node's best GPU (:func:`node_gpu_power`),
   weakest first, so CPU jobs fill the nodes without GPUs and leave GPUs to GPU work;
2. for GPU work, free fitting GPUs, most first (jobs spread over GPU nodes as they do
   over slots), then the largest free fitting GPU's memory, most first;
3. free slot ratio after the picks since the last NodeInfo, highest first (below
   zero when more were picked than were free);
4. load per CPU (``load_1m / cpu_count``), lowest first;
5. node id, so that equal nodes rank the same way every time.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from functools import lru_cache

import msgspec

from shared.jobs import GpuInfo, NodeInfo, Requirements, SelectRequest, free_gpus

#: Relative power of common GPUs (A100 = 1.0). Matched against NVML names such as
#: "NVIDIA A100-SXM4-80GB" by whole words, case-insensitive, the longest entry winning.
DEFAULT_GPU_POWER: dict[str, float] = {
    "B200": 4.0,
    "H200": 3.5,
    "GH200": 3.2,
    "H100": 3.0,
    "L40S": 1.2,
    "A100": 1.0,
    "RTX 4090": 1.0,
    "L40": 0.9,
    "RTX 4080": 0.7,
    "A6000": 0.55,
    "RTX 3090": 0.45,
    "A10G": 0.4,
    "A10": 0.4,
    "L4": 0.4,
    "V100": 0.4,
    "T4": 0.2,
    "P100": 0.15,
}
#: The power of a GPU whose name matches no entry.
DEFAULT_UNKNOWN_GPU_POWER = 0.25


class Candidate(msgspec.Struct, frozen=True, kw_only=True):
    """A node and what the live view and the overlay say about it."""

    info: NodeInfo
    alive: bool = True
    unhealthy: bool = False
    #: Picks handed out since the node's NodeInfo last reported its free slots.
    pending: int = 0
    #: GPUs those picks asked for (taken, as far as the selector knows).
    pending_gpus: int = 0


@lru_cache(maxsize=1024)
def _pattern(name: str) -> re.Pattern[str]:
    # Whole words only: "A10" must not match "A100", nor "L4" "L40S".
    return re.compile(rf"(?<![a-z0-9]){re.escape(name.lower())}(?![a-z0-9])")


def gpu_power(name: str, table: Mapping[str, float], default: float) -> float:
    """The table's power for a GPU name (the longest matching entry), else ``default``."""
    lowered = name.lower()
    best: tuple[int, float] | None = None
    for key, power in table.items():
        if _pattern(key).search(lowered) and (best is None or len(key) > best[0]):
            best = (len(key), power)
    return best[1] if best is not None else default


def node_gpu_power(info: NodeInfo, table: Mapping[str, float], default: float) -> float:
    """The power of a node's best GPU; 0.0 for a node without GPUs."""
    return max((gpu_power(g.name, table, default) for g in info.gpus), default=0.0)


def fitting_gpus(candidate: Candidate, requirement: Requirements) -> list[GpuInfo]:
    """The node's free GPUs big enough for ``requirement``, less those of pending picks."""
    fit = free_gpus(candidate.info, requirement.gpu_memory_mb)
    return fit[: max(0, len(fit) - candidate.pending_gpus)]


def matches(candidate: Candidate, requirement: Requirements, exclude: Collection[str]) -> bool:
    """Whether the node can take a job with ``requirement`` now."""
    info = candidate.info
    need = requirement.gpu_count
    return (
        candidate.alive
        and not candidate.unhealthy
        and info.node_id not in exclude
        and (not requirement.node_id or info.node_id == requirement.node_id)
        and info.accepting
        and info.free_slots > 0
        and requirement.capability in info.capabilities
        and (need == 0 or len(fitting_gpus(candidate, requirement)) >= need)
        and info.memory_available_mb >= requirement.min_memory_mb
    )


RankKey = tuple[float, float, float, float, float, str]


def rank_key(
    info: NodeInfo,
    requirement: Requirements,
    power: float,
    pending: int = 0,
    fitting: Collection[GpuInfo] = (),
) -> RankKey:
    """The sort key of a candidate (smaller is better); see the module docstring.

    ``pending`` picks count against the node's free slots until its next NodeInfo, so
    a burst of selections between two reports spreads over equal nodes. The count may
    go below zero: picks beyond a node's free slots wait in its pool, and the node with
    the fewest waiting per slot ranks first. Clamped at zero, every node would tie once
    its free slots were picked, and the whole rest of a burst would queue on the node
    whose id sorts first. ``fitting``: the free GPUs that fit a GPU requirement
    (:func:`fitting_gpus`).
    """
    free = info.free_slots - pending
    free_ratio = free / info.slots if info.slots > 0 else 0.0
    load_per_cpu = info.load_1m / max(info.cpu_count, 1)
    if requirement.gpu_count == 0:
        return (power, 0.0, 0.0, -free_ratio, load_per_cpu, info.node_id)
    memory = max((g.memory_total_mb for g in fitting), default=0)
    return (-power, -len(fitting), -memory, -free_ratio, load_per_cpu, info.node_id)


def candidate_key(
    c: Candidate, requirement: Requirements, table: Mapping[str, float], default: float
) -> RankKey:
    """:func:`rank_key` of a candidate, its power and fitting GPUs worked out."""
    if requirement.gpu_count == 0:
        return rank_key(c.info, requirement, node_gpu_power(c.info, table, default), c.pending)
    fitting = fitting_gpus(c, requirement)
    power = max((gpu_power(g.name, table, default) for g in fitting), default=0.0)
    return rank_key(c.info, requirement, power, c.pending, fitting)


def rank(
    candidates: Iterable[Candidate],
    request: SelectRequest,
    table: Mapping[str, float] = DEFAULT_GPU_POWER,
    default_power: float = DEFAULT_UNKNOWN_GPU_POWER,
) -> list[str]:
    """The ids of the best ``request.count`` matching nodes, best first."""
    exclude = frozenset(request.exclude)
    req = request.requirement
    keyed = [
        (candidate_key(c, req, table, default_power), c)
        for c in candidates
        if matches(c, req, exclude)
    ]
    keyed.sort(key=lambda pair: pair[0])
    return [c.info.node_id for _, c in keyed[: request.count]]


def merged_power_table(overrides: Mapping[str, float]) -> dict[str, float]:
    """The default table with the configured entries added or replacing defaults."""
    return {**DEFAULT_GPU_POWER, **overrides}
