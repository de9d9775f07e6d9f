"""``ringmaster scheduler priorities|override``: the selfplay scheduler's weights.

``priorities`` shows the scheduler's last round (each game's priority, share,
queued jobs and operator weight); ``override GAME WEIGHT`` multiplies a game's
priority by WEIGHT (0 starves it), ``override GAME --clear`` removes the weight.
The reply types live in the scheduler's package, which ``shared`` never imports:
they are read here with lenient Structs of the fields shown.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import anyio
import msgspec
from rich.table import Table

from shared.cli.client import EXIT_CODES, CliError, connected, request, subjects
from shared.cli.loops import add_timeout
from shared.cli.tables import print_table
from shared.contracts import Empty

SERVICE = "selfplay_scheduler"
EPILOG = EXIT_CODES


class PrioritiesView(msgspec.Struct, kw_only=True):
    """The fields of the scheduler's Priorities reply that are shown."""

    priorities: dict[str, float] = msgspec.field(default_factory=dict)
    shares: dict[str, float] = msgspec.field(default_factory=dict)
    allocation: dict[str, int] = msgspec.field(default_factory=dict)
    queued_by_game: dict[str, int] = msgspec.field(default_factory=dict)
    overrides: dict[str, float] = msgspec.field(default_factory=dict)
    in_training: list[str] = msgspec.field(default_factory=list)
    target: int = 0
    queued: int | None = None
    free_slots: int = 0
    nodes_alive: int = 0


class OverrideRequest(msgspec.Struct, kw_only=True):
    """What ``P.api.selfplay_scheduler.override`` takes: a weight, or None to clear."""

    game: str
    weight: float | None = None


class OverridesView(msgspec.Struct, kw_only=True):
    """The operator weights in force after the change."""

    weights: dict[str, float] = msgspec.field(default_factory=dict)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Nothing before the verb."""


def _add_priorities(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="the whole reply as JSON")
    add_timeout(parser)


def _add_override(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("game", metavar="GAME", help="a game, such as tictactoe")
    parser.add_argument("weight", metavar="WEIGHT", nargs="?", type=float, help="0 or more")
    parser.add_argument("--clear", action="store_true", help="remove GAME's weight")
    add_timeout(parser)


def priorities_table(view: PrioritiesView) -> Table:
    """One row per game."""
    queued = "?" if view.queued is None else str(view.queued)
    title = f"selfplay priorities: target {view.target}, queued {queued}, {view.nodes_alive} nodes"
    table = Table(title=title, title_justify="left")
    for column in ("game", "priority", "share", "allocated", "queued", "override", "training"):
        table.add_column(column)
    for game in sorted(view.priorities, key=lambda c: -view.priorities[c]):
        override = view.overrides.get(game)
        table.add_row(
            game,
            f"{view.priorities[game]:.3g}",
            f"{view.shares.get(game, 0.0):.1%}",
            str(view.allocation.get(game, 0)),
            str(view.queued_by_game.get(game, 0)),
            "-" if override is None else f"x{override:g}",
            "yes" if game in view.in_training else "",
        )
    return table


async def _call(args: argparse.Namespace, method: str, payload: msgspec.Struct) -> Any:
    subs = subjects(args)
    reply = PrioritiesView if method == "priorities" else OverridesView
    async with connected(args, "ringmaster-scheduler") as nc:
        return await request(nc, subs.api(SERVICE, method), payload, reply, timeout=args.timeout)


def run_priorities(args: argparse.Namespace) -> int:
    """Print the last round's priorities."""
    view = anyio.run(_call, args, "priorities", Empty())
    if args.json:
        sys.stdout.write(msgspec.json.encode(view).decode() + "\n")
    else:
        print_table(priorities_table(view))
    return 0


def run_override(args: argparse.Namespace) -> int:
    """Set or clear one game's weight; print the weights in force."""
    if args.clear == (args.weight is not None):
        raise CliError("give either WEIGHT or --clear", 2)
    if args.weight is not None and not args.weight >= 0:
        raise CliError(f"WEIGHT {args.weight:g} must be 0 or more", 2)
    view = anyio.run(_call, args, "override", OverrideRequest(game=args.game, weight=args.weight))
    weights = ", ".join(f"{k}x{v:g}" for k, v in sorted(view.weights.items())) or "none"
    print(f"{args.game}: {'cleared' if args.clear else f'x{args.weight:g}'}; overrides: {weights}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Unused: a verb is required."""
    return run_priorities(args)


VERB_PARSERS = {
    "priorities": ("each game's priority, share and queue", _add_priorities, run_priorities),
    "override": ("set (or --clear) a game's operator weight", _add_override, run_override),
}
