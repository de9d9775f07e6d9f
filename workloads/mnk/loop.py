"""The learning loop without a cluster: selfplay -> train -> evaluate -> promote, in-process.

It calls the same job functions a node agent runs, with the same files in the same
directories, so it shows the workload learns on its own and tunes it quickly. Each
generation prints one JSON line: the selfplay tallies, the training losses, the
evaluation and whether the candidate was promoted, the candidate's and the champion's
strength (3x3: losses against perfect play; bigger boards: the champion's score,
searching, against the depth-2 minimax searcher over ``--strength-games`` games) and
the loop's seconds so far (wall and CPU, measuring left out).
A candidate is promoted when the evaluation's SPRT accepts it, or, undecided at the
game budget, when it scored at least ``PROMOTE_SCORE`` (the cluster's training
coordinator applies its own rule to the same tallies).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from shared.training import CANDIDATE_FILE, CHAMPION_FILE, GAMES_FILE, MODEL_FILE
from workloads.mnk.agents import MinimaxAgent, SearchAgent
from workloads.mnk.arena import duel
from workloads.mnk.game import make_game
from workloads.mnk.jobenv import JobEnv
from workloads.mnk.jobs import run_job
from workloads.mnk.models import load_model
from workloads.mnk.solver import Solver, versus_perfect

PROMOTE_SCORE = 0.55
#: Random plies opening each pair of strength games.
STRENGTH_OPENING = 2


def run_job_quietly(kind: str, args: dict[str, Any], inputs: dict[str, Path], root: Path) -> Any:
    """One job in a fresh ``root`` (inputs copied in), its progress lines swallowed."""
    shutil.rmtree(root, ignore_errors=True)
    (root / "in").mkdir(parents=True)
    for name, source in inputs.items():
        shutil.copyfile(source, root / "in" / name)
    job = JobEnv(args=args, inputs=root / "in", outputs=root / "out")
    job.outputs.mkdir()
    with contextlib.redirect_stdout(io.StringIO()):
        return run_job(kind, job)


def strength(
    config: str, model_path: Path | None, solver: Solver | None, games: int
) -> dict[str, Any]:
    """Losses against perfect play (3x3), or the score against depth-2 minimax."""
    if model_path is None:
        return {}
    model = load_model(model_path, config)
    if solver is not None:
        paths = versus_perfect(model, solver)
        return {"minimax_losses": paths["as_x"]["losses"] + paths["as_o"]["losses"]}
    if games < 2:
        return {}
    game = make_game(config)
    tally = duel(
        game, SearchAgent(model), MinimaxAgent(game), games, 12345, opening_plies=STRENGTH_OPENING
    )
    score = (tally.wins + tally.draws / 2) / tally.games
    return {"vs_minimax2_score": round(score, 3), "vs_minimax2": tally.as_dict()}


def run_loop(opts: argparse.Namespace) -> tuple[list[dict[str, Any]], Path | None]:
    """Run ``opts.generations`` generations: prints one record per generation; returns
    the records and the final champion's file (under ``opts.workdir``, when given)."""
    config: str = opts.config
    with contextlib.ExitStack() as stack:
        work: Path = opts.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        work.mkdir(parents=True, exist_ok=True)
        solver = Solver(make_game(config)) if config == "3x3k3" else None
        champion: Path | None = None
        data: list[Path] = []
        records = []
        # The loop's own time: measuring the models (solver, random games) is left out.
        wall = cpu = 0.0
        for gen in range(1, opts.generations + 1):
            started, started_cpu = time.monotonic(), time.process_time()
            seed = opts.seed * 1000 + gen
            inputs = {MODEL_FILE: champion} if champion else {}
            play = run_job_quietly(
                "selfplay",
                {
                    "game": config,
                    "games": opts.games,
                    "seed": seed,
                    "exploration": opts.exploration,
                    **({"simulations": opts.simulations} if opts.simulations else {}),
                },
                inputs,
                work / "selfplay",
            )
            data.append(work / f"data-{gen}.npz")
            shutil.copyfile(work / "selfplay" / "out" / GAMES_FILE, data[-1])
            window = {f"data-{i}.npz": path for i, path in enumerate(data[-opts.window :])}
            trained = run_job_quietly(
                "train", {"game": config, "seed": seed}, {**window, **inputs}, work / "train"
            )
            candidate = work / f"model-{gen}.npz"
            shutil.copyfile(work / "train" / "out" / MODEL_FILE, candidate)
            duel = {CANDIDATE_FILE: candidate, **({CHAMPION_FILE: champion} if champion else {})}
            evaluated = run_job_quietly(
                "evaluate",
                {
                    "game": config,
                    "games": opts.eval_games,
                    "seed": seed,
                    **({"simulations": opts.simulations} if opts.simulations else {}),
                },
                duel,
                work / "evaluate",
            )
            promoted = evaluated["sprt"] == "accept" or (
                evaluated["sprt"] == "continue" and _score(evaluated) >= PROMOTE_SCORE
            )
            if promoted:
                champion = candidate
            wall += time.monotonic() - started
            cpu += time.process_time() - started_cpu
            record = {
                "generation": gen,
                "selfplay": {k: play[k] for k in ("x_wins", "o_wins", "draws", "seconds")},
                "train": {k: trained[k] for k in ("samples", "losses", "seconds")},
                "evaluate": {
                    k: evaluated[k] for k in ("wins", "losses", "draws", "sprt", "seconds")
                },
                "promoted": promoted,
                "candidate": strength(config, candidate, solver, 0),
                "champion": strength(config, champion, solver, opts.strength_games),
                "elapsed": round(wall, 2),
                "cpu": round(cpu, 2),
            }
            print(json.dumps(record), flush=True)
            records.append(record)
        return records, champion


def _score(result: dict[str, Any]) -> float:
    return float(result["wins"] + result["draws"] / 2) / max(1, int(result["games"]))
