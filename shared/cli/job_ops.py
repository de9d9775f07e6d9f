"""``ringmaster jobs inspect|retry JOB_ID``: one job's whole record; submit it again.

``inspect`` prints the full JobRecord (spec, every state field, the latest result)
as indented JSON. ``retry`` submits the job's spec again as a new job: same type,
arguments, inputs and requirements, a fresh idempotency key (``retry-<id>-<n>``,
so the job manager does not answer with the old job). The old record is untouched.
"""

from __future__ import annotations

import argparse
import sys
import uuid

import anyio
import msgspec

from shared.cli.client import CliError, connected, request, subjects
from shared.cli.loops import add_timeout
from shared.jobs import TERMINAL, JobRecord, JobRef, JobSpec

SERVICE = "job_manager"


def _add_inspect(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", metavar="JOB_ID")
    add_timeout(parser)


def _add_retry(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", metavar="JOB_ID")
    parser.add_argument(
        "--force", action="store_true", help="also when the job has not ended (a second copy)"
    )
    parser.add_argument("--json", action="store_true", help="print the new record as JSON")
    add_timeout(parser)


async def _get(args: argparse.Namespace) -> JobRecord:
    subs = subjects(args)
    async with connected(args, "ringmaster-jobs") as nc:
        ref = JobRef(job_id=args.job_id)
        return await request(nc, subs.api(SERVICE, "get"), ref, JobRecord, timeout=args.timeout)


def run_inspect(args: argparse.Namespace) -> int:
    """Print one job's whole record."""
    record = anyio.run(_get, args)
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(record)).decode() + "\n")
    return 0


def retry_spec(record: JobRecord, token: str) -> JobSpec:
    """The job's spec with a new idempotency key and a label naming the original."""
    labels = {**record.spec.labels, "retry_of": record.job_id}
    key = f"retry-{record.job_id}-{token}"
    return msgspec.structs.replace(record.spec, idempotency_key=key, labels=labels)


async def _retry(args: argparse.Namespace) -> JobRecord:
    subs = subjects(args)
    async with connected(args, "ringmaster-jobs") as nc:
        ref = JobRef(job_id=args.job_id)
        old = await request(nc, subs.api(SERVICE, "get"), ref, JobRecord, timeout=args.timeout)
        if old.state not in TERMINAL and not args.force:
            raise CliError(f"job {old.job_id} is {old.state}, not ended; --force runs a copy")
        spec = retry_spec(old, uuid.uuid4().hex[:8])
        return await request(nc, subs.api(SERVICE, "submit"), spec, JobRecord, timeout=args.timeout)


def run_retry(args: argparse.Namespace) -> int:
    """Submit the job again; print the new job's id."""
    record = anyio.run(_retry, args)
    if args.json:
        sys.stdout.write(msgspec.json.encode(record).decode() + "\n")
    else:
        print(f"{record.job_id} {record.state.value} (retry of {args.job_id})")
    return 0


JOB_VERBS = {
    "inspect": ("one job's full record, as JSON", _add_inspect, run_inspect),
    "retry": ("submit an ended job's spec again, as a new job", _add_retry, run_retry),
}
