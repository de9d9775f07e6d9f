"""How strong the champions play: 5x5k4 against depth-2 minimax, 4x4k3 and 3x3k3 exactly.

Per model file (each says its config):

- 5x5k4 (and any network): ``--games`` games (200 by default) of the model's search
  (``--simulations`` per move, 800 by default) against the depth-2 minimax searcher
  on the open-lines heuristic
  (workloads.mnk.agents.MinimaxAgent), in pairs sharing two random opening moves, the
  model X in one game of each pair and O in the other. Twice: from balanced openings
  (two random stones the exact solver proves drawn, so either side can hold them:
  the goal's row) and from any two random stones (about half of them are won by force
  for X, so a loss as O there can be the opening's, not the model's);
- 4x4k3 (a first-player win): the model as X against every defense: all of O's
  replies at every turn, X moving by its search (ties broken by a fixed generator),
  counted over the distinct lines of play;
- 3x3k3: the table against perfect play from both sides, every branch
  (``python -m workloads.mnk solve``).

Models come from ``--model FILE ...``, a running cluster (``--nats-url URL``) or a
stopped one's data directory (``--data-dir .ringmaster``), found as bench/mnk_outcome.py
finds them. Prints a Markdown table; ``--json`` prints the rows as JSON instead.

Usage: ``.venv/bin/python bench/mnk_strength.py --model model.npz`` or
``.venv/bin/python -m bench.mnk_strength --data-dir .ringmaster``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Games against the depth-2 searcher and the random plies opening each pair.
VERSUS_GAMES = 200
OPENING_PLIES = 2
#: Simulations per move of the model's search against the depth-2 searcher: more than
#: self-play's (agents.SIMULATIONS), since play-time search is cheap next to training.
VERSUS_SIMULATIONS = 800
SEED = 2026
#: Nodes the exact solver may spend on one lost game's opening (a few seconds).
PROOF_BUDGET = 1_000_000
#: Positions searched at once in the every-defense walk.
CHUNK = 2048


def balanced_openings(game: Any, pairs: int, seed: int = SEED) -> dict[str, Any]:
    """``pairs`` random openings of ``OPENING_PLIES`` stones that are draws by force.

    Drawn as the plain duel draws its openings; an opening is kept when the exact
    solver proves it a draw within ``PROOF_BUDGET`` nodes (one proof per opening up to
    symmetry). Returns the openings and how many of each value were drawn on the way.
    """
    from workloads.mnk.match import random_opening
    from workloads.mnk.proof import Prover

    prover = Prover(game)
    values: dict[int, int | None] = {}
    seen = {"drawn": 0, "won_by_x": 0, "won_by_o": 0, "unsettled": 0}
    names = {0: "drawn", 1: "won_by_x", -1: "won_by_o", None: "unsettled"}
    kept: list[list[int]] = []
    pair = 0
    while len(kept) < pairs:
        if pair >= 50 * pairs:
            raise RuntimeError(f"only {len(kept)} drawn openings in {pair} tries")
        opening = random_opening(game, OPENING_PLIES, np.random.default_rng([seed, 2 * pair, 1]))
        pair += 1
        key = game.key(game.after(opening))
        if key not in values:
            values[key] = x_value(prover, opening)
        value = values[key]
        seen[names[value]] += 1
        if value == 0:
            kept.append(opening)
    return {"openings": kept, "tried": pair, **seen}


def versus_minimax(
    path: Path,
    games: int,
    seed: int = SEED,
    simulations: int = VERSUS_SIMULATIONS,
    *,
    balanced: bool = False,
) -> dict[str, Any]:
    """The model's search against depth-2 minimax, both colours; openings of two
    random stones, or only drawn ones when ``balanced``."""
    from workloads.mnk.agents import MinimaxAgent, SearchAgent
    from workloads.mnk.arena import duel
    from workloads.mnk.models import load_model

    model = load_model(path)
    game = model.game
    started = time.process_time()
    chosen = balanced_openings(game, (games + 1) // 2, seed) if balanced else None
    drawn = None if chosen is None else {k: v for k, v in chosen.items() if k != "openings"}
    tally = duel(
        game,
        SearchAgent(model, simulations, lookahead=True),
        MinimaxAgent(game),
        games,
        seed,
        opening_plies=OPENING_PLIES,
        openings=None if chosen is None else chosen["openings"],
    )
    return {
        "openings": "balanced" if balanced else "random",
        "drawn_openings": drawn,
        "simulations": simulations,
        **tally.as_dict(),
        "losses_from_lost_openings": lost_by_force(game, tally.lost),
        "score": round((tally.wins + tally.draws / 2) / max(1, tally.games), 3),
        "as_x": dict(zip(("wins", "losses", "draws"), tally.by_colour["as_x"], strict=True)),
        "as_o": dict(zip(("wins", "losses", "draws"), tally.by_colour["as_o"], strict=True)),
        "cpu_seconds": round(time.process_time() - started, 1),
    }


def lost_by_force(game: Any, lost: list[tuple[int, list[int]]]) -> dict[str, int]:
    """Of the model's lost games, how many began in an opening already lost by force
    for the model's side (the exact solver, workloads/mnk/proof.py), how many in one
    that was not (drawn or won), and how many the budget left unsettled."""
    from workloads.mnk.proof import Prover

    prover = Prover(game)
    counts = {"forced": 0, "not_forced": 0, "unsettled": 0}
    for side, opening in lost:
        value = x_value(prover, opening)
        if value is None:
            counts["unsettled"] += 1
            continue
        counts["forced" if value * side == -1 else "not_forced"] += 1
    return counts


def x_value(prover: Any, opening: list[int]) -> int | None:
    """The exact value of ``opening`` for X (1: X wins by force, 0: a draw, -1: O
    wins), or None when ``PROOF_BUDGET`` nodes did not settle it."""
    value = prover.value(opening, PROOF_BUDGET)
    if value is None:
        return None
    # The solver gives the player to move's value: X's after an even opening.
    return int(value) if len(opening) % 2 == 0 else -int(value)


def every_defense(path: Path) -> dict[str, int]:
    """Lines of play of the model as X against every sequence of O's replies."""
    from workloads.mnk.agents import SearchAgent
    from workloads.mnk.models import load_model

    model = load_model(path)
    game = model.game
    agent = SearchAgent(model)
    rng = np.random.default_rng(0)
    # Distinct positions with X to move, each with how many lines of play reach it.
    frontier: dict[bytes, int] = {game.empty().tobytes(): 1}
    counts = {"lines": 0, "wins": 0, "draws": 0, "losses": 0}

    def finish(outcome: str, lines: int) -> None:
        counts[outcome] += lines
        counts["lines"] += lines

    while frontier:
        boards = np.stack([np.frombuffer(key, dtype=np.int8) for key in frontier])
        # Chunks bound the search trees' memory when a weak X lets the lines multiply.
        moves = np.concatenate(
            [agent.moves(boards[i : i + CHUNK], rng) for i in range(0, len(boards), CHUNK)]
        )
        after: dict[bytes, int] = {}
        for board, move, lines in zip(boards, moves, frontier.values(), strict=True):
            played = board.copy()
            played[move] = 1
            over, winner = game.terminal(played)
            if over:
                finish("wins" if winner == 1 else "draws", lines)
                continue
            for reply in game.legal_moves(played):
                answered = played.copy()
                answered[reply] = -1
                over, winner = game.terminal(answered)
                if over:
                    finish("losses" if winner == -1 else "draws", lines)
                else:
                    key = answered.tobytes()
                    after[key] = after.get(key, 0) + lines
        frontier = after
    return counts


def measure(path: Path, games: int, simulations: int = VERSUS_SIMULATIONS) -> dict[str, Any]:
    """The strength figures of one model file."""
    from workloads.mnk.__main__ import solve
    from workloads.mnk.models import load_model

    model = load_model(path)
    game = model.game.name
    row: dict[str, Any] = {"game": game, "model_id": model.model_id, "kind": model.kind}
    if game == "3x3k3":
        solved = solve(path, game)
        row["exact"] = (
            f"vs perfect play: {solved['as_x']['losses']} / {solved['as_o']['losses']} losses "
            f"in {solved['as_x']['games']} / {solved['as_o']['games']} lines (X / O)"
        )
        return row
    if game == "4x4k3":
        found = every_defense(path)
        row["every_defense"] = found
        row["exact"] = (
            f"as X vs every defense: {found['wins']} wins, {found['draws']} draws, "
            f"{found['losses']} losses in {found['lines']} lines"
        )
        # A first-player win has no drawn openings: its duel is the random one alone.
        row["versus_minimax2"] = versus_minimax(path, games, simulations=simulations)
        return row
    row["versus_minimax2"] = versus_minimax(path, games, simulations=simulations, balanced=True)
    row["versus_minimax2_random"] = versus_minimax(path, games, simulations=simulations)
    return row


def table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of the measured rows: one line per model and openings."""
    lines = [
        "| game | model | openings | vs depth-2 minimax (W / D / L, score) | as X / as O (W-D-L) "
        "| losses from openings lost by force / not / unsettled | exact |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        model = f"{row['model_id']} ({row['kind']})"
        duels = [row[k] for k in ("versus_minimax2", "versus_minimax2_random") if k in row]
        if not duels:
            lines.append(
                f"| {row['game']} | {model} | n/a | n/a | n/a | n/a | {row.get('exact', 'n/a')} |"
            )
        for vs in duels:
            split = vs["losses_from_lost_openings"]
            forced = f"{split['forced']} / {split['not_forced']} / {split['unsettled']}"
            duel_text = (
                f"{vs['wins']} / {vs['draws']} / {vs['losses']}, {vs['score']:.3f}"
                f" ({vs['simulations']} sims)"
            )
            colours = " / ".join(
                f"{vs[c]['wins']}-{vs[c]['draws']}-{vs[c]['losses']}" for c in ("as_x", "as_o")
            )
            lines.append(
                f"| {row['game']} | {model} | {_openings_text(vs)} | {duel_text} | {colours} "
                f"| {forced} | {row.get('exact', 'n/a')} |"
            )
    return "\n".join(lines)


def _openings_text(vs: dict[str, Any]) -> str:
    drawn = vs["drawn_openings"]
    if drawn is None:
        return "two random stones"
    return (
        f"two random stones proven drawn ({drawn['drawn']} of {drawn['tried']} tried; "
        f"{drawn['won_by_x']} won by X, {drawn['won_by_o']} by O, {drawn['unsettled']} "
        "unsettled, left out)"
    )


def against_goal(row: dict[str, Any]) -> str:
    """Issue 18's goal for this row, and whether it is met."""
    game = row["game"]
    if game == "3x3k3":
        lost = "0 / 0 losses" in row.get("exact", "")
        return f"3x3k3 never loses to perfect play: {'met' if lost else 'NOT met'}"
    if game == "4x4k3":
        found = row["every_defense"]
        won = found["wins"] == found["lines"]
        return f"4x4k3 as X wins every line against every defense: {'met' if won else 'NOT met'}"
    vs = row["versus_minimax2"]
    verdict = "met" if vs["losses"] == 0 else "NOT met"
    text = (
        f"{game} loses no game of {vs['games']} to the depth-2 searcher from balanced "
        f"openings: {verdict} ({vs['losses']} losses)"
    )
    anyway = row.get("versus_minimax2_random")
    if anyway is not None:
        split = anyway["losses_from_lost_openings"]
        text += (
            f"; from any two random stones {anyway['losses']} losses, {split['forced']} of "
            f"them from openings already lost by force for the model's side, "
            f"{split['not_forced']} from openings that were not, {split['unsettled']} "
            "unsettled by the solver's budget"
        )
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Find the models, measure them, print the table (or JSON)."""
    if not __package__:  # run as a script: make ``bench`` importable
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.mnk_outcome import fetch_champions, from_data_dir

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, nargs="+", help="model files")
    source.add_argument("--nats-url", help="a running cluster's NATS URL")
    source.add_argument("--data-dir", type=Path, help="a stopped cluster's data directory")
    parser.add_argument("--prefix", default="ringmaster")
    parser.add_argument("--games", type=int, default=VERSUS_GAMES, help="games vs minimax")
    parser.add_argument(
        "--simulations", type=int, default=VERSUS_SIMULATIONS, help="per move vs minimax"
    )
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        if args.model:
            paths = list(args.model)
        elif args.nats_url:
            paths = [
                c["path"] for c in asyncio.run(fetch_champions(args.nats_url, args.prefix, out))
            ]
        else:
            paths = [c["path"] for c in from_data_dir(args.data_dir.resolve(), args.prefix, out)]
        if not paths:
            print("no champions found", file=sys.stderr)
            return 1
        rows = [measure(Path(path), args.games, args.simulations) for path in paths]
    if args.json:
        print(json.dumps(rows, sort_keys=True))
    else:
        print(table(rows))
        print("\nAgainst the goal (issue 18):\n")
        for row in rows:
            print(f"- {against_goal(row)}")
        print(f"\nmeasured in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
