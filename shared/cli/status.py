"""``ringmaster status``: one request to the orchestrator, shown as tables or JSON."""

from __future__ import annotations

import argparse
import sys

import anyio
import msgspec
from rich.console import Console

from shared.cli.client import CliError, NoAnswer, connected, positive_float, request, subjects
from shared.cli.tables import problems, render
from shared.contracts import ClusterStatus, Empty

EPILOG = """exit codes:
  0  every service instance is RUNNING and ALIVE, and no supervised child gave up
  1  something is not well (the reasons follow the table, on stderr)
  3  no orchestrator answered (or NATS is unreachable)"""

EXIT_UNKNOWN = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--json`` and ``--timeout``."""
    parser.add_argument("--json", action="store_true", help="print the ClusterStatus as JSON")
    parser.add_argument(
        "--timeout",
        metavar="S",
        type=positive_float,
        default=3.0,
        help="seconds to wait for the orchestrator's answer (default: 3)",
    )


async def fetch_status(args: argparse.Namespace) -> ClusterStatus:
    """The orchestrator's ClusterStatus; CliError (exit 3) when nobody can say."""
    subs = subjects(args)
    async with connected(args, "ringmaster-status", code=EXIT_UNKNOWN) as nc:
        try:
            return await request(
                nc,
                subs.api("orchestrator", "status"),
                Empty(),
                ClusterStatus,
                timeout=args.timeout,
            )
        except NoAnswer as exc:
            raise CliError(
                f"no orchestrator answered for prefix {subs.prefix!r} ({exc.message}); "
                "is `ringmaster up` running?",
                EXIT_UNKNOWN,
            ) from None
        except CliError as exc:
            raise CliError(exc.message, EXIT_UNKNOWN) from None


def run(args: argparse.Namespace) -> int:
    """Print the status; 0 when all is well, 1 when not, 3 when nobody answered."""
    status = anyio.run(fetch_status, args)
    found = problems(status)
    if args.json:
        sys.stdout.write(msgspec.json.format(msgspec.json.encode(status)).decode() + "\n")
    else:
        # Piped or redirected: no terminal width to fit, so do not fold names to 80 columns.
        width = None if sys.stdout.isatty() else 200
        Console(width=width).print(render(status))
    for problem in found:
        print(f"ringmaster status: {problem}", file=sys.stderr)
    return 1 if found else 0
