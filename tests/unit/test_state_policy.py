"""The state manager's pure parts: schema compatibility, validation, snapshot checks."""

from __future__ import annotations

import pytest

from services.state_manager.policy import (
    cap_problems,
    job_node,
    stored_schema_version,
    validate_state,
)
from shared.codec import encode
from shared.jobs import JobRecord, JobSpec, JobState
from shared.snapshot import (
    SCHEMA_VERSION,
    SchemaError,
    Snapshot,
    SnapshotError,
    check_schema,
    check_snapshot,
    decode_snapshot,
    encode_snapshot,
)
from shared.testing.builders import node_info


def node(node_id: str) -> bytes:
    return encode(node_info(node_id, slots=1, free_slots=1))


def job(state: JobState, node_id: str = "", pool: str = "") -> JobRecord:
    return JobRecord(
        job_id="j",
        spec=JobSpec(type="t"),
        state=state,
        node_id=node_id,
        pool=pool,
        submitted_at=0.0,
        updated_at=0.0,
    )


def test_the_current_schema_is_compatible() -> None:
    check_schema(SCHEMA_VERSION)
    current = f'{{"version": {SCHEMA_VERSION}}}'.encode()
    assert stored_schema_version(current) == SCHEMA_VERSION


@pytest.mark.parametrize("stored", [0, 2, 10])
def test_another_schema_version_is_refused_naming_both(stored: int) -> None:
    with pytest.raises(SchemaError) as info:
        check_schema(stored, 1)
    assert f"version {stored} is not compatible with this release's version 1" in str(info.value)


@pytest.mark.parametrize("raw", [b"", b"[]", b'{"version": "one"}', b'{"v": 1}'])
def test_an_unreadable_schema_record_is_refused(raw: bytes) -> None:
    with pytest.raises(SchemaError, match="does not decode"):
        stored_schema_version(raw)


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (job(JobState.RUNNING, node_id="n1", pool="node.n2"), "n1"),
        (job(JobState.DISPATCHED, pool="node.n2"), "n2"),
        (job(JobState.DISPATCHED, pool="cap.gpu"), ""),
        (job(JobState.PENDING), ""),
    ],
)
def test_job_node(record: JobRecord, expected: str) -> None:
    assert job_node(record) == expected


def test_validation_finds_unknown_nodes_and_bad_records() -> None:
    jobs = {
        "a": encode(job(JobState.RUNNING, node_id="n1")),
        "b": encode(job(JobState.RUNNING, node_id="gone")),
        "c": encode(job(JobState.DISPATCHED, pool="node.gone")),
        "d": encode(job(JobState.FAILED, node_id="gone")),  # finished: history, not a problem
        "e": b"{",
        "idem-abc": b'"a"',
    }
    nodes = {"n1": node("n1"), "n2": node("other"), "n3": b"null"}
    result = validate_state(jobs, nodes)
    assert (result.records, result.jobs, result.nodes) == (8, 5, 3)
    where = [p.split(":")[0] for p in result.problems]
    assert where == ["nodes/n2", "nodes/n3", "jobs/b", "jobs/c", "jobs/e"]
    assert "record names node 'other'" in result.problems[0]
    assert "DISPATCHED on node 'gone'" in result.problems[3]


def test_validation_of_a_clean_state() -> None:
    result = validate_state({"a": encode(job(JobState.RUNNING, node_id="n1"))}, {"n1": node("n1")})
    assert result.problems == [] and result.records == 2


@pytest.mark.parametrize(
    ("count", "limit", "expected_len", "last"),
    [(0, 3, 0, None), (3, 3, 3, "p2"), (5, 3, 3, "... and 3 more"), (2, 1, 1, "... and 2 more")],
)
def test_cap_problems(count: int, limit: int, expected_len: int, last: str | None) -> None:
    capped = cap_problems([f"p{i}" for i in range(count)], limit)
    assert len(capped) == expected_len
    assert (capped[-1] if capped else None) == last


def test_snapshot_round_trip_and_checks() -> None:
    snapshot = Snapshot(prefix="p", created_at=1.0, buckets={"jobs": {"k": "e30="}})
    assert decode_snapshot(encode_snapshot(snapshot)) == snapshot
    with pytest.raises(SnapshotError, match="format 9 is not supported"):
        check_snapshot(Snapshot(format=9, prefix="p", created_at=1.0, buckets={}))
    with pytest.raises(SnapshotError, match="not a ringmaster snapshot"):
        decode_snapshot(b"[1, 2]")
