"""The job kinds as a node agent runs them: args from the environment, files in and out.

Each job reads ``RINGMASTER_JOB_ARGS`` (a JSON object), its inputs from
``RINGMASTER_INPUTS_DIR`` and writes its outputs and ``result.json`` to
``RINGMASTER_OUTPUTS_DIR``. Stdout carries only progress lines (``{"progress": x}``):
the agent counts any other line as invalid. Bad args raise ``ArgsError`` (exit 2),
bad input files ``FormatError`` (exit 1, one line on stderr): an evaluation with a
corrupt model fails, it never reports a score.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from shared.sprt import GATE, SprtParams, sprt
from shared.training import CANDIDATE_FILE, CHAMPION_FILE, GAMES_FILE, MODEL_FILE
from workloads.mnk.agents import RandomAgent, SearchAgent
from workloads.mnk.arena import duel
from workloads.mnk.data import Games
from workloads.mnk.game import make_game
from workloads.mnk.jobenv import JobEnv, emit_progress, every_tenth
from workloads.mnk.match import Tally, match
from workloads.mnk.models import load_model, load_or_initial
from workloads.mnk.npzio import FormatError
from workloads.mnk.play import play_game
from workloads.mnk.selfplay import SelfplaySettings, play_searched
from workloads.mnk.table import TableModel
from workloads.mnk.train import train

#: Random plies that open each pair of evaluation games (played once with each colour).
OPENING_PLIES = {"3x3k3": 1, "4x4k3": 2, "5x5k4": 2}
#: Games an evaluation plays before it may stop early (a few games say little of Elo).
MIN_GAMES = 20


def selfplay(job: JobEnv) -> dict[str, Any]:
    """Champion against itself; writes games.npz.

    The table (3x3) plays epsilon-greedy on its values (``exploration``: epsilon).
    Networks search every move (``simulations`` per move, 0: the config's default)
    with ``exploration`` as the weight of the Dirichlet noise on the root priors.
    """
    config = job.config()
    games = job.number("games", 100, 1, 1_000_000)
    seed = job.number("seed", 0, 0, 2**63 - 1)
    epsilon = job.number("exploration", 0.1, 0.0, 1.0, float)
    simulations = job.number("simulations", 0, 0, 4096)
    started = time.monotonic()
    model, model_id = load_or_initial(job.inputs / MODEL_FILE, config)
    game = make_game(config)
    extra: dict[str, Any] = {}
    if isinstance(model, TableModel):
        rng = np.random.default_rng(seed)
        report = every_tenth(games, emit_progress)
        records = []
        for i in range(games):
            played = play_game(game, model, model, rng, epsilon=epsilon, explore=True)
            records.append((played.moves, played.winner, played.explored))
            report(i + 1)
        data = Games.build(game, model_id, records)
    else:
        settings = SelfplaySettings.of(config, epsilon, simulations)
        data = play_searched(game, model, model_id, games, seed, settings, at_most_every(0.005))
        extra = {"simulations": settings.simulations}
    data.save(job.outputs / GAMES_FILE)
    result = {"game": config, **data.counts(), "model_id": model_id, "exploration": epsilon}
    positions = int(data.lengths.sum())
    result |= {"positions": positions, "samples": positions, **extra}
    return {**result, "seconds": round(time.monotonic() - started, 3)}


def at_most_every(step: float) -> Callable[[float], None]:
    """A progress reporter that writes a line only when the share grew by ``step``."""
    last = [-1.0]

    def report(share: float) -> None:
        if share >= last[0] + step:
            last[0] = share
            emit_progress(share)

    return report


def data_files(inputs: Path) -> list[Path]:
    """The games inputs: ``data-<i>.npz`` in index order, and ``games.npz`` if present."""

    def index(path: Path) -> tuple[int, str]:
        tail = path.stem.removeprefix("data-")
        return (int(tail), "") if tail.isdigit() else (1 << 62, tail)

    found = sorted(inputs.glob("data-*.npz"), key=index)
    return found + ([inputs / GAMES_FILE] if (inputs / GAMES_FILE).is_file() else [])


def train_job(job: JobEnv) -> dict[str, Any]:
    """Train a candidate from the champion on the data inputs; writes model.npz."""
    config = job.config()
    seed = job.number("seed", 0, 0, 2**63 - 1)
    epochs = job.number("epochs", 0, 0, 1000) or None
    started = time.monotonic()
    parent, parent_id = load_or_initial(job.inputs / MODEL_FILE, config)
    batches, skipped = [], []
    for path in data_files(job.inputs):
        try:
            batches.append(Games.load(path, config))
        except FormatError as exc:
            # One bad blob must not stop a config's training for good: skip it, say so.
            print(f"mnk train: skipped {exc}", file=sys.stderr)
            skipped.append(path.name)
    games = sum(len(b) for b in batches)
    if games == 0:
        raise FormatError(f"no usable {config} games among the inputs ({len(skipped)} skipped)")
    model, losses, samples = train(
        parent, batches, seed=seed, epochs=epochs, progress=lambda p: emit_progress(0.1 + 0.9 * p)
    )
    model_id = model.save(job.outputs / MODEL_FILE)
    return {
        "game": config,
        "samples": samples,
        "games": games,
        "losses": [round(x, 6) for x in losses],
        "parent": parent_id,
        "model_id": model_id,
        "skipped_files": skipped,
        "seconds": round(time.monotonic() - started, 3),
    }


def evaluate(job: JobEnv) -> dict[str, Any]:
    """Candidate against champion (or the random player), colours alternating.

    Networks search on both sides (``simulations`` per move, 0: the config's default)
    and play their most visited move; pairs of games open with ``opening`` random
    plies. Tables play their one-ply choice; their pairs open where one model expects
    the other to blunder (against the random player: ``opening`` random plies). With
    ``early_stop`` (the default) the match ends, after at least ``min_games``, once
    the SPRT on its tallies (``shared/sprt.py``; ``elo0``, ``elo1``, ``alpha``,
    ``beta``: the coordinator passes its own) has decided.
    """
    config = job.config()
    budget = job.number("games", 100, 2, 1_000_000)
    seed = job.number("seed", 0, 0, 2**63 - 1)
    opening = job.number("opening", OPENING_PLIES.get(config, 2), 0, 8)
    default = GATE
    params = SprtParams(
        elo0=job.number("elo0", default.elo0, -1000, 1000, float),
        elo1=job.number("elo1", default.elo1, -1000, 1000, float),
        alpha=job.number("alpha", default.alpha, 1e-6, 0.5, float),
        beta=job.number("beta", default.beta, 1e-6, 0.5, float),
    )
    early_stop = job.flag("early_stop", True)
    min_games = job.number("min_games", min(budget, MIN_GAMES), 0, budget)
    disagreements = job.flag("disagreements", True)
    started = time.monotonic()
    candidate = load_model(job.inputs / CANDIDATE_FILE, config)
    champion_path = job.inputs / CHAMPION_FILE
    champion = load_model(champion_path, config) if champion_path.exists() else None

    def stop(tally: Tally, games_left: int) -> bool:
        if not early_stop or tally.games < min_games:
            return False
        return sprt(tally.counts(), params)[0] != "continue"

    game = make_game(config)
    if isinstance(candidate, TableModel):
        tally = match(
            game,
            candidate,
            champion,
            budget,
            seed,
            opening_plies=opening,
            disagreements=disagreements,
            stop=stop,
            progress=every_tenth(budget, emit_progress),
        )
    else:
        simulations = job.number("simulations", 0, 0, 4096) or None
        player = SearchAgent(candidate, simulations)
        opponent = RandomAgent() if champion is None else SearchAgent(champion, simulations)
        tally = duel(
            game,
            player,
            opponent,
            budget,
            seed,
            opening_plies=opening,
            stop=stop,
            progress=lambda done: emit_progress(done / budget),
        )
    verdict, llr = sprt(tally.counts(), params)
    return {
        "game": config,
        **tally.as_dict(),
        "budget": budget,
        "stopped_early": tally.games < budget,
        "llr": round(llr, 4),
        "sprt": verdict,
        "candidate": candidate.model_id,
        "opponent": champion.model_id if champion is not None else "random",
        "seconds": round(time.monotonic() - started, 3),
    }


def prefetch(job: JobEnv) -> dict[str, Any]:
    """Nothing to do: the agent fetched and cached the inputs before starting the job."""
    files = [p for p in job.inputs.rglob("*") if p.is_file()] if job.inputs.is_dir() else []
    return {
        "game": str(job.args.get("game", "")),
        "files": len(files),
        "bytes": sum(p.stat().st_size for p in files),
    }


JOBS: dict[str, Callable[[JobEnv], dict[str, Any]]] = {
    "selfplay": selfplay,
    "train": train_job,
    "evaluate": evaluate,
    "prefetch": prefetch,
}


def run_job(kind: str, job: JobEnv) -> dict[str, Any]:
    """Run one job kind and write its result.json; returns the result."""
    result = JOBS[kind](job)
    job.write_result(result)
    emit_progress(1.0)
    return result
