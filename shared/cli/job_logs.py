"""``ringmaster logs --job ID [--attempt N]``: what a job attempt wrote on stdout and stderr.

The node agent keeps each attempt's output as a ``logs.json`` blob (``shared/joblogs``)
and names it twice: in the attempt's JobResult (``logs``; the job record keeps the
latest attempt's) and in a JOB_LOGS_STORED event (every attempt, in ``P_EVENTS``).
The blob is fetched through the blob store, so its sha256 is checked on the way.
"""

from __future__ import annotations

import argparse
import sys

import msgspec
from nats.aio.client import Client

from shared.blobs import BlobError, BlobStore, ensure_store
from shared.cli.client import CliError, connected, request, subjects
from shared.cli.history import last_matching
from shared.codec import decode
from shared.contracts import Event
from shared.joblogs import JobLogs, StreamText, decode_logs
from shared.jobs import DataRef, JobRecord, JobRef, JobState
from shared.subjects import Subjects

SERVICE = "job_manager"


async def find_logs(nc: Client, subs: Subjects, record: JobRecord, attempt: int) -> DataRef:
    """The DataRef of one attempt's logs; CliError (1) when there is none."""
    result = record.result
    if attempt == record.attempt and result is not None and result.logs is not None:
        return result.logs
    wanted = (record.job_id, attempt)

    def named(data: bytes) -> DataRef | None:
        try:
            event = decode(Event, data)
            ref = msgspec.convert(event.data.get("logs"), DataRef)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        key = (event.data.get("job_id"), event.data.get("attempt"))
        return ref if key == wanted else None

    subject = subs.event("node_agent", "JOB_LOGS_STORED")
    # Every stored event of this type is read: one per attempt that ran, so few.
    found, _ = await last_matching(nc.jetstream(), subs.events_stream, subject, 1 << 30, named)
    if found:
        return found[-1]
    if attempt == record.attempt and record.state in (JobState.PENDING, JobState.DISPATCHED):
        raise CliError(f"job {record.job_id} has not run yet ({record.state}): no logs")
    raise CliError(
        f"job {record.job_id} attempt {attempt} has no logs "
        "(it did not start a process, or its node could not store them)"
    )


def _section(name: str, stream: StreamText) -> str:
    kept = f", {stream.omitted_bytes} bytes omitted" if stream.omitted_bytes else ""
    body = stream.text()
    if body and not body.endswith("\n"):
        body += "\n"
    return f"==> {name} ({stream.total_bytes} bytes{kept}) <==\n{body}"


def render(logs: JobLogs) -> str:
    """The attempt's header, then stdout and stderr, each under its own header."""
    code = "-" if logs.exit_code is None else str(logs.exit_code)
    head = f"job {logs.job_id} attempt {logs.attempt} on {logs.node_id}, exit code {code}\n"
    return head + _section("stdout", logs.stdout) + _section("stderr", logs.stderr)


async def print_job_logs(args: argparse.Namespace) -> int:
    """Fetch (sha256-checked) and print one attempt's output."""
    subs = subjects(args)
    async with connected(args, "ringmaster-logs") as nc:
        ref = JobRef(job_id=args.job)
        record = await request(nc, subs.api(SERVICE, "get"), ref, JobRecord, timeout=5)
        attempt = args.attempt or record.attempt
        if attempt == 0:
            raise CliError(f"job {record.job_id} has not run yet ({record.state}): no logs")
        if attempt > record.attempt:
            raise CliError(f"job {record.job_id} has had {record.attempt} attempts, not {attempt}")
        logs_ref = await find_logs(nc, subs, record, attempt)
        blobs = BlobStore(await ensure_store(nc.jetstream(), subs.data_store))
        try:
            data = await blobs.get_bytes(logs_ref)
            logs = decode_logs(data)
        except BlobError as exc:
            raise CliError(str(exc)) from None
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise CliError(f"logs blob {logs_ref.sha256[:12]} is not job logs: {exc}") from None
    sys.stdout.write(data.decode() + "\n" if args.json else render(logs))
    sys.stdout.flush()
    return 0
