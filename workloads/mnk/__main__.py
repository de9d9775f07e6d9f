"""``python -m workloads.mnk COMMAND``: the job kinds and the measuring tools.

Jobs (args and directories from the node agent's environment, see jobs.py):
``selfplay``, ``train``, ``evaluate``, ``prefetch``. Tools (JSON on stdout):
``solve`` (a 3x3 model against perfect play), ``vs-random`` (win/draw/loss rates
against the uniformly random player) and ``loop`` (generations of the learning loop
in-process, no cluster). Exit codes: 0 done, 1 a bad input file, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared.training import MNK_GAMES
from workloads.mnk.game import make_game
from workloads.mnk.jobenv import ArgsError, JobEnv
from workloads.mnk.jobs import JOBS, run_job
from workloads.mnk.match import match
from workloads.mnk.models import load_or_initial
from workloads.mnk.npzio import FormatError
from workloads.mnk.solver import Solver, optimal_share, versus_perfect


def parser() -> argparse.ArgumentParser:
    """The command line."""
    top = argparse.ArgumentParser(prog="python -m workloads.mnk", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for kind in JOBS:
        sub.add_parser(kind, help=f"run a {kind} job (args and dirs from RINGMASTER_JOB_* env)")
    solve = sub.add_parser("solve", help="a 3x3k3 model against perfect play, every branch")
    solve.add_argument("--model", type=Path, help="model file (default: the initial model)")
    solve.add_argument("--config", default="3x3k3", choices=["3x3k3"])
    rand = sub.add_parser("vs-random", help="a model against the uniformly random player")
    rand.add_argument("--model", type=Path, help="model file (default: the initial model)")
    rand.add_argument("--config", required=True, choices=sorted(MNK_GAMES))
    rand.add_argument("--games", type=int, default=1000)
    rand.add_argument("--seed", type=int, default=0)
    loop = sub.add_parser("loop", help="selfplay -> train -> evaluate -> promote, in-process")
    loop.add_argument("--config", required=True, choices=sorted(MNK_GAMES))
    loop.add_argument("--generations", type=int, default=6)
    loop.add_argument("--games", type=int, default=500, help="selfplay games per generation")
    loop.add_argument("--eval-games", type=int, default=200)
    loop.add_argument("--window", type=int, default=8, help="newest data files trained on")
    loop.add_argument("--exploration", type=float, default=0.25)
    loop.add_argument("--simulations", type=int, default=0, help="per move (0: the config's)")
    loop.add_argument(
        "--strength-games", type=int, default=100, help="champion vs depth-2 minimax per gen"
    )
    loop.add_argument("--seed", type=int, default=1)
    loop.add_argument("--workdir", type=Path, help="keep the files here (default: a temp dir)")
    return top


def solve(model_path: Path | None, config: str) -> dict[str, Any]:
    """The ``solve`` report: games against perfect play from both sides, and the losses."""
    started = time.monotonic()
    model, model_id = load_or_initial(_existing(model_path), config)
    solver = Solver(make_game(config))
    games = versus_perfect(model, solver)
    good, total = optimal_share(model, solver)
    losses = games["as_x"]["losses"] + games["as_o"]["losses"]
    return {
        "game": config,
        "model_id": model_id,
        **games,
        "losses": losses,
        "never_loses": losses == 0,
        "optimal_positions": good,
        "positions": total,
        "seconds": round(time.monotonic() - started, 3),
    }


def vs_random(model_path: Path | None, config: str, games: int, seed: int) -> dict[str, Any]:
    """The ``vs-random`` report: rates over ``games`` games, colours alternating."""
    started = time.monotonic()
    model, model_id = load_or_initial(_existing(model_path), config)
    tally = match(make_game(config), model, None, games, seed)
    colours = {
        side: dict(zip(("wins", "losses", "draws"), counts, strict=True))
        for side, counts in tally.by_colour.items()
    }
    return {
        "game": config,
        "model_id": model_id,
        **tally.as_dict(),
        "win_rate": round(tally.wins / games, 4),
        "draw_rate": round(tally.draws / games, 4),
        "loss_rate": round(tally.losses / games, 4),
        **colours,
        "seconds": round(time.monotonic() - started, 3),
    }


def _existing(path: Path | None) -> Path | None:
    if path is not None and not path.is_file():
        raise FormatError(f"{path}: no such file")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code."""
    top = parser()
    args = top.parse_args(argv)  # exits 2 with the usage on bad arguments
    command: str = args.command
    try:
        if command in JOBS:
            run_job(command, JobEnv.from_environ())
            return 0
        if command == "solve":
            report = solve(args.model, args.config)
        elif command == "vs-random":
            if args.games < 2:
                top.error("--games must be at least 2")
            report = vs_random(args.model, args.config, args.games, args.seed)
        else:
            from workloads.mnk.loop import run_loop

            run_loop(args)
            return 0
    except ArgsError as exc:
        print(f"mnk {command}: bad arguments: {exc}", file=sys.stderr)
        top.print_usage(sys.stderr)
        return 2
    except FormatError as exc:
        print(f"mnk {command}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
