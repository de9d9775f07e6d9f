"""Which job events a game's state accepts: the guard behind "never acts twice"."""

from __future__ import annotations

import msgspec

from services.training_coordinator.evaluation import Evaluator
from services.training_coordinator.records import CoordinatorState
from services.training_coordinator.training import Trainer
from shared.jobs import DataRef

REF = DataRef(name="model.npz", sha256="a" * 64, size=1)
TRAINING = CoordinatorState(game="3x3k3", run_id="r1", phase="training", generation=4)
EVALUATING = CoordinatorState(
    game="3x3k3",
    run_id="r1",
    phase="evaluating",
    generation=4,
    candidate="c1",
    candidate_ref=REF,
    batch=2,
    eval_job="j2",
    counted=["j1"],
)


def test_a_training_event_matches_by_job_id_once_recorded() -> None:
    recorded = msgspec.structs.replace(TRAINING, training_job="t4")
    assert Trainer.matches(recorded, "t4", {})
    assert not Trainer.matches(recorded, "t3", {"run": "r1", "generation": "4"})
    assert not Trainer.matches(msgspec.structs.replace(recorded, phase="idle"), "t4", {})


def test_before_the_job_is_recorded_the_labels_tell() -> None:
    labels = {"kind": "train", "game": "3x3k3", "run": "r1", "generation": "4"}
    assert Trainer.matches(TRAINING, "t4", labels)
    assert not Trainer.matches(TRAINING, "t4", {**labels, "generation": "3"})
    # A job of an earlier state record (another run id) never matches.
    assert not Trainer.matches(TRAINING, "t4", {**labels, "run": "r0"})


def test_an_evaluation_batch_counts_once_and_only_while_undecided() -> None:
    assert Evaluator.matches(EVALUATING, "j2", {})
    assert not Evaluator.matches(EVALUATING, "j1", {})  # already counted
    assert not Evaluator.matches(EVALUATING, "j9", {})  # some other job
    decided = msgspec.structs.replace(EVALUATING, decision="accept")
    assert not Evaluator.matches(decided, "j2", {})
    unrecorded = msgspec.structs.replace(EVALUATING, eval_job="")
    labels = {"run": "r1", "candidate": "c1", "batch": "2"}
    assert Evaluator.matches(unrecorded, "j2", labels)
    assert not Evaluator.matches(unrecorded, "j2", {**labels, "batch": "1"})
    assert not Evaluator.matches(unrecorded, "j2", {**labels, "candidate": "c0"})
