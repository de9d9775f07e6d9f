"""One attempt's output: progress read from stdout, both streams kept as its logs.

Every line goes to a bounded :class:`~shared.joblogs.OutputCapture` per stream; the
last stderr lines also make the failure message. When the process has ended the
captures are stored as the attempt's ``logs.json`` blob (failed and killed attempts
too) and announced with JOB_LOGS_STORED, so that ``ringmaster logs --job`` finds
every attempt's output, not only the latest one the job record keeps.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

import msgspec
import nats.errors

from services.node_agent.process import stderr_collector
from services.node_agent.reports import AgentStats
from shared.blobs import BlobStore
from shared.events import EventData, JobLogsStored
from shared.joblogs import LOGS_NAME, JobLogs, OutputCapture, encode_logs
from shared.jobs import DataRef, JobDispatch

log = logging.getLogger("ringmaster.node_agent.output")

#: Lines of stderr quoted in a failed attempt's error.
ERROR_LINES = 20


class AttemptOutput:
    """The line callbacks of one attempt's process, and what they kept."""

    def __init__(self, on_progress_line: Callable[[bytes], None]) -> None:
        self.stdout = OutputCapture()
        self.stderr = OutputCapture()
        self.tail: deque[str] = deque(maxlen=ERROR_LINES)
        self._keep_tail = stderr_collector(self.tail)
        self._progress = on_progress_line

    def on_stdout(self, line: bytes) -> None:
        """A stdout line: kept, and read for progress."""
        self.stdout.feed(line)
        self._progress(line)

    def on_stderr(self, line: bytes) -> None:
        """A stderr line: kept, and among the last lines of a failure message."""
        self.stderr.feed(line)
        self._keep_tail(line)

    def logs(self, dispatch: JobDispatch, node_id: str, exit_code: int | None) -> JobLogs:
        """What was kept, as the attempt's logs blob."""
        return JobLogs(
            job_id=dispatch.job_id,
            attempt=dispatch.attempt,
            node_id=node_id,
            exit_code=exit_code,
            stdout=self.stdout.result(),
            stderr=self.stderr.result(),
        )


async def store_logs(
    blobs: BlobStore, logs: JobLogs, emit: Callable[[EventData], object], stats: AgentStats
) -> DataRef | None:
    """Upload the logs and announce them; None, counted and logged, when the upload fails
    (the attempt is still reported: its logs are not worth its result)."""
    try:
        ref = await blobs.put_bytes(LOGS_NAME, encode_logs(logs))
    except (nats.errors.Error, OSError) as exc:
        stats.logs_failed += 1
        stats.last_error = f"logs of {logs.job_id}/{logs.attempt}: {exc!r}"
        log.warning(
            "job %s attempt %d: storing its logs failed: %r", logs.job_id, logs.attempt, exc
        )
        return None
    emit(
        JobLogsStored(
            job_id=logs.job_id,
            attempt=logs.attempt,
            node_id=logs.node_id,
            logs=msgspec.to_builtins(ref),
        )
    )
    return ref
