"""``ringmaster loops list|pause|resume|trigger``: the loop manager's housekeeping loops.

Each verb is one request to ``P.api.loop_manager.<verb>``; ``list`` prints every
hosted loop with its stats and last result, the others print the loop they changed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import anyio
import msgspec
from rich.table import Table

from shared.cli.client import EXIT_CODES, connected, positive_float, request, short, subjects
from shared.cli.tables import print_table
from shared.contracts import Empty, LoopList, LoopRequest
from shared.loops import LoopStats

SERVICE = "loop_manager"
EPILOG = EXIT_CODES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Nothing before the verb: each verb has its own options."""


def add_timeout(parser: argparse.ArgumentParser) -> None:
    """``--timeout S``: how long to wait for the service's answer."""
    parser.add_argument(
        "--timeout", metavar="S", type=positive_float, default=5.0, help="seconds (default: 5)"
    )


def _add_list(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="the LoopList as JSON")
    add_timeout(parser)


def _add_one(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("loop", metavar="LOOP", help="the loop's name (see `loops list`)")
    add_timeout(parser)


def _ago(when: float | None) -> str:
    return "-" if when is None else f"{max(0.0, time.time() - when):.0f}s ago"


def loops_table(listing: LoopList) -> Table:
    """One row per loop: state, interval, runs, failures, last run, last result."""
    table = Table(title=f"loops on {listing.instance}", title_justify="left")
    for column in ("loop", "state", "interval", "runs", "failures", "last run", "result"):
        table.add_column(column, overflow="fold")
    for stats in listing.loops:
        state = "running" if stats.running else "paused" if stats.paused else "idle"
        result = stats.last_error or short(listing.results.get(stats.name, ""), 60)
        table.add_row(
            stats.name,
            state,
            f"{stats.interval:g}s",
            str(stats.runs),
            str(stats.failures),
            _ago(stats.last_run_at),
            result,
        )
    return table


async def _call(args: argparse.Namespace, method: str) -> LoopList | LoopStats:
    subs = subjects(args)
    async with connected(args, "ringmaster-loops") as nc:
        if method == "list":
            return await request(
                nc, subs.api(SERVICE, "list"), Empty(), LoopList, timeout=args.timeout
            )
        req = LoopRequest(loop=args.loop)
        return await request(nc, subs.api(SERVICE, method), req, LoopStats, timeout=args.timeout)


def run_list(args: argparse.Namespace) -> int:
    """Print every loop."""
    listing = anyio.run(_call, args, "list")
    assert isinstance(listing, LoopList)
    if args.json:
        sys.stdout.write(msgspec.json.encode(listing).decode() + "\n")
    else:
        print_table(loops_table(listing))
    return 0


def _verb(method: str, done: str) -> Callable[[argparse.Namespace], int]:
    def run_verb(args: argparse.Namespace) -> int:
        stats = anyio.run(_call, args, method)
        assert isinstance(stats, LoopStats)
        state = "paused" if stats.paused else "active"
        print(f"{stats.name}: {done} ({state}, {stats.runs} runs, {stats.failures} failures)")
        return 0

    run_verb.__doc__ = f"{method.capitalize()} one loop."
    return run_verb


def run(args: argparse.Namespace) -> int:
    """Unused: a verb is required (argparse says so first)."""
    return run_list(args)


VERB_PARSERS = {
    "list": ("every hosted loop, its stats and last result", _add_list, run_list),
    "pause": (
        "pause one loop (stays paused across a service resume)",
        _add_one,
        _verb("pause", "paused"),
    ),
    "resume": ("resume one loop", _add_one, _verb("resume", "resumed")),
    "trigger": ("run one loop now", _add_one, _verb("trigger", "triggered")),
}
