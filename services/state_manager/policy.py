"""Pure judgements of the state manager: schema compatibility and state validation.

No I/O here: the service reads the buckets and hands their raw values in.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from shared.codec import decode
from shared.jobs import TERMINAL, JobRecord, NodeInfo
from shared.snapshot import SCHEMA_VERSION, SchemaError, SchemaRecord, check_schema

__all__ = [
    "IDEM_PREFIX",
    "SCHEMA_VERSION",
    "Validation",
    "cap_problems",
    "job_node",
    "stored_schema_version",
    "validate_state",
]

#: Keys of the jobs bucket that index idempotency keys, not job records.
IDEM_PREFIX = "idem-"
_NODE_POOL = "node."


class Validation(msgspec.Struct, frozen=True, kw_only=True):
    """One validation pass: records looked at and what is wrong with them."""

    records: int
    jobs: int
    nodes: int
    problems: list[str]


def stored_schema_version(raw: bytes, current: int = SCHEMA_VERSION) -> int:
    """The version in a stored ``schema`` record; SchemaError if unreadable or incompatible."""
    try:
        version = decode(SchemaRecord, raw).version
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SchemaError(f"state key 'schema' does not decode as {{'version': N}}: {exc}") from exc
    check_schema(version, current)
    return version


def job_node(record: JobRecord) -> str:
    """The node a job is bound to: where it runs, or the node pool it was dispatched to."""
    if record.node_id:
        return record.node_id
    if record.pool.startswith(_NODE_POOL):
        return record.pool[len(_NODE_POOL) :]
    return ""


def _decode_problem(bucket: str, key: str, exc: Exception) -> str:
    return f"{bucket}/{key}: does not decode: {exc}"


def validate_state(jobs: Mapping[str, bytes], nodes: Mapping[str, bytes]) -> Validation:
    """Problems in the nodes and jobs buckets: the nodes first, each bucket by key.

    - a record that does not decode as its Struct (jobs: JobRecord, nodes: NodeInfo);
    - a node record whose ``node_id`` is not its key;
    - a job that is not finished and is bound to a node the nodes bucket does not know.

    Keys of the jobs bucket starting with ``idem-`` are the idempotency index, not jobs.
    """
    problems: list[str] = []
    known: set[str] = set()
    for key, raw in sorted(nodes.items()):
        try:
            info = decode(NodeInfo, raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            problems.append(_decode_problem("nodes", key, exc))
            known.add(key)  # the node exists; only its record is bad (reported above)
            continue
        known.add(key)
        if info.node_id != key:
            problems.append(f"nodes/{key}: record names node {info.node_id!r}")
    job_count = 0
    for key, raw in sorted(jobs.items()):
        if key.startswith(IDEM_PREFIX):
            continue
        job_count += 1
        try:
            record = decode(JobRecord, raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            problems.append(_decode_problem("jobs", key, exc))
            continue
        node = job_node(record)
        if record.state not in TERMINAL and node and node not in known:
            problems.append(
                f"jobs/{key}: {record.state.value} on node {node!r}, not in the nodes bucket"
            )
    return Validation(
        records=job_count + len(nodes), jobs=job_count, nodes=len(nodes), problems=problems
    )


def cap_problems(problems: list[str], limit: int) -> list[str]:
    """At most ``limit`` lines; the last one says how many more there were."""
    if len(problems) <= limit:
        return problems
    shown = problems[: max(limit - 1, 0)]
    return [*shown, f"... and {len(problems) - len(shown)} more"]
