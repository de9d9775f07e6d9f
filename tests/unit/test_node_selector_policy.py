"""The node selector's pure parts: ranking, GPU power, the live view and the overlay."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.node_selector.policy import (
    DEFAULT_GPU_POWER,
    DEFAULT_UNKNOWN_GPU_POWER,
    Candidate,
    RankKey,
    candidate_key,
    gpu_power,
    matches,
    merged_power_table,
    node_gpu_power,
    rank,
    rank_key,
)
from services.node_selector.view import LiveView, UnhealthyOverlay
from shared.jobs import GpuInfo, NodeInfo, Requirements, SelectRequest
from shared.liveness import LivenessRule
from shared.testing.builders import node_info


def node(node_id: str, *, gpus: tuple[str, ...] = (), **fields: Any) -> NodeInfo:
    return node_info(node_id, gpus=gpus, **fields)


def ranked(
    *infos: NodeInfo, count: int = 10, exclude: tuple[str, ...] = (), **req: Any
) -> list[str]:
    request = SelectRequest(requirement=Requirements(**req), count=count, exclude=list(exclude))
    return rank([Candidate(info=i) for i in infos], request)


CPU_A = node("a", capabilities=["cpu", "selfplay"])
CPU_B = node("b", capabilities=["cpu"], free_slots=1)
T4 = node("t4", gpus=("Tesla T4",), capabilities=["cpu", "train"])
A100 = node("a100", gpus=("NVIDIA A100-SXM4-80GB",), capabilities=["cpu", "train"])
H100 = node("h100", gpus=("NVIDIA H100 80GB HBM3",), capabilities=["cpu", "train"])
FULL = node("full", free_slots=0)
CLOSED = node("closed", accepting=False)
SMALL = node("small", memory_available_mb=500)


@pytest.mark.parametrize(
    ("nodes", "kwargs", "expected"),
    [
        # capability filter
        ((CPU_A, CPU_B, T4), {"capability": "selfplay"}, ["a"]),
        ((CPU_A, CPU_B, T4), {"capability": "train"}, ["t4"]),
        ((CPU_A,), {"capability": "nope"}, []),
        # GPU filter and GPU power order (strongest first for GPU work)
        ((CPU_A, T4, A100, H100), {"capability": "train", "gpu": True}, ["h100", "a100", "t4"]),
        ((CPU_A, CPU_B), {"gpu": True}, []),
        # CPU work prefers the nodes without GPUs, then the weakest GPU
        ((H100, T4, CPU_A), {}, ["a", "t4", "h100"]),
        # memory filter
        ((CPU_A, SMALL), {"min_memory_mb": 1_000}, ["a"]),
        ((CPU_A, SMALL), {"min_memory_mb": 8_000}, ["a"]),
        ((CPU_A, SMALL), {"min_memory_mb": 8_001}, []),
        # no free slot, not accepting
        ((FULL, CLOSED, CPU_B), {}, ["b"]),
        # load order: free slot ratio, then load per CPU, then id
        ((CPU_B, CPU_A), {}, ["a", "b"]),
        ((node("x", load_1m=3.0), node("y", load_1m=1.0)), {}, ["y", "x"]),
        (
            (node("x", load_1m=4.0, cpu_count=8), node("y", load_1m=3.0, cpu_count=4)),
            {},
            ["x", "y"],
        ),
        ((node("y"), node("x")), {}, ["x", "y"]),
        # pinned node
        ((CPU_A, CPU_B), {"node_id": "b"}, ["b"]),
        ((CPU_A, FULL), {"node_id": "full"}, []),
    ],
)
def test_ranking(nodes: tuple[NodeInfo, ...], kwargs: dict[str, Any], expected: list[str]) -> None:
    assert ranked(*nodes, **kwargs) == expected


def test_exclude_and_count() -> None:
    nodes = (CPU_A, CPU_B, node("c", free_slots=3), node("d", free_slots=2))
    assert ranked(*nodes) == ["a", "c", "d", "b"]
    assert ranked(*nodes, count=2) == ["a", "c"]
    assert ranked(*nodes, count=2, exclude=("a", "d")) == ["c", "b"]
    assert ranked(*nodes, exclude=("a", "b", "c", "d")) == []


def test_dead_and_unhealthy_nodes_are_never_selected() -> None:
    candidates = [
        Candidate(info=CPU_A, alive=False),
        Candidate(info=CPU_B, unhealthy=True),
        Candidate(info=node("c")),
    ]
    assert rank(candidates, SelectRequest(count=5)) == ["c"]


@pytest.mark.parametrize(
    ("name", "power"),
    [
        ("NVIDIA A100-SXM4-80GB", DEFAULT_GPU_POWER["A100"]),
        ("NVIDIA A10G", DEFAULT_GPU_POWER["A10G"]),
        ("NVIDIA A10", DEFAULT_GPU_POWER["A10"]),
        ("NVIDIA GeForce RTX 4090", DEFAULT_GPU_POWER["RTX 4090"]),
        ("Tesla T4", DEFAULT_GPU_POWER["T4"]),
        ("NVIDIA L40S", DEFAULT_GPU_POWER["L40S"]),
        ("NVIDIA L4", DEFAULT_GPU_POWER["L4"]),
        ("nvidia h100 pcie", DEFAULT_GPU_POWER["H100"]),
        ("NVIDIA GH200 480GB", DEFAULT_GPU_POWER["GH200"]),
        ("Some Future GPU", DEFAULT_UNKNOWN_GPU_POWER),
    ],
)
def test_gpu_power_by_name(name: str, power: float) -> None:
    assert gpu_power(name, DEFAULT_GPU_POWER, DEFAULT_UNKNOWN_GPU_POWER) == power


def test_power_table_overrides_and_node_power() -> None:
    table = merged_power_table({"Future GPU": 9.0, "T4": 0.01})
    assert table["A100"] == DEFAULT_GPU_POWER["A100"] and table["T4"] == 0.01
    mixed = node("m", gpus=("Tesla T4", "Some Future GPU X"))
    assert node_gpu_power(mixed, table, 0.5) == 9.0
    assert node_gpu_power(CPU_A, table, 0.5) == 0.0
    # Unknown GPUs get the default, which orders them against known ones.
    unknown = node("u", gpus=("Mystery",))
    request = SelectRequest(requirement=Requirements(gpu=True), count=3)
    candidates = [Candidate(info=n) for n in (unknown, T4, A100)]
    assert rank(candidates, request, DEFAULT_GPU_POWER, 0.5) == ["a100", "u", "t4"]
    assert rank(candidates, request, DEFAULT_GPU_POWER, 0.0) == ["a100", "t4", "u"]


def gpu_node(node_id: str, free: int, *, total: int = 4, memory_mb: int = 40_960) -> NodeInfo:
    """An A100 node with ``total`` GPUs of which ``total - free`` are held by a job."""
    gpus = [
        GpuInfo(
            index=i,
            name="NVIDIA A100-SXM4-40GB",
            memory_total_mb=memory_mb,
            assigned_to="" if i < free else "other-1",
        )
        for i in range(total)
    ]
    return msgspec.structs.replace(node(node_id, capabilities=["cpu", "train"]), gpus=gpus)


def test_gpu_requirements_need_enough_free_gpus_and_rank_by_them() -> None:
    four, two, none_free = gpu_node("four", 4), gpu_node("two", 2), gpu_node("zero", 0)
    assert ranked(four, two, none_free, CPU_A, gpus=2) == ["four", "two"]
    assert ranked(four, two, none_free, CPU_A, gpus=3) == ["four"]
    assert ranked(four, two, none_free, gpus=5) == []  # no node has that many
    # The old boolean: at least one free GPU.
    assert ranked(two, none_free, CPU_A, gpu=True) == ["two"]
    # Memory per device: the 16 GB node cannot serve a 40 GB need, whatever its count.
    small = gpu_node("small", 4, memory_mb=16_000)
    assert ranked(small, two, gpus=1, gpu_memory_mb=40_000) == ["two"]
    assert ranked(small, two, gpus=2) == ["small", "two"]  # more free GPUs first
    # Bigger devices first among equal counts.
    big = gpu_node("big", 2, memory_mb=81_920)
    assert ranked(two, big, gpus=2) == ["big", "two"]
    # CPU work still goes to the nodes without GPUs first.
    assert ranked(four, CPU_A) == ["a", "four"]


def test_pending_gpu_picks_count_as_taken() -> None:
    request = SelectRequest(requirement=Requirements(gpus=2), count=2)
    fresh = [Candidate(info=gpu_node("x", 4)), Candidate(info=gpu_node("y", 2))]
    assert rank(fresh, request) == ["x", "y"]
    picked = [Candidate(info=gpu_node("x", 4), pending=1, pending_gpus=2), fresh[1]]
    # Two of x's GPUs are spoken for: equal GPU counts, and y has more free slots.
    assert rank(picked, request) == ["y", "x"]
    full = [Candidate(info=gpu_node("x", 4), pending=2, pending_gpus=4), fresh[1]]
    assert rank(full, request) == ["y"]
    assert rank_key(fresh[1].info, Requirements(), 0.0)[1:3] == (0.0, 0.0)


# -- hypothesis: the result is always a sorted subset of the matching nodes -----------

GPU_NAMES = st.sampled_from(["Tesla T4", "NVIDIA A100-SXM4-80GB", "NVIDIA H100", "Mystery"])


@st.composite
def candidates(draw: st.DrawFn) -> Candidate:
    slots = draw(st.integers(0, 8))
    info = node(
        draw(st.sampled_from("abcdefghij")),
        gpus=tuple(draw(st.lists(GPU_NAMES, max_size=2))),
        capabilities=draw(st.lists(st.sampled_from(["cpu", "train", "eval"]), max_size=3)),
        slots=slots,
        free_slots=draw(st.integers(0, slots)),
        cpu_count=draw(st.integers(1, 64)),
        load_1m=draw(st.floats(0, 64)),
        memory_available_mb=draw(st.integers(0, 10_000)),
        accepting=draw(st.booleans()),
    )
    return Candidate(info=info, alive=draw(st.booleans()), unhealthy=draw(st.booleans()))


REQUESTS = st.builds(
    SelectRequest,
    requirement=st.builds(
        Requirements,
        capability=st.sampled_from(["cpu", "train", "eval"]),
        gpu=st.booleans(),
        gpus=st.integers(0, 3),
        gpu_memory_mb=st.sampled_from([0, 16_000, 40_000]),
        min_memory_mb=st.integers(0, 10_000),
        node_id=st.sampled_from(["", "a", "b"]),
    ),
    count=st.integers(1, 12),
    exclude=st.lists(st.sampled_from("abcdefghij"), max_size=4),
)


@given(st.lists(candidates(), max_size=12, unique_by=lambda c: c.info.node_id), REQUESTS)
def test_rank_returns_matching_nodes_sorted_by_the_key(
    pool: list[Candidate], request: SelectRequest
) -> None:
    result = rank(pool, request)
    by_id = {c.info.node_id: c for c in pool}
    eligible = [c for c in pool if matches(c, request.requirement, request.exclude)]
    assert len(result) == min(request.count, len(eligible))
    assert len(set(result)) == len(result)
    assert not set(result) & set(request.exclude)
    for node_id in result:
        assert matches(by_id[node_id], request.requirement, request.exclude)

    def key(node_id: str) -> RankKey:
        return candidate_key(
            by_id[node_id], request.requirement, DEFAULT_GPU_POWER, DEFAULT_UNKNOWN_GPU_POWER
        )

    assert [key(n) for n in result] == sorted(key(n) for n in result)
    # Nothing left out ranks better than what was chosen.
    chosen = set(result)
    if result:
        worst = key(result[-1])
        assert all(key(c.info.node_id) >= worst for c in eligible if c.info.node_id not in chosen)


# -- the live view and the overlay, on an explicit clock ---------------------------------


def test_liveness_follows_the_announced_interval() -> None:
    view = LiveView(LivenessRule(lost_after=3.5))
    assert view.observe(node("a", interval_s=1.0, sent_at=10.0), now=100.0)
    assert view.is_alive("a", 103.5) and not view.is_alive("a", 103.6)
    assert not view.observe(node("a", interval_s=1.0, sent_at=9.0), now=103.0)  # stale
    assert view.stale_dropped == 1 and not view.is_alive("a", 103.6)
    assert view.observe(node("a", interval_s=1.0, sent_at=14.0), now=104.0)  # back
    fixed = LiveView(LivenessRule(lost_after_s=2.0))
    fixed.observe(node("b", interval_s=10.0), now=0.0, age_s=1.5)
    assert fixed.is_alive("b", 0.5) and not fixed.is_alive("b", 0.6)
    assert fixed.forget(100.0, after_s=50.0) == ["b"] and not fixed.entries


def test_overlay_needs_enough_failures_within_the_window() -> None:
    overlay = UnhealthyOverlay(failures=3, window_s=60.0, cooldown_s=120.0)
    assert overlay.record_failure("n", 0.0) is None
    assert overlay.record_failure("n", 10.0) is None
    assert overlay.record_failure("n", 61.0) is None  # the first one aged out
    assert overlay.recent_failures("n", 61.0) == 2
    assert overlay.record_failure("n", 62.0) == 182.0
    assert overlay.is_unhealthy("n") and overlay.unhealthy == ["n"]
    assert overlay.record_failure("n", 63.0) is None  # does not extend the cooldown
    assert overlay.sweep(181.0) == [] and overlay.until("n") == 182.0
    assert overlay.sweep(182.0) == ["n"] and not overlay.is_unhealthy("n")
    assert overlay.recent_failures("n", 182.0) == 0  # a clean slate after recovery
    assert overlay.record_failure("other", 200.0) is None and overlay.unhealthy == []


def test_pending_picks_spread_a_burst_over_equal_nodes() -> None:
    from services.node_selector.policy import Candidate, rank
    from shared.jobs import SelectRequest

    def node(node_id: str) -> NodeInfo:
        return node_info(node_id, memory_total_mb=1000, memory_available_mb=1000)

    request = SelectRequest()
    fresh = [Candidate(info=node("a")), Candidate(info=node("b"))]
    assert rank(fresh, request) == ["a"]
    after_two_picks = [Candidate(info=node("a"), pending=2), Candidate(info=node("b"))]
    assert rank(after_two_picks, request) == ["b"]


def test_a_burst_beyond_the_free_slots_spreads_over_the_nodes() -> None:
    def node(node_id: str) -> NodeInfo:
        return node_info(node_id, memory_total_mb=1000, memory_available_mb=1000)

    # Both nodes' four free slots are picked and more: the next pick goes to the node
    # with fewer waiting, not always to the one whose id sorts first.
    request = SelectRequest()
    a_ahead = [Candidate(info=node("a"), pending=6), Candidate(info=node("b"), pending=5)]
    assert rank(a_ahead, request) == ["b"]
    b_ahead = [Candidate(info=node("a"), pending=5), Candidate(info=node("b"), pending=6)]
    assert rank(b_ahead, request) == ["a"]
