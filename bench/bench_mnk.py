"""Reference workload: searched self-play, train and evaluate CPU time; champion strength.

Runs the mnk job functions in this process, one core's worth of single-threaded numpy
(the job process's BLAS threads are pinned to 1 by workloads.mnk): self-play of the
initial network (a plain Monte Carlo tree search on the rules) per game, a training
run on those games and an evaluation of the candidate against the random player.
Figures are CPU seconds of this process, so other work on the machine does not
inflate them. Then, when a champion can be found (``RINGMASTER_MNK_MODELS``: model
files separated by ``:``; else the champions in ``.ringmaster`` left by ``make run``),
its strength as bench/mnk_strength.py measures it: 5x5k4 against the depth-2 minimax
searcher from balanced openings (the goal rows: at least an even score, no loss),
4x4k3 as X against every defense, 3x3k3 against perfect play.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from pathlib import Path
from typing import Any

from bench.harness import ROOT, Ctx, Row
from bench.mnk_strength import VERSUS_GAMES, against_goal, measure, table

#: Self-play games per game for the throughput figures.
SELFPLAY_GAMES = {"4x4k3": 256, "5x5k4": 128}
EVAL_GAMES = 40


def _job(kind: str, args: dict[str, Any], inputs: dict[str, Path], root: Path) -> Any:
    from workloads.mnk.loop import run_job_quietly

    return run_job_quietly(kind, args, inputs, root)


def throughput(ctx: Ctx, game: str) -> list[str]:
    """Self-play, train and evaluate of one game; their CPU seconds as context."""
    from shared.training import CANDIDATE_FILE, GAMES_FILE

    games = SELFPLAY_GAMES[game]
    work = ctx.path(game)
    started = time.process_time()
    played = _job("selfplay", {"game": game, "games": games, "seed": 1}, {}, work / "s")
    selfplay_cpu = time.process_time() - started
    rate = games / selfplay_cpu
    ctx.context("mnk", f"{game} self-play games per CPU second", rate, "/s")
    data = {"data-0.npz": work / "s" / "out" / GAMES_FILE}
    started = time.process_time()
    trained = _job("train", {"game": game, "seed": 1}, data, work / "t")
    train_cpu = time.process_time() - started
    ctx.context("mnk", f"{game} train CPU ({trained['samples']} samples)", train_cpu, "s")
    duel = {CANDIDATE_FILE: work / "t" / "out" / "model.npz"}
    started = time.process_time()
    args = {"game": game, "games": EVAL_GAMES, "seed": 1, "early_stop": False}
    judged = _job("evaluate", args, duel, work / "e")
    eval_cpu = time.process_time() - started
    ctx.context("mnk", f"{game} evaluate CPU ({EVAL_GAMES} games vs random)", eval_cpu, "s")
    return [
        f"- {game}: self-play {games} games in {selfplay_cpu:.2f} CPU s ({rate:.1f} games/s,"
        f" {played['positions']} positions, {played['simulations']} simulations per move);"
        f" train {train_cpu:.2f} CPU s on {trained['samples']} samples;"
        f" evaluate {EVAL_GAMES} games against random in {eval_cpu:.2f} CPU s"
        f" ({judged['wins']} wins, {judged['draws']} draws, {judged['losses']} losses)",
    ]


def champions(ctx: Ctx) -> list[Path]:
    """Model files to measure: ``RINGMASTER_MNK_MODELS``, or ``make run``'s champions."""
    listed = os.environ.get("RINGMASTER_MNK_MODELS", "")
    if listed:
        return [Path(p) for p in listed.split(":") if p]
    data_dir = ROOT / ".ringmaster"
    if not (data_dir / "nats").is_dir():
        return []
    from bench.mnk_outcome import from_data_dir

    out = ctx.path("champions")
    out.mkdir()
    return [Path(c["path"]) for c in from_data_dir(data_dir, "ringmaster", out)]


def run(ctx: Ctx) -> list[Row]:
    """The throughput context figures, and the strength row when there is a champion."""
    lines = [
        "Searched self-play of the initial network, one training and one evaluation per",
        "game, in one process (CPU seconds):",
        "",
    ]
    for game in SELFPLAY_GAMES:
        with contextlib.redirect_stdout(io.StringIO()):
            lines += throughput(ctx, game)
    rows: list[Row] = []
    found = champions(ctx)
    if not found:
        lines += ["", "No champion to measure (set RINGMASTER_MNK_MODELS or run `make run`)."]
    else:
        measured = [measure(path, VERSUS_GAMES) for path in found]
        lines += ["", table(measured), "", *(f"- {against_goal(row)}" for row in measured)]
        for row in measured:
            vs = row.get("versus_minimax2")
            if row["game"] == "5x5k4" and vs is not None:
                rows.append(
                    Row(
                        key="mnk",
                        title="5x5k4 champion's score against depth-2 minimax",
                        figure=vs["score"],
                        unit="score",
                        raw=None,
                        raw_label="no raw limit",
                        goal=0.5,
                        higher_is_better=True,
                        notes=[
                            f"{vs['games']} games in pairs sharing an opening of 2 random"
                            " stones proven drawn (balanced: docs/workload.md), the"
                            f" champion searching ({vs['simulations']} simulations per move,"
                            " the exact root check, most visited move), X in one game of"
                            " each pair and O in the other; score = (wins + draws / 2) /"
                            f" games; W / D / L {vs['wins']} / {vs['draws']} / {vs['losses']}",
                        ],
                        inclusive=True,
                    )
                )
                anyway = row["versus_minimax2_random"]
                split = anyway["losses_from_lost_openings"]
                rows.append(
                    Row(
                        key="mnk_losses",
                        title="5x5k4 champion's losses against depth-2 minimax (issue 18)",
                        figure=vs["losses"],
                        unit="games",
                        raw=None,
                        raw_label="no raw limit",
                        goal=0,
                        higher_is_better=False,
                        notes=[
                            f"of {vs['games']} games from balanced openings; from any 2"
                            f" random stones {anyway['losses']} losses: {split['forced']}"
                            " from openings lost by force for the champion's side,"
                            f" {split['not_forced']} from openings that were not,"
                            f" {split['unsettled']} unsettled (workloads/mnk/proof.py)",
                        ],
                        inclusive=True,
                    )
                )
    ctx.section("Reference workload (mnk)", lines)
    return rows
