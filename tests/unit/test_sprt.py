"""The one SPRT (shared/sprt.py): the coordinator's gate and the workload's early stop."""

from __future__ import annotations

import pytest

from services.training_coordinator import policy
from shared import sprt as gate
from shared.sprt import SprtParams, Tally, sprt
from workloads.mnk import jobs
from workloads.mnk.match import Tally as MatchTally


def test_the_gate_and_the_workload_share_one_implementation() -> None:
    assert policy.sprt is gate.sprt and policy.llr is gate.llr
    assert policy.Tally is gate.Tally and policy.SprtParams is gate.SprtParams
    assert vars(jobs)["sprt"] is gate.sprt  # the evaluate job's early stop


@pytest.mark.parametrize(
    ("wins", "losses", "draws", "verdict"),
    [
        (20, 0, 0, "accept"),  # a clean sweep decides
        (0, 0, 60, "reject"),  # only draws: not stronger
        (0, 20, 0, "reject"),
        (5, 5, 0, "continue"),
    ],
)
def test_verdicts(wins: int, losses: int, draws: int, verdict: str) -> None:
    assert sprt(Tally(wins, losses, draws), SprtParams())[0] == verdict


def test_a_match_tally_reads_as_the_gate_reads_it() -> None:
    tally = MatchTally()
    for winner, side in ((1, 1), (1, -1), (0, 1), (-1, -1), (-1, 1)):
        tally.add(winner, side)
    assert tally.counts() == Tally(wins=2, losses=2, draws=1)


def test_llr_grows_with_evidence() -> None:
    params = SprtParams()
    one = gate.llr(Tally(15, 5, 20), params.elo0, params.elo1)
    two = gate.llr(Tally(30, 10, 40), params.elo0, params.elo1)
    assert two == pytest.approx(2 * one) and one > 0
    assert gate.llr(Tally(10, 30, 40), params.elo0, params.elo1) < 0


def test_the_gate_lets_a_small_real_gain_through_within_a_short_run() -> None:
    from services.training_coordinator.config import TrainingCoordinatorConfig
    from shared.config import convert_config

    cfg = convert_config(TrainingCoordinatorConfig, {})
    params = SprtParams(cfg.elo0, cfg.elo1, cfg.alpha, cfg.beta)
    cap, rate = cfg.max_eval_games, cfg.fallback_win_rate
    # About +21 Elo (score 0.53, half the games drawn) over the whole cap: promoted.
    gain = Tally(wins=68, losses=54, draws=118)
    assert gain.games == cap and policy.decide(gain, params, cap, rate).verdict == "accept"
    # The former gate (elo1 35, beta 0.05, fallback 0.55) rejected that candidate.
    former = SprtParams(0.0, 35.0, 0.05, 0.05)
    assert policy.decide(gain, former, cap, 0.55).verdict == "reject"
    # A slightly worse candidate (score 0.48) is not.
    worse = Tally(wins=50, losses=60, draws=130)
    assert policy.decide(worse, params, cap, rate).verdict == "reject"


def test_the_coordinator_and_the_evaluate_job_start_from_one_gate() -> None:
    from services.training_coordinator.config import TrainingCoordinatorConfig
    from shared.sprt import GATE

    cfg = TrainingCoordinatorConfig()
    assert SprtParams(cfg.elo0, cfg.elo1, cfg.alpha, cfg.beta) == GATE
