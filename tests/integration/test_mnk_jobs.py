"""The mnk workload's job commands, run as a node agent runs them: subprocesses with
``RINGMASTER_JOB_ARGS`` / ``RINGMASTER_INPUTS_DIR`` / ``RINGMASTER_OUTPUTS_DIR``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shared.testing.bounds import timeout_for
from workloads.mnk.data import Games
from workloads.mnk.models import load_model

#: A generous bound on one job command run on a loaded machine; it times nothing.
JOB_BOUND = 120.0
#: The most job commands one test waits on, its module fixture's included.
pytestmark = timeout_for(4 * JOB_BOUND)


def run(
    kind: str, args: dict[str, Any], root: Path, inputs: dict[str, Path] | None = None
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run ``python -m workloads.mnk KIND`` in a fresh job directory under ``root``."""
    in_dir, out_dir = root / "inputs", root / "outputs"
    in_dir.mkdir(parents=True)
    out_dir.mkdir()
    for name, source in (inputs or {}).items():
        shutil.copyfile(source, in_dir / name)
    env = {
        **os.environ,
        "RINGMASTER_JOB_ID": "job-1",
        "RINGMASTER_JOB_ATTEMPT": "1",
        "RINGMASTER_JOB_ARGS": json.dumps(args),
        "RINGMASTER_INPUTS_DIR": str(in_dir),
        "RINGMASTER_OUTPUTS_DIR": str(out_dir),
        "PYTHONUNBUFFERED": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "workloads.mnk", kind],
        env=env,
        capture_output=True,
        text=True,
        timeout=JOB_BOUND,
        check=False,
    )
    return proc, out_dir


def progress_of(stdout: str) -> list[float]:
    """Every stdout line is a JSON progress line; their values, in order."""
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert lines, "a job reports progress"
    assert all(set(line) == {"progress"} for line in lines)
    values = [float(line["progress"]) for line in lines]
    assert values == sorted(values) and values[-1] == 1.0
    return values


def result_of(out_dir: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((out_dir / "result.json").read_text())
    return result


@pytest.mark.parametrize(("game", "games"), [("3x3k3", 100), ("4x4k3", 30)])
def test_selfplay_train_evaluate(tmp_path: Path, game: str, games: int) -> None:
    args = {"game": game, "games": games, "seed": 5, "exploration": 0.2}
    proc, played = run("selfplay", args, tmp_path / "selfplay")
    assert proc.returncode == 0, proc.stderr
    assert len(progress_of(proc.stdout)) >= 10
    result = result_of(played)
    assert result["games"] == games
    assert result["x_wins"] + result["o_wins"] + result["draws"] == games
    assert result["model_id"] == ""  # no champion yet: the initial model
    data = Games.load(played / "games.npz", game)
    assert len(data) == games and data.counts()["x_wins"] == result["x_wins"]
    # What the scheduler sizes jobs by: games and the positions (samples) they gave.
    assert result["positions"] == result["samples"] == int(data.lengths.sum())
    # Networks search: a visit distribution per position; the table has none.
    assert (data.visits is not None) == (game != "3x3k3")

    inputs = {"data-0.npz": played / "games.npz"}
    proc, trained = run("train", {"game": game, "seed": 1}, tmp_path / "train", inputs)
    assert proc.returncode == 0, proc.stderr
    progress_of(proc.stdout)
    result = result_of(trained)
    assert result["games"] == games and result["samples"] > games
    assert result["losses"] and all(loss >= 0 for loss in result["losses"])
    assert result["parent"] == ""
    candidate = load_model(trained / "model.npz", game)
    assert candidate.model_id == result["model_id"]

    # The candidate as the champion of a second training: parent recorded.
    inputs = {**inputs, "model.npz": trained / "model.npz"}
    proc, again = run("train", {"game": game, "seed": 2}, tmp_path / "train2", inputs)
    assert proc.returncode == 0, proc.stderr
    assert result_of(again)["parent"] == candidate.model_id

    duel = {"candidate.npz": again / "model.npz", "champion.npz": trained / "model.npz"}
    args = {"game": game, "games": 20, "seed": 3, "early_stop": False}
    proc, judged = run("evaluate", args, tmp_path / "evaluate", duel)
    assert proc.returncode == 0, proc.stderr
    progress_of(proc.stdout)
    result = result_of(judged)
    assert result["games"] == 20 and not result["stopped_early"]
    assert result["wins"] + result["losses"] + result["draws"] == 20
    assert result["opponent"] == candidate.model_id


@pytest.fixture(scope="module")
def trained_3x3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3x3 table trained on 300 games of the initial model's self-play."""
    root = tmp_path_factory.mktemp("trained")
    proc, played = run("selfplay", {"game": "3x3k3", "games": 300, "seed": 1}, root / "s")
    assert proc.returncode == 0, proc.stderr
    inputs = {"data-0.npz": played / "games.npz"}
    proc, trained = run("train", {"game": "3x3k3"}, root / "t", inputs)
    assert proc.returncode == 0, proc.stderr
    return trained / "model.npz"


def test_evaluate_against_random_stops_early_when_decided(
    tmp_path: Path, trained_3x3: Path
) -> None:
    args = {"game": "3x3k3", "games": 400, "seed": 1}
    proc, judged = run("evaluate", args, tmp_path / "e", {"candidate.npz": trained_3x3})
    assert proc.returncode == 0, proc.stderr
    result = result_of(judged)
    assert result["opponent"] == "random"
    assert result["sprt"] == "accept" and result["stopped_early"]
    assert 20 <= result["games"] < 400
    assert result["wins"] + result["losses"] + result["draws"] == result["games"]
    assert result["wins"] > result["losses"]


def test_corrupt_candidate_fails_with_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 this is not a model")
    args = {"game": "3x3k3", "games": 10, "seed": 1}
    proc, out = run("evaluate", args, tmp_path / "evaluate", {"candidate.npz": bad})
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "candidate.npz" in lines[0]
    assert not (out / "result.json").exists()  # no score for a broken model


def test_missing_candidate_fails(tmp_path: Path) -> None:
    proc, _ = run("evaluate", {"game": "3x3k3", "games": 10}, tmp_path / "evaluate")
    assert proc.returncode == 1
    assert "candidate.npz: no such file" in proc.stderr


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    proc, _ = run("selfplay", {"game": "19x19k5"}, tmp_path / "a")
    assert proc.returncode == 2 and "args.game" in proc.stderr
    proc, _ = run("selfplay", {"game": "3x3k3", "games": "many"}, tmp_path / "b")
    assert proc.returncode == 2 and "args.games" in proc.stderr
    usage = subprocess.run(
        [sys.executable, "-m", "workloads.mnk", "no-such-command"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert usage.returncode == 2 and "usage:" in usage.stderr


def test_train_without_games_fails(tmp_path: Path) -> None:
    proc, _ = run("train", {"game": "4x4k3"}, tmp_path / "train")
    assert proc.returncode == 1 and "no usable 4x4k3 games" in proc.stderr


def test_prefetch_is_a_no_op(tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(b"x" * 10)
    proc, out = run("prefetch", {"game": "5x5k4"}, tmp_path / "p", {"data-0.npz": blob})
    assert proc.returncode == 0, proc.stderr
    progress_of(proc.stdout)
    assert result_of(out) == {"game": "5x5k4", "files": 1, "bytes": 10}


def test_measuring_commands_print_json(trained_3x3: Path) -> None:
    model = str(trained_3x3)
    solved = subprocess.run(
        [sys.executable, "-m", "workloads.mnk", "solve", "--model", model],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(solved.stdout)
    assert report["losses"] == report["as_x"]["losses"] + report["as_o"]["losses"]
    assert report["never_loses"] == (report["losses"] == 0)
    assert report["as_x"]["games"] > 0 and report["as_o"]["games"] > 0
    command = ["vs-random", "--model", model, "--config", "3x3k3", "--games", "50"]
    versus = subprocess.run(
        [sys.executable, "-m", "workloads.mnk", *command],
        capture_output=True,
        text=True,
        check=True,
    )
    rates = json.loads(versus.stdout)
    assert rates["games"] == 50
    assert rates["win_rate"] + rates["draw_rate"] + rates["loss_rate"] == pytest.approx(1.0)
