"""``ringmaster logs``: a service's log records from ``P_LOGS``, or a job's output.

``ringmaster logs SERVICE`` prints the last ``--tail`` records the service's
instances published on ``P.log.<service>.<instance>`` (any host, any instance, or
``--instance``), at ``--level`` or above; ``-f`` then follows new ones until Ctrl-C.
``ringmaster logs --job ID [--attempt N]`` prints what an attempt wrote on stdout and
stderr (see :mod:`shared.cli.job_logs`).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from datetime import datetime

import anyio
import msgspec

from shared.cli.client import (
    EXIT_CODES,
    EXIT_USAGE,
    CliError,
    connected,
    non_negative_int,
    subjects,
)
from shared.cli.history import Subscription, follow_after, last_matching, stream_subjects
from shared.cli.job_logs import print_job_logs
from shared.cli.service import known_services
from shared.codec import decode
from shared.errors import ConfigError
from shared.logstream import LogEntry
from shared.subjects import check_token

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

EPILOG = f"""examples:
  ringmaster logs job_manager --tail 50
  ringmaster logs node_agent --instance gpu-7 -f --level WARNING
  ringmaster logs --job 5f3a... --attempt 2

{EXIT_CODES}"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """SERVICE or ``--job``, and the filters."""
    parser.add_argument("service", metavar="SERVICE", nargs="?", help="the service kind")
    parser.add_argument("--instance", metavar="I", help="only this instance")
    parser.add_argument(
        "--tail", metavar="N", type=non_negative_int, default=50, help="last N records (50)"
    )
    parser.add_argument("-f", "--follow", action="store_true", help="then follow new records")
    parser.add_argument(
        "--level",
        type=str.upper,
        choices=LEVELS,
        default="DEBUG",
        help="this level and above (default: every record)",
    )
    parser.add_argument("--json", action="store_true", help="each record as JSON")
    parser.add_argument("--job", metavar="ID", help="a job attempt's stdout and stderr instead")
    parser.add_argument(
        "--attempt", metavar="N", type=non_negative_int, help="with --job (default: the latest)"
    )


def entry_line(entry: LogEntry) -> str:
    """``time LEVEL service/instance logger: message``, the exception indented below."""
    when = datetime.fromtimestamp(entry.time).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    line = f"{when} {entry.level} {entry.service}/{entry.instance} {entry.logger}: {entry.message}"
    if entry.exception:
        line += "\n" + "\n".join("    " + part for part in entry.exception.splitlines())
    return line


class Printer:
    """Decodes and filters records; counts what does not decode."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.json = bool(args.json)
        self.floor = logging.getLevelName(args.level)
        self.undecodable = 0

    def keep(self, data: bytes) -> tuple[bytes, LogEntry] | None:
        """The record if it decodes and passes ``--level``, else None."""
        try:
            entry = decode(LogEntry, data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.undecodable += 1
            return None
        level = logging.getLevelName(entry.level)
        if isinstance(level, int) and level < self.floor:
            return None
        return data, entry

    def show(self, item: tuple[bytes, LogEntry]) -> None:
        """Print one record."""
        data, entry = item
        text = data.decode(errors="replace") if self.json else entry_line(entry)
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def _check(args: argparse.Namespace) -> None:
    if args.job is not None:
        if args.service or args.instance or args.follow:
            raise CliError("--job takes no SERVICE, --instance or --follow", 2)
        return
    if args.attempt is not None:
        raise CliError("--attempt goes with --job", 2)
    if not args.service:
        raise CliError("name a SERVICE (or --job ID)", 2)
    try:
        check_token(args.service, "SERVICE")
        if args.instance:
            check_token(args.instance, "--instance")
    except ConfigError as exc:
        raise CliError(str(exc), 2) from None


async def service_logs(args: argparse.Namespace) -> int:
    """Print the tail, then follow with ``-f``; 0, or CliError."""
    subs = subjects(args)
    subject = subs.log(args.service, args.instance) if args.instance else subs.logs_of(args.service)
    printer = Printer(args)
    async with connected(args, "ringmaster-logs") as nc:
        js = nc.jetstream()
        counts = await stream_subjects(js, subs.logs_stream, subs.logs)
        if not any(_matches(name, subs.prefix, args) for name in counts):
            problem = _nothing(args, counts, subs.prefix)
            # A known service with nothing yet may still log: -f waits for it.
            if problem.code == EXIT_USAGE or not args.follow:
                raise problem
        tail, last = await last_matching(js, subs.logs_stream, subject, args.tail, printer.keep)
        for item in tail:
            printer.show(item)
        if args.follow:
            sub = await follow_after(js, subs.logs_stream, subject, last)
            print(
                f"ringmaster logs: following {subject} (Ctrl-C stops)", file=sys.stderr, flush=True
            )
            await _follow(sub, printer)
            await sub.unsubscribe()
    if printer.undecodable:
        print(
            f"ringmaster logs: {printer.undecodable} undecodable records skipped", file=sys.stderr
        )
    return 0


def _matches(subject: str, prefix: str, args: argparse.Namespace) -> bool:
    parts = subject[len(prefix) + 1 :].split(".")  # log.<service>.<instance>
    if len(parts) != 3 or parts[1] != args.service:
        return False
    return not args.instance or parts[2] == args.instance


def _nothing(args: argparse.Namespace, counts: dict[str, int], prefix: str) -> CliError:
    logged = sorted({name[len(prefix) + 1 :].split(".")[1] for name in counts})
    shown = ", ".join(logged) or "none"
    if args.service not in known_services() and args.service not in logged:
        return CliError(f"unknown service {args.service!r}; services with logs: {shown}", 2)
    who = f"{args.service}/{args.instance}" if args.instance else args.service
    return CliError(f"no log records from {who}; services with logs: {shown}", 1)


async def _follow(sub: Subscription, printer: Printer) -> None:
    async with anyio.create_task_group() as tg:

        async def stop_on_signal() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    tg.cancel_scope.cancel()

        tg.start_soon(stop_on_signal)
        async for msg in sub.messages:
            item = printer.keep(msg.data)
            if item is not None:
                printer.show(item)


def run(args: argparse.Namespace) -> int:
    """``logs SERVICE`` or ``logs --job ID``."""
    _check(args)
    if args.job is not None:
        return int(anyio.run(print_job_logs, args))
    return int(anyio.run(service_logs, args))
