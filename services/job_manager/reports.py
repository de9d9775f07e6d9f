"""How a node agent's report changes a job record, as pure functions.

Fencing: a report counts only for the live attempt (same ``attempt`` and ``fencing``,
and the same node once it runs). Anything else is refused: ``stale`` (an attempt that
is over or was superseded), ``cancelled``, ``phase`` (not allowed in this state) or
``wrong_node`` (the attempt was dispatched to another node: a node's credential only
reaches its own report subject, so this is another host speaking). A report repeated
because its reply was lost is accepted without a second change.
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec

from services.job_manager.policy import allowed, fail_attempt
from shared.jobs import TERMINAL, JobRecord, JobReport, JobResult, JobState

S = JobState

#: Phases a node agent reports.
REPORT_PHASES = frozenset({"started", "progress", "completed", "failed"})


class Refusal(NamedTuple):
    """Why a report was refused: ``kind`` is stale, cancelled or phase."""

    kind: str
    message: str


def _duplicate(rec: JobRecord, r: JobReport) -> bool:
    # The agent repeats a report whose reply it lost: the outcome is already written.
    if r.node_id != rec.node_id:
        return False
    if r.phase == "started":
        return rec.state is S.RUNNING
    if r.phase == "completed":
        return rec.state is S.COMPLETED
    if r.phase == "failed":
        return rec.state in (S.PENDING, S.FAILED) and rec.error == (r.error or "failed")
    return False


def refusal(rec: JobRecord, r: JobReport) -> Refusal | None:
    """Why report ``r`` may not act on ``rec``; None when it may (or is a duplicate)."""
    if r.attempt != rec.attempt or r.fencing != rec.fencing:
        return Refusal("stale", f"attempt {r.attempt}/{r.fencing} is not the live one")
    if rec.state is S.CANCELLED:
        return Refusal("cancelled", f"job {rec.job_id} is cancelled")
    if _duplicate(rec, r):
        return None
    if rec.state is S.RUNNING and r.node_id != rec.node_id:
        return Refusal("stale", f"attempt {rec.attempt} runs on node {rec.node_id!r}")
    if rec.node_id and r.node_id != rec.node_id:
        return Refusal("wrong_node", f"attempt {rec.attempt} was dispatched to another node")
    if allowed(rec.state, r.phase):
        return None
    if rec.state in TERMINAL or rec.state is S.PENDING:
        return Refusal("stale", f"attempt {rec.attempt} already ended ({rec.state})")
    return Refusal("phase", f"{r.phase!r} is not allowed in state {rec.state}")


def apply_report(
    rec: JobRecord, r: JobReport, now: float, *, lease_s: float, retry_delay: float
) -> JobRecord | Refusal | None:
    """The record after report ``r``: a new record, a refusal, or None for a duplicate."""
    refused = refusal(rec, r)
    if refused is not None:
        return refused
    if _duplicate(rec, r):
        return None
    progress = min(max(r.progress, 0.0), 1.0)
    change = msgspec.structs.replace
    if r.phase == "started":
        return change(
            rec,
            state=S.RUNNING,
            node_id=r.node_id,
            incarnation=r.incarnation,
            started_at=now,
            lease_expires_at=now + lease_s,
            progress=progress,
            updated_at=now,
        )
    if r.phase == "progress":
        return change(rec, lease_expires_at=now + lease_s, progress=progress, updated_at=now)
    if r.phase == "completed":
        return change(
            rec,
            state=S.COMPLETED,
            announced=False,
            result=r.result or JobResult(),
            progress=1.0,
            error="",
            updated_at=now,
            finished_at=now,
            lease_expires_at=None,
        )
    # A pooled attempt that failed before it started names its node only here.
    failed = rec if rec.node_id else change(rec, node_id=r.node_id)
    if r.result is not None:  # a failed attempt's exit code and logs stay readable
        failed = change(failed, result=r.result)
    return fail_attempt(failed, now, r.error or "failed", retry_delay)
