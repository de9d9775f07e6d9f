"""The training coordinator's pure policies: readiness, SPRT, the fallback, Elo, inputs."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.training_coordinator.config import TrainingCoordinatorConfig
from services.training_coordinator.policy import (
    SprtParams,
    Tally,
    decide,
    elo_from_score,
    elo_to_score,
    llr,
    next_batch_games,
    parse_tally,
    promoted_elo,
    readiness,
    sprt,
    threshold,
    train_inputs,
)
from shared.config import convert_config
from shared.errors import ConfigError
from shared.jobs import DataRef
from shared.training import Manifest, ManifestEntry, games_held, training_window

P = SprtParams()  # elo0 0, elo1 35, alpha = beta = 0.05


def ref(n: int, name: str = "games.npz") -> DataRef:
    return DataRef(name=name, sha256=f"{n:064x}", size=n)


# -- readiness -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "per_node", "alive", "expected"),
    [
        (600, 100, 0, 600),  # no node heard of: the game's floor
        (600, 100, 3, 600),  # a small cluster: still the floor
        (600, 100, 6, 600),  # exactly equal
        (600, 100, 7, 700),  # a bigger cluster needs more new games
        (600, 100, 50, 5000),
        (600, 0, 50, 600),  # scaling switched off
    ],
)
def test_threshold_scales_with_the_cluster(
    base: int, per_node: int, alive: int, expected: int
) -> None:
    assert threshold(base, per_node, alive) == expected


@pytest.mark.parametrize(
    ("phase", "games", "at", "last", "ready", "reason"),
    [
        ("idle", 1600, 1000, 0.0, True, "ready"),  # 600 new games: exactly the threshold
        ("idle", 1599, 1000, 0.0, False, "599/600 new games"),
        ("idle", 5000, 1000, 950.0, False, "cooldown"),  # 50 s ago, cooldown 60 s
        ("idle", 5000, 1000, 940.0, True, "ready"),  # 60 s ago: the cooldown is over
        ("training", 5000, 0, 0.0, False, "training in flight"),
        ("evaluating", 5000, 0, 0.0, False, "evaluating in flight"),
        ("idle", 100, 1000, 0.0, False, "0/600 new games"),  # manifest shrank: no new games
    ],
)
def test_readiness_table(
    phase: str, games: int, at: int, last: float, ready: bool, reason: str
) -> None:
    verdict = readiness(
        phase=phase,
        games_total=games,
        games_at_training=at,
        last_training_at=last,
        needed=600,
        cooldown_s=60.0,
        now=1000.0,
    )
    assert (verdict.ready, verdict.reason) == (ready, reason)
    assert verdict.new_games == max(0, games - at) and verdict.threshold == 600


# -- SPRT ----------------------------------------------------------------------------------


def by_hand(w: int, l_: int, d: int) -> float:
    """The GSPRT normal approximation written out, for elo0 = 0 and elo1 = 35."""
    n = w + l_ + d
    s = (w + 0.5 * d) / n
    var = (w * (1 - s) ** 2 + l_ * (0 - s) ** 2 + d * (0.5 - s) ** 2) / n
    s0, s1 = 0.5, 1 / (1 + 10 ** (-35 / 400))
    return n * (s1 - s0) * (2 * s - s0 - s1) / (2 * var)


def test_bounds_for_alpha_beta_five_percent() -> None:
    assert P.upper == pytest.approx(math.log(0.95 / 0.05)) == pytest.approx(2.944, abs=1e-3)
    assert P.lower == pytest.approx(math.log(0.05 / 0.95)) == pytest.approx(-2.944, abs=1e-3)
    assert elo_to_score(0) == 0.5
    assert elo_to_score(35) == pytest.approx(0.55020, abs=1e-5)


@pytest.mark.parametrize(
    ("w", "l_", "d", "expected"),
    [
        # s1 - s0 = 0.050199. s = 0.75, var = 0.1875: 40 * 0.050199 * 0.449801 / 0.375
        (30, 10, 0, 2.4085),
        # s = 0.55, var = 0.2475: 40 * 0.050199 * 0.049801 / 0.495, far from either bound
        (22, 18, 0, 0.2020),
        # s = 0.5 with draws, var = 0.125: 40 * 0.050199 * -0.050199 / 0.25
        (10, 10, 20, -0.4032),
        # s = 0.25, var = 0.1875: 40 * 0.050199 * -0.550199 / 0.375, just past -2.944
        (10, 30, 0, -2.9461),
    ],
)
def test_llr_matches_known_values(w: int, l_: int, d: int, expected: float) -> None:
    value = llr(Tally(w, l_, d), 0.0, 35.0)
    assert value == pytest.approx(by_hand(w, l_, d), rel=1e-12)
    assert value == pytest.approx(expected, abs=1e-3)


def test_draws_count_half() -> None:
    # Two draws score like one win and one loss, and weigh as two games.
    assert Tally(5, 5, 10).score == Tally(10, 10, 0).score == 0.5
    assert Tally(3, 1, 4).score == pytest.approx((3 + 2) / 8)
    # A draw-heavy tally has less variance, so the same score is stronger evidence.
    assert abs(llr(Tally(20, 10, 20), 0, 35)) > abs(llr(Tally(30, 20, 0), 0, 35))
    assert llr(Tally(20, 10, 20), 0, 35) == pytest.approx(by_hand(20, 10, 20))


def test_clear_tallies_decide_and_close_ones_continue() -> None:
    assert sprt(Tally(38, 1, 1), P)[0] == "accept"
    assert sprt(Tally(1, 38, 1), P)[0] == "reject"
    assert sprt(Tally(0, 0, 40), P)[0] == "reject"  # all draws: no better than the champion
    assert sprt(Tally(30, 10, 0), P)[0] == "continue"  # 2.41 < 2.944
    assert sprt(Tally(60, 20, 0), P)[0] == "accept"  # the same rate over twice the games
    assert sprt(Tally(22, 18, 0), P)[0] == "continue"
    assert sprt(Tally(10, 30, 0), P)[0] == "reject"  # -2.9461 <= -2.9444
    assert sprt(Tally(11, 29, 0), P)[0] == "continue"
    assert sprt(Tally(), P) == ("continue", 0.0)


def test_all_wins_does_not_divide_by_zero() -> None:
    verdict, value = sprt(Tally(40, 0, 0), P)
    assert verdict == "accept" and math.isfinite(value)


def test_decide_uses_sprt_then_the_cap_then_the_fallback() -> None:
    sprt_accept = decide(Tally(38, 1, 1), P, 400, 0.55)
    assert sprt_accept.verdict == "accept" and "SPRT" in sprt_accept.reason
    assert decide(Tally(22, 18, 0), P, 400, 0.55).verdict == "continue"
    # At the cap without an SPRT verdict, the win rate decides.
    at_cap = decide(Tally(44, 36, 0), P, 80, 0.55)
    assert (at_cap.verdict, at_cap.llr) == ("accept", pytest.approx(by_hand(44, 36, 0)))
    assert "cap of 80 games" in at_cap.reason and "0.550 >= 0.550" in at_cap.reason
    below = decide(Tally(43, 37, 0), P, 80, 0.55)
    assert below.verdict == "reject" and "0.537 < 0.550" in below.reason


@given(
    st.integers(0, 200),
    st.integers(0, 200),
    st.integers(0, 200),
    st.integers(0, 200),
)
def test_more_wins_never_lowers_the_llr(w: int, l_: int, d: int, extra: int) -> None:
    base = Tally(w, l_, d)
    if base.games == 0:
        return
    # Turning losses into wins can only help the candidate.
    moved = min(extra, l_)
    better = Tally(w + moved, l_ - moved, d)
    assert llr(better, 0, 35) >= llr(base, 0, 35) - 1e-9


def test_next_batch_respects_the_cap() -> None:
    assert next_batch_games(0, 40, 400) == 40
    assert next_batch_games(380, 40, 400) == 20
    assert next_batch_games(399, 40, 400) == 2  # games come in colour-swapped pairs
    assert next_batch_games(400, 40, 400) == 2  # never a batch of zero games


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ({"wins": 3, "losses": 1, "draws": 0, "game": "3x3k3"}, Tally(3, 1, 0)),
        ({"wins": 3, "losses": 1}, "result field 'draws' is None, not a count"),
        ({"wins": -1, "losses": 1, "draws": 0}, "result field 'wins' is -1, not a count"),
        ({"wins": "3", "losses": 1, "draws": 0}, "result field 'wins' is '3', not a count"),
        ({"wins": True, "losses": 1, "draws": 0}, "result field 'wins' is True, not a count"),
        ({"wins": 0, "losses": 0, "draws": 0}, "the evaluation played no games"),
    ],
)
def test_untrustworthy_results_are_named(result: dict[str, object], expected: object) -> None:
    assert parse_tally(result) == expected


# -- Elo -----------------------------------------------------------------------------------


def test_elo_from_score_and_clamping() -> None:
    assert elo_from_score(0.5, 400) == 0
    assert elo_from_score(0.75, 400) == pytest.approx(400 * math.log10(3))  # 190.8
    assert elo_from_score(0.25, 400) == pytest.approx(-400 * math.log10(3))
    assert elo_from_score(1.0, 400) == 400  # a perfect score has no finite Elo
    assert elo_from_score(0.0, 400) == -400
    assert elo_from_score(0.999, 400) == 400  # 1200 clamped
    assert elo_from_score(0.999, 1500) == pytest.approx(400 * math.log10(999))  # 1199.8
    assert elo_to_score(elo_from_score(0.6, 400)) == pytest.approx(0.6)


def test_promoted_elo_builds_on_the_previous_champion() -> None:
    assert promoted_elo(0.0, 0.5, 400) == 0.0
    assert promoted_elo(250.0, 0.75, 400) == pytest.approx(250 + 190.85, abs=0.01)
    assert promoted_elo(250.0, 1.0, 400) == 650.0


# -- job inputs and config -----------------------------------------------------------------


def test_window_takes_the_newest_blobs_up_to_the_budget() -> None:
    entries = [
        ManifestEntry(ref=ref(i), games=100 * i, job_id=f"j{i}", created_at=float(i))
        for i in (1, 2, 3, 4)
    ]
    manifest = Manifest(game="3x3k3", games_total=1000, entries=entries)
    assert training_window(manifest.entries, 700) == entries[2:]
    assert games_held(training_window(manifest.entries, 700)) == 700
    assert training_window(manifest.entries, 10) == entries[3:]  # one blob at least
    assert training_window(Manifest(game="3x3k3").entries, 10) == []


def test_train_inputs_are_renamed_for_the_workload() -> None:
    inputs = train_inputs([ref(1), ref(2)], ref(9, "whatever.npz"), "model.npz")
    assert [i.name for i in inputs] == ["data-0.npz", "data-1.npz", "model.npz"]
    assert [i.sha256 for i in inputs] == [ref(1).sha256, ref(2).sha256, ref(9).sha256]
    assert [i.name for i in train_inputs([ref(1)], None, "model.npz")] == ["data-0.npz"]


def test_config_defaults_and_checks() -> None:
    cfg = convert_config(TrainingCoordinatorConfig, {})
    assert cfg.games == ["3x3k3", "4x4k3", "5x5k4"]
    assert (cfg.elo0, cfg.elo1, cfg.alpha, cfg.beta) == (0.0, 25.0, 0.05, 0.2)
    assert cfg.threshold_base("3x3k3") == 600 and cfg.threshold_base("other") == 1000
    with pytest.raises(ConfigError):
        convert_config(TrainingCoordinatorConfig, {"elo1": -5})
    with pytest.raises(ConfigError):
        convert_config(TrainingCoordinatorConfig, {"max_eval_games": 10})
    with pytest.raises(ConfigError):
        convert_config(TrainingCoordinatorConfig, {"alpha": 1.5})
