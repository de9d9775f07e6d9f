"""A job's trace: the job span, its attempts' spans, and their export.

The job span is made at submit, a child of the submitter's ``traceparent`` (request
header) or the root of a new trace, and kept in the record (``traceparent``), so it
survives restarts and every job manager instance agrees on it. An attempt's span is
derived from the job span and the attempt's fencing token (``TraceContext.derived``):
nothing more to store, and the dispatch, the agent's reports and the attempt's events
all name it. The job manager works inside these spans with ``tracing.use``, so its
events carry them.
"""

from __future__ import annotations

import time

import msgspec

from shared import otel, tracing
from shared.jobs import JobRecord, JobState
from shared.tracing import TraceContext


def start(record: JobRecord) -> JobRecord:
    """``record`` with its job span: under the request's trace if it carried one."""
    caller = tracing.incoming("submit")
    span = caller.child() if caller is not None else tracing.new_trace()
    return msgspec.structs.replace(
        record, traceparent=span.traceparent, tracestate=span.state, trace_parent=span.parent_id
    )


def job_span(rec: JobRecord) -> TraceContext | None:
    """The job's span from its record (None for records older than tracing)."""
    span = tracing.from_value(rec.traceparent, "job_record", rec.tracestate)
    return None if span is None else span._replace(parent_id=rec.trace_parent)


def attempt_span(rec: JobRecord) -> TraceContext | None:
    """The span of the record's current attempt (its dispatch, reports and events)."""
    job = job_span(rec)
    return None if job is None else job.derived(f"attempt-{rec.fencing}")


def terminal_span(rec: JobRecord) -> TraceContext | None:
    """The span a terminal event belongs to: the job's for a cancellation (no attempt
    need be running), else the last attempt's."""
    return job_span(rec) if rec.state is JobState.CANCELLED else attempt_span(rec)


def dispatch_headers(rec: JobRecord) -> dict[str, str]:
    """The trace headers a JobDispatch carries to the agent (none for old records)."""
    span = attempt_span(rec)
    return {} if span is None else span.event_headers()


def export_attempt(rec: JobRecord, now: float | None = None) -> None:
    """Export the attempt's span (and the job's when it ended) if an exporter is set."""
    sink = otel.sink()
    if sink is None:
        return
    end = rec.finished_at or now or time.time()
    attempt = attempt_span(rec)
    job = job_span(rec)
    if attempt is None or job is None:
        return
    attrs = {"job.id": rec.job_id, "job.type": rec.spec.type, "node.id": rec.node_id}
    sink.record(
        attempt,
        f"attempt {rec.spec.type}",
        start=rec.started_at or rec.updated_at,
        end=end,
        attributes={**attrs, "attempt": rec.attempt, "error": rec.error},
    )
    if rec.state in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED):
        sink.record(
            job,
            f"job {rec.spec.type}",
            start=rec.submitted_at,
            end=end,
            attributes={**attrs, "state": str(rec.state)},
        )
