"""``ringmaster models``: each game's champions and their Elo, oldest first.

Reads ``P.api.training_coordinator.elo``. The reply is decoded with lenient Structs of
our own (unknown fields ignored), so the command keeps working as the coordinator's
reply grows.
"""

from __future__ import annotations

import argparse
import sys
import time

import anyio
import msgspec
from rich.table import Table

from shared.cli.client import connected, request, subjects
from shared.training import GameRef


class EloRow(msgspec.Struct, frozen=True):
    """One champion of a game."""

    generation: int
    model_id: str
    elo: float
    promoted_at: float = 0.0
    games: int = 0
    score: float = 0.0


class EloTable(msgspec.Struct, frozen=True):
    """The champions of one game."""

    game: str
    entries: list[EloRow] = []


class EloReply(msgspec.Struct, frozen=True):
    """The coordinator's answer."""

    tables: list[EloTable] = []


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--game`` and ``--json``."""
    parser.add_argument(
        "--game", "--config", dest="game", default="", help="one game (default: all)"
    )
    parser.add_argument("--json", action="store_true", help="print the reply as JSON")


async def _fetch(args: argparse.Namespace) -> EloReply:
    subs = subjects(args)
    async with connected(args, "ringmaster-models") as nc:
        return await request(
            nc,
            subs.api("training_coordinator", "elo"),
            GameRef(game=args.game),
            EloReply,
            timeout=5,
        )


def table(reply: EloReply) -> Table:
    """The Elo table: game, generation, model, Elo, its gain, evaluation games, when."""
    out = Table(title="champions (Elo against the random player = 0)", title_justify="left")
    for column in ("game", "generation", "model", "elo", "gain", "eval games", "promoted"):
        out.add_column(column)
    for elo_table in reply.tables:
        previous = 0.0
        for row in elo_table.entries:
            when = time.strftime("%H:%M:%S", time.localtime(row.promoted_at))
            out.add_row(
                elo_table.game,
                str(row.generation),
                row.model_id[:12],
                f"{row.elo:.0f}",
                f"{row.elo - previous:+.0f}",
                str(row.games),
                when,
            )
            previous = row.elo
        if not elo_table.entries:
            out.add_row(elo_table.game, "-", "no champion yet", "", "", "", "")
    return out


def run(args: argparse.Namespace) -> int:
    """Print the Elo table."""
    reply = anyio.run(_fetch, args)
    if args.json:
        sys.stdout.write(msgspec.json.encode(reply).decode() + "\n")
        return 0
    from shared.cli.tables import print_table

    print_table(table(reply))
    return 0
