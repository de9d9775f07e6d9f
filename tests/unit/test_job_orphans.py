"""The pure parts of finding dispatches whose message is lost."""

from __future__ import annotations

from services.job_manager import policy
from services.job_manager.orphans import lost, suspects
from shared.jobs import JobSpec, Requirements
from shared.subjects import pool_durable


def dispatched(job_id: str, at: float, pool: str = "cap.cpu") -> policy.JobRecord:
    spec = JobSpec(type="selfplay", requirements=Requirements(pooled=True))
    rec = policy.dispatched(policy.new_record(job_id, spec, at), at, pool)
    assert rec is not None
    return rec


def test_the_durable_of_a_pool_is_the_agents_name_for_it() -> None:
    assert pool_durable("cap.train") == "cap-train"
    assert pool_durable("node.host-1") == "node-host-1"


def test_only_old_dispatches_are_suspects_grouped_by_pool() -> None:
    records = [
        dispatched("old", 0.0),
        dispatched("young", 95.0),
        dispatched("other", 0.0, "node.n1"),
        policy.new_record("pending", JobSpec(type="selfplay"), 0.0),
    ]
    assert suspects(records, 100.0, 10.0) == {"cap.cpu": ["old"], "node.n1": ["other"]}


def test_a_dispatch_is_lost_only_when_seen_in_an_idle_pool_twice_running() -> None:
    assert lost(set(), {"a", "b"}) == set()
    assert lost({"a", "b"}, {"b", "c"}) == {"b"}
    assert lost({"a"}, set()) == set()
