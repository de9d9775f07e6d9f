"""The sync planner's pure rules: recording games, the training window, retention."""

from __future__ import annotations

import hashlib

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.sync_planner import policy
from shared.events import JobCompleted
from shared.jobs import DataRef, JobRecord, JobSpec, JobState
from shared.training import Manifest, ManifestEntry, games_held, training_window


def sha(tag: object) -> str:
    return hashlib.sha256(str(tag).encode()).hexdigest()


def entry(job: str, games: int, blob: object = None) -> ManifestEntry:
    """An entry of job ``job``; its blob is named by ``blob`` (the job by default)."""
    ref = DataRef(name="games.npz", sha256=sha(job if blob is None else blob), size=games * 10)
    return ManifestEntry(ref=ref, games=games, job_id=job, created_at=0.0)


def jobs(plan: policy.RetentionPlan) -> tuple[list[str], list[str]]:
    return [e.job_id for e in plan.keep], [e.job_id for e in plan.delete]


# -- retention, table-driven ---------------------------------------------------------------

A, B, C, D = (entry(j, 10) for j in "abcd")

RETENTION = [
    # (entries oldest first, retain_games, referenced, kept jobs, deleted jobs)
    ([], 10, set(), [], []),
    ([A, B, C, D], 40, set(), ["a", "b", "c", "d"], []),
    ([A, B, C, D], 20, set(), ["c", "d"], ["a", "b"]),
    # the entry crossing the line is kept: at least retain_games games stay
    ([A, B, C, D], 15, set(), ["c", "d"], ["a", "b"]),
    ([A, B, C, D], 1, set(), ["d"], ["a", "b", "c"]),
    # referenced by a job or a model: kept, however old
    ([A, B, C, D], 10, {sha("a")}, ["a", "d"], ["b", "c"]),
    ([A, B, C, D], 10, {sha("a"), sha("b"), sha("c")}, ["a", "b", "c", "d"], []),
    # the same blob inside the window protects its older listing
    ([entry("a", 10, "x"), B, entry("c", 10, "x")], 10, set(), ["a", "c"], ["b"]),
    # a reference to something else protects nothing here
    ([A, B], 10, {sha("zzz")}, ["b"], ["a"]),
    # an entry of zero games never fills the window
    ([A, entry("z", 0), B], 10, set(), ["b"], ["a", "z"]),
]


@pytest.mark.parametrize(("entries", "retain", "referenced", "kept", "deleted"), RETENTION)
def test_retention_table(
    entries: list[ManifestEntry],
    retain: int,
    referenced: set[str],
    kept: list[str],
    deleted: list[str],
) -> None:
    assert jobs(policy.plan_retention(entries, retain, referenced)) == (kept, deleted)


def test_blobs_kept_by_another_config_are_not_deleted() -> None:
    plans = {
        "3x3k3": policy.RetentionPlan(keep=[B], delete=[A, entry("c", 1, "shared")]),
        "4x4k3": policy.RetentionPlan(keep=[entry("d", 1, "shared")], delete=[]),
    }
    assert policy.blobs_to_delete(plans) == {sha("a")}


entries_st = st.lists(
    st.builds(entry, st.uuids().map(str), st.integers(0, 50), st.integers(0, 8)),
    max_size=30,
    unique_by=lambda e: e.job_id,
)


@given(entries_st, st.integers(1, 400), st.sets(st.integers(0, 8).map(sha), max_size=4))
def test_retention_never_deletes_referenced_or_in_window(
    entries: list[ManifestEntry], retain: int, referenced: set[str]
) -> None:
    keep, delete = policy.plan_retention(entries, retain, referenced)
    assert sorted(keep + delete, key=entries.index) == entries  # a partition, order kept
    assert keep == [e for e in entries if e in keep]
    window = entries[len(entries) - policy.retention_window(entries, retain) :]
    in_window = {e.ref.sha256 for e in window}
    assert all(e in keep for e in window)
    for gone in delete:
        assert gone.ref.sha256 not in referenced
        assert gone.ref.sha256 not in in_window
    # the window holds the newest retain games (all of them when there are fewer)
    assert games_held(window) >= min(retain, games_held(entries))
    # and nothing older is kept without a reason
    for kept in keep:
        if kept not in window:
            assert kept.ref.sha256 in referenced | in_window


# -- the training window --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "max_games", "chosen"),
    [
        ([], 10, []),
        ([A, B, C], 25, ["b", "c"]),
        ([A, B, C], 30, ["a", "b", "c"]),
        ([A, B, C], 1000, ["a", "b", "c"]),
        ([A, B, C], 9, ["c"]),  # the newest blob always, even past max_games
        ([A, B, entry("big", 50)], 25, ["big"]),  # so training is never starved
        ([A, entry("big", 50), C], 25, ["c"]),  # contiguous: stops at the first misfit
        ([entry("a", 10, "x"), B, entry("c", 10, "x")], 30, ["b", "c"]),  # a blob once
    ],
)
def test_training_window(entries: list[ManifestEntry], max_games: int, chosen: list[str]) -> None:
    assert [e.job_id for e in training_window(entries, max_games)] == chosen


@given(entries_st, st.integers(1, 500))
def test_training_window_is_newest_and_bounded(
    entries: list[ManifestEntry], max_games: int
) -> None:
    window = training_window(entries, max_games)
    # At most max_games, unless the window is the newest blob alone (never empty).
    assert games_held(window) <= max_games or len(window) == 1
    assert bool(window) == bool(entries)
    assert len({e.ref.sha256 for e in window}) == len(window)
    positions = [entries.index(e) for e in window]
    assert positions == sorted(positions)


# -- recording --------------------------------------------------------------------------------


def completed(**changes: object) -> JobCompleted:
    done = JobCompleted(
        job_id="j1",
        type="selfplay",
        attempt=1,
        node_id="n1",
        outputs=[
            DataRef(name="result.json", sha256=sha("r"), size=5),
            DataRef(name="games.npz", sha256=sha("g"), size=99),
        ],
        result={"game": "3x3k3", "games": 64, "model_id": "m0"},
        labels={"kind": "selfplay", "game": "3x3k3", "model_id": "m1"},
    )
    return msgspec.structs.replace(done, **changes)


def test_selfplay_entry_from_a_completed_job() -> None:
    found = policy.selfplay_entry(completed(), 5.0)
    assert isinstance(found, policy.Selfplay)
    assert found.game == "3x3k3"
    assert found.entry == ManifestEntry(
        ref=DataRef(name="games.npz", sha256=sha("g"), size=99),
        games=64,
        job_id="j1",
        model_id="m1",
        created_at=5.0,
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"outputs": []},
        {"outputs": [DataRef(name="model.npz", sha256=sha("m"), size=1)]},
        {"result": {"games": "many"}},
        {"result": {"games": True}},
        {"result": {"games": -1}},
        {"result": {}},
        {"labels": {"kind": "selfplay"}, "result": {"games": 3}},
        {"labels": {"game": "bad.config"}},
    ],
)
def test_unusable_selfplay_results_are_named(changes: dict[str, object]) -> None:
    assert isinstance(policy.selfplay_entry(completed(**changes), 0.0), str)


def test_a_completion_with_an_unreadable_output_does_not_decode() -> None:
    # Outputs are typed: a bad reference is an invalid event, counted by the consumer,
    # never a completion that reaches the policy.
    event = msgspec.to_builtins(completed())
    event["outputs"][1]["sha256"] = "not-a-sha"
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(event, JobCompleted)


def test_append_is_idempotent_by_job_and_totals_only_grow() -> None:
    m = policy.appended(Manifest(game="c"), A, 1.0)
    assert m is not None and (m.games_total, len(m.entries)) == (10, 1)
    assert policy.appended(m, A, 2.0) is None
    m2 = policy.appended(m, B, 3.0)
    assert m2 is not None and m2.games_total == 20
    m3 = policy.without(m2, {"a"}, 4.0)
    assert m3 is not None and [e.job_id for e in m3.entries] == ["b"]
    assert m3.games_total == 20  # games ever recorded: retention does not rewrite history
    assert policy.without(m3, {"a"}, 5.0) is None


# -- references -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "referenced"),
    [(s, s in {JobState.PENDING, JobState.DISPATCHED, JobState.RUNNING}) for s in JobState],
)
def test_only_jobs_that_may_run_reference_their_inputs(state: JobState, referenced: bool) -> None:
    ref = DataRef(name="data-0.npz", sha256=sha("in"), size=1)
    rec = JobRecord(
        job_id="j",
        spec=JobSpec(type="train", inputs=[ref]),
        state=state,
        submitted_at=0,
        updated_at=0,
    )
    assert policy.job_inputs(rec) == ({sha("in")} if referenced else set())


@pytest.mark.parametrize(
    ("raw", "shas", "decoded"),
    [
        (b'{"model_id": "m", "ref": {"name": "model.npz", "sha256": "%s"}}', {"S"}, True),
        (b'{"ref": {"sha256": "%s"}, "other": [1, 2]}', {"S"}, True),
        (b'{"elo": {"m1": 1200}}', set(), True),
        (b'{"ref": null}', set(), True),
        (b'{"ref": {"sha256": 5}}', set(), True),
        (b'["a list naming %s"]', {"S"}, False),  # fail closed
        (b"not json %s", {"S"}, False),
    ],
)
def test_model_refs_decode_leniently(raw: bytes, shas: set[str], decoded: bool) -> None:
    value = raw.replace(b"%s", sha("m").encode())
    expected = {sha("m") for _ in shas}
    assert policy.model_refs(value) == (expected, decoded)
