"""``ringmaster submit``, ``jobs`` and ``cancel``: the job manager's API from a shell.

``submit`` uploads each ``--input`` file to the object store (content-addressed) and
sends a JobSpec; with ``--wait`` it follows the job to its end and exits 0 only when it
COMPLETED, printing the outputs' sha256 so they can be found in the object store.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import anyio
import msgspec

from shared.blobs import BlobStore, ensure_store
from shared.cli import job_ops
from shared.cli.client import (
    CliError,
    connected,
    non_negative_int,
    positive_float,
    request,
    subjects,
)
from shared.jobs import (
    TERMINAL,
    JobList,
    JobQuery,
    JobRecord,
    JobRef,
    JobSpec,
    JobState,
    Requirements,
)

SERVICE = "job_manager"

# ``ringmaster jobs inspect|retry``: verbs of the ``jobs`` command (optional: without one
# it lists jobs).
JOB_VERBS = job_ops.JOB_VERBS


def add_submit_arguments(parser: argparse.ArgumentParser) -> None:
    """The JobSpec fields as options; the command (for ``shell`` jobs) after ``--``."""
    parser.add_argument("--type", default="shell", help="job type (default: shell)")
    parser.add_argument("--capability", default="shell", help="capability a node must serve")
    parser.add_argument("--gpu", action="store_true", help="the job needs a GPU")
    parser.add_argument("--pooled", action="store_true", help="late binding: first free node")
    parser.add_argument("--node", default="", help="pin the job to one node id")
    parser.add_argument("--timeout", type=positive_float, default=3600.0, help="seconds")
    parser.add_argument("--max-attempts", type=int, default=3)
    parser.add_argument("--priority", type=int, default=0)
    parser.add_argument("--key", default="", help="idempotency key: same key, same job")
    parser.add_argument(
        "--arg",
        action="append",
        default=[],
        metavar="K=V",
        help="job argument (repeatable); values are JSON when they parse",
    )
    parser.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="FILE",
        type=Path,
        help="upload FILE and pass it to the job (repeatable)",
    )
    parser.add_argument("--wait", action="store_true", help="wait for the job to end")
    parser.add_argument("--wait-timeout", type=positive_float, default=3600.0)
    parser.add_argument("--json", action="store_true", help="print the record as JSON")
    parser.add_argument(
        "argv",
        nargs=argparse.REMAINDER,
        help="for shell jobs: the program and its arguments (after --)",
    )


def _args(pairs: list[str], command: list[str]) -> dict[str, object]:
    values: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--arg {pair!r} is not K=V", 2)
        try:
            values[key] = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            values[key] = raw
    argv = command[1:] if command[:1] == ["--"] else command
    if argv:
        values["argv"] = argv
    return values


async def _submit(args: argparse.Namespace) -> tuple[JobRecord, int]:
    subs = subjects(args)
    job_args = _args(args.arg, args.argv)  # bad --arg values fail before any connection
    for path in args.input:
        if not path.is_file():
            raise CliError(f"--input {path}: no such file", 2)
    async with connected(args, "ringmaster-submit") as nc:
        inputs = []
        if args.input:
            # The operator may purge: an input already stored leaves no second copy.
            store = await ensure_store(nc.jetstream(), subs.data_store)
            blobs = BlobStore(store, purge=True)
            inputs = [await blobs.put_file(path) for path in args.input]
        try:
            spec = JobSpec(
                type=args.type,
                args=job_args,
                inputs=inputs,
                requirements=Requirements(
                    capability=args.capability, gpu=args.gpu, pooled=args.pooled, node_id=args.node
                ),
                priority=args.priority,
                timeout_s=args.timeout,
                max_attempts=args.max_attempts,
                idempotency_key=args.key,
            )
            spec = msgspec.convert(msgspec.to_builtins(spec), JobSpec)  # checks constraints
        except msgspec.ValidationError as exc:
            raise CliError(f"invalid job: {exc}", 2) from None
        record = await request(nc, subs.api(SERVICE, "submit"), spec, JobRecord, timeout=5)
        if not args.wait:
            return record, 0
        with anyio.move_on_after(args.wait_timeout):
            while record.state not in TERMINAL:
                await anyio.sleep(0.25)
                ref = JobRef(job_id=record.job_id)
                record = await request(nc, subs.api(SERVICE, "get"), ref, JobRecord, timeout=5)
        code = 0 if record.state is JobState.COMPLETED else 1
        return record, code


def run_submit(args: argparse.Namespace) -> int:
    """Submit one job; print its id (and its end with --wait)."""
    record, code = anyio.run(_submit, args)
    if args.json:
        sys.stdout.write(msgspec.json.encode(record).decode() + "\n")
        return code
    print(f"{record.job_id} {record.state.value}" + (f" {record.error}" if record.error else ""))
    if record.result is not None:
        for ref in record.result.outputs:
            print(f"  output {ref.name} sha256={ref.sha256} size={ref.size}")
    return code


def add_jobs_arguments(parser: argparse.ArgumentParser) -> None:
    """Filters for ``ringmaster jobs``."""
    parser.add_argument("--state", choices=[s.value for s in JobState])
    parser.add_argument("--type", default="")
    parser.add_argument("--node", default="")
    parser.add_argument(
        "--limit", type=non_negative_int, default=50, help="at most this many (pages followed)"
    )
    parser.add_argument(
        "--cursor", default="", help="start after this point (a next_cursor from --json)"
    )
    parser.add_argument("--json", action="store_true")


async def _list(args: argparse.Namespace) -> JobList:
    """Up to ``--limit`` jobs, following ``next_cursor`` page after page.

    A page may hold fewer jobs than asked (each reply fits the server's max_payload),
    so the listing asks again from the page's cursor until it has enough or none is left.
    """
    subs = subjects(args)
    wanted = max(1, args.limit)
    jobs: list[JobRecord] = []
    total, cursor = 0, args.cursor
    async with connected(args, "ringmaster-jobs") as nc:
        while True:
            query = JobQuery(
                state=JobState(args.state) if args.state else None,
                type=args.type,
                node_id=args.node,
                limit=min(10_000, wanted - len(jobs)),
                cursor=cursor,
            )
            try:
                page = await request(nc, subs.api(SERVICE, "list"), query, JobList, timeout=10)
            except CliError as exc:
                if cursor and cursor == args.cursor and " error 400: " in exc.message:
                    raise CliError(exc.message, 2) from None  # --cursor was bad: usage
                raise
            jobs += page.jobs
            total, cursor = page.total, page.next_cursor
            if not cursor or len(jobs) >= wanted:
                return JobList(jobs=jobs, total=total, next_cursor=cursor)


def run_jobs(args: argparse.Namespace) -> int:
    """Print the jobs matching the filters, newest first."""
    listing = anyio.run(_list, args)
    if args.json:
        sys.stdout.write(msgspec.json.encode(listing).decode() + "\n")
        return 0
    from shared.cli.tables import jobs_table, print_table

    print_table(jobs_table(listing.jobs, title=f"jobs ({listing.total} matching)"))
    return 0


def add_cancel_arguments(parser: argparse.ArgumentParser) -> None:
    """The job to cancel."""
    parser.add_argument("job_id", metavar="JOB_ID")
    parser.add_argument("--reason", default="cancelled by operator")


async def _cancel(args: argparse.Namespace) -> JobRecord:
    subs = subjects(args)
    ref = JobRef(job_id=args.job_id, reason=args.reason)
    async with connected(args, "ringmaster-cancel") as nc:
        return await request(nc, subs.api(SERVICE, "cancel"), ref, JobRecord, timeout=5)


def run_cancel(args: argparse.Namespace) -> int:
    """Cancel one job."""
    record = anyio.run(_cancel, args)
    print(f"{record.job_id} {record.state.value}")
    return 0
