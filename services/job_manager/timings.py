"""Histograms the job manager observes on the attempts it records.

The job manager sees both ends of each interval in its records, so it observes them
itself (carried to Prometheus in its metrics reply):

- submit to RUNNING: from the job's submission to the start report of an attempt;
- queue wait: from an attempt's dispatch into ``P_JOBS`` until an agent took it (its
  start report; the record's ``updated_at`` while DISPATCHED is the dispatch time);
- job duration: from an attempt's start to its completed or failed report, per
  type and outcome. Attempts failed by the reaper (lease, lost node) have no agent
  report and are not in it; the reaper's counts show them.
"""

from __future__ import annotations

from shared.contracts import HistogramSample
from shared.histogram import DURATION_BUCKETS, LATENCY_BUCKETS, Histogram
from shared.jobs import JobRecord, JobState


class JobTimings:
    """Submit-to-running, queue-wait and duration histograms, by job type."""

    def __init__(self) -> None:
        self.to_running = Histogram(
            "ringmaster_job_submit_to_running_seconds",
            "job submission to an attempt's start report",
            LATENCY_BUCKETS,
            labels=("type",),
        )
        self.queue_wait = Histogram(
            "ringmaster_job_queue_wait_seconds",
            "an attempt's dispatch into P_JOBS until an agent took it",
            LATENCY_BUCKETS,
            labels=("type",),
        )
        self.duration = Histogram(
            "ringmaster_job_duration_seconds",
            "an attempt's start to its completed or failed report",
            DURATION_BUCKETS,
            labels=("type", "outcome"),
        )

    def observe(self, before: JobRecord | None, after: JobRecord, phase: str, now: float) -> None:
        """Count what a report that moved ``before`` to ``after`` completes."""
        kind = after.spec.type
        if phase == "started" and after.state is JobState.RUNNING:
            self.to_running.observe((after.started_at or now) - after.submitted_at, kind)
            if before is not None and before.state is JobState.DISPATCHED:
                self.queue_wait.observe(now - before.updated_at, kind)
        elif phase in ("completed", "failed") and after.started_at is not None:
            outcome = "completed" if phase == "completed" else "failed"
            self.duration.observe((after.finished_at or now) - after.started_at, kind, outcome)

    def samples(self) -> list[HistogramSample]:
        """Every series, for ServiceMetrics.histograms."""
        return [
            *self.to_running.samples(),
            *self.queue_wait.samples(),
            *self.duration.samples(),
        ]
