"""How the node selector ranks nodes for a requirement: pure functions, no I/O.

A node is a candidate when it is alive, not in the unhealthy overlay, not excluded,
accepting, has a free slot, serves the capability, has a GPU if one is needed, enough
available memory, and is the pinned node if the requirement names one. Candidates are
ordered by :func:`rank_key`, smallest first:

1. GPU power (:func:`node_gpu_power`: the best GPU's entry in the power table):
   strongest first for GPU work; weakest first for other work, so CPU jobs fill the
   nodes without GPUs and leave the GPU nodes for GPU work;
2. free slot ratio, highest first;
3. load per CPU (``load_1m / cpu_count``), lowest first;
4. node id, so that equal nodes rank the same way every time.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from functools import lru_cache

import msgspec

from shared.jobs import NodeInfo, Requirements, SelectRequest

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


def matches(candidate: Candidate, requirement: Requirements, exclude: Collection[str]) -> bool:
    """Whether the node can take a job with ``requirement`` now."""
    info = candidate.info
    return (
        candidate.alive
        and not candidate.unhealthy
        and info.node_id not in exclude
        and (not requirement.node_id or info.node_id == requirement.node_id)
        and info.accepting
        and info.free_slots > 0
        and requirement.capability in info.capabilities
        and (not requirement.gpu or bool(info.gpus))
        and info.memory_available_mb >= requirement.min_memory_mb
    )


def rank_key(
    info: NodeInfo, requirement: Requirements, power: float, pending: int = 0
) -> tuple[float, float, float, str]:
    """The sort key of a candidate (smaller is better); see the module docstring.

    ``pending`` picks count against the node's free slots until its next NodeInfo, so
    a burst of selections between two reports spreads over equal nodes.
    """
    free = max(info.free_slots - pending, 0)
    free_ratio = free / info.slots if info.slots > 0 else 0.0
    load_per_cpu = info.load_1m / max(info.cpu_count, 1)
    return (-power if requirement.gpu else power, -free_ratio, load_per_cpu, info.node_id)


def rank(
    candidates: Iterable[Candidate],
    request: SelectRequest,
    table: Mapping[str, float] = DEFAULT_GPU_POWER,
    default_power: float = DEFAULT_UNKNOWN_GPU_POWER,
) -> list[str]:
    """The ids of the best ``request.count`` matching nodes, best first."""
    exclude = frozenset(request.exclude)
    keyed = [
        (
            rank_key(
                c.info,
                request.requirement,
                node_gpu_power(c.info, table, default_power),
                c.pending,
            ),
            c,
        )
        for c in candidates
        if matches(c, request.requirement, exclude)
    ]
    keyed.sort(key=lambda pair: pair[0])
    return [c.info.node_id for _, c in keyed[: request.count]]


def merged_power_table(overrides: Mapping[str, float]) -> dict[str, float]:
    """The default table with the configured entries added or replacing defaults."""
    return {**DEFAULT_GPU_POWER, **overrides}
