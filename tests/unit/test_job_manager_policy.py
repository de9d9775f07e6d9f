"""The job manager's pure rules: transitions, fencing, backoff, pools and the reaper."""

from __future__ import annotations

import functools

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.job_manager import policy
from services.job_manager.index import count_states, select_jobs
from services.job_manager.reports import Refusal, apply_report, refusal
from shared.jobs import TERMINAL, JobQuery, JobRecord, JobReport, JobResult, JobSpec, JobState
from shared.jobs import Requirements as Req
from shared.liveness import LivenessRule

S = JobState
T0 = 1_000.0
LEASE = 30.0


def record(state: S = S.PENDING, **changes: object) -> JobRecord:
    """A record in ``state`` for attempt 1 on node n1 unless changed."""
    rec = JobRecord(
        job_id="j1",
        spec=JobSpec(type="selfplay", max_attempts=3),
        state=state,
        attempt=1,
        fencing=1,
        node_id="n1",
        submitted_at=T0,
        updated_at=T0,
    )
    return msgspec.structs.replace(rec, **changes)


def report(phase: str, **changes: object) -> JobReport:
    """A report from n1 for attempt 1."""
    values: dict[str, object] = {
        "job_id": "j1",
        "attempt": 1,
        "fencing": 1,
        "node_id": "n1",
        "phase": phase,
    }
    values.update(changes)
    return msgspec.convert(values, JobReport)


# -- the transition table ---------------------------------------------------------------

ALLOWED = {
    ("dispatch", S.PENDING),
    ("started", S.DISPATCHED),
    ("progress", S.RUNNING),
    ("completed", S.RUNNING),
    ("failed", S.DISPATCHED),
    ("failed", S.RUNNING),
    ("reap", S.DISPATCHED),
    ("reap", S.RUNNING),
    ("cancel", S.PENDING),
    ("cancel", S.DISPATCHED),
    ("cancel", S.RUNNING),
}


@pytest.mark.parametrize("phase", [*policy.TRANSITIONS, "bogus"])
@pytest.mark.parametrize("state", list(S))
def test_transition_table(phase: str, state: S) -> None:
    assert policy.allowed(state, phase) == ((phase, state) in ALLOWED)


@pytest.mark.parametrize("state", sorted(TERMINAL))
@pytest.mark.parametrize("phase", list(policy.TRANSITIONS))
def test_nothing_leaves_a_terminal_state(state: S, phase: str) -> None:
    assert not policy.allowed(state, phase)


# -- records ------------------------------------------------------------------------------


def test_dispatch_counts_an_attempt_and_a_fencing_token() -> None:
    rec = record(S.PENDING, attempt=1, fencing=3, retry_at=T0 + 5, node_id="old")
    new = policy.dispatched(rec, T0 + 6, "node.n7")
    assert new is not None
    assert (new.state, new.attempt, new.fencing) == (S.DISPATCHED, 2, 4)
    assert (new.pool, new.node_id, new.retry_at, new.updated_at) == ("node.n7", "n7", None, T0 + 6)
    pooled = policy.dispatched(rec, T0, "cap.gpu")
    assert pooled is not None and pooled.node_id == ""
    assert policy.dispatched(record(S.RUNNING), T0, "cap.cpu") is None


def test_a_failed_publish_gives_the_attempt_back_but_not_the_token() -> None:
    sent = policy.dispatched(record(S.PENDING, attempt=0, fencing=0), T0, "cap.cpu")
    assert sent is not None
    back = policy.undispatched(sent, sent.fencing, T0 + 1, T0 + 2)
    assert back is not None
    assert (back.state, back.attempt, back.fencing, back.retry_at) == (S.PENDING, 0, 1, T0 + 2)
    again = policy.dispatched(back, T0 + 3, "cap.cpu")
    assert again is not None and (again.attempt, again.fencing) == (1, 2)
    # Another dispatch meanwhile (other token) or another state: leave it alone.
    assert policy.undispatched(sent, sent.fencing + 1, T0, T0) is None
    assert policy.undispatched(record(S.RUNNING), 1, T0, T0) is None


@pytest.mark.parametrize(
    ("attempt", "max_attempts", "state", "permanent", "retry_at"),
    [
        (1, 3, S.PENDING, False, T0 + 2.0),
        (2, 3, S.PENDING, False, T0 + 2.0),
        (3, 3, S.FAILED, True, None),
        (1, 1, S.FAILED, True, None),
    ],
)
def test_fail_attempt_retries_until_max_attempts(
    attempt: int, max_attempts: int, state: S, permanent: bool, retry_at: float | None
) -> None:
    rec = record(S.RUNNING, attempt=attempt, spec=JobSpec(type="t", max_attempts=max_attempts))
    new = policy.fail_attempt(rec, T0, "boom", 2.0)
    assert (new.state, new.permanent, new.retry_at, new.error) == (
        state,
        permanent,
        retry_at,
        "boom",
    )
    assert new.lease_expires_at is None
    assert (new.finished_at is not None) == permanent


@pytest.mark.parametrize("state", list(S))
def test_cancel_from_any_live_state(state: S) -> None:
    new = policy.cancelled(record(state), T0, "operator")
    if state in TERMINAL:
        assert new is None
    else:
        assert new is not None and new.state is S.CANCELLED and new.error == "operator"


# -- reports and fencing ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rec", "rep", "kind"),
    [
        # an old attempt's report after a retry was dispatched
        (record(S.RUNNING, attempt=2, fencing=2), report("progress"), "stale"),
        (record(S.DISPATCHED, attempt=2, fencing=2), report("started"), "stale"),
        # right attempt, wrong token (a ghost of a dispatch whose publish failed)
        (record(S.DISPATCHED, fencing=2), report("started"), "stale"),
        # another node claims an attempt that runs elsewhere (a redelivery)
        (record(S.RUNNING, node_id="n2"), report("completed"), "stale"),
        # the attempt was already failed by the reaper (retry pending) or finished
        (record(S.PENDING, retry_at=T0 + 5), report("completed"), "stale"),
        (record(S.COMPLETED), report("progress"), "stale"),
        (record(S.FAILED, error="lease expired"), report("failed", error="x"), "stale"),
        (record(S.CANCELLED), report("progress"), "cancelled"),
        (record(S.CANCELLED), report("started"), "cancelled"),
        (record(S.DISPATCHED), report("progress"), "phase"),
        (record(S.DISPATCHED), report("completed"), "phase"),
        (record(S.RUNNING), report("bogus"), "phase"),
    ],
)
def test_refused_reports(rec: JobRecord, rep: JobReport, kind: str) -> None:
    refused = refusal(rec, rep)
    assert refused is not None and refused.kind == kind
    assert apply_report(rec, rep, T0, lease_s=LEASE, retry_delay=1.0) == refused


def test_started_running_progress_completed() -> None:
    rec = record(S.DISPATCHED, node_id="")
    running = apply_report(rec, report("started"), T0, lease_s=LEASE, retry_delay=1.0)
    assert isinstance(running, JobRecord)
    assert (running.state, running.node_id, running.started_at) == (S.RUNNING, "n1", T0)
    assert running.lease_expires_at == T0 + LEASE
    later = apply_report(
        running, report("progress", progress=4.0), T0 + 10, lease_s=LEASE, retry_delay=1.0
    )
    assert isinstance(later, JobRecord)
    assert (later.progress, later.lease_expires_at) == (1.0, T0 + 10 + LEASE)
    result = JobResult(result={"games": 10})
    done = apply_report(
        later, report("completed", result=result), T0 + 20, lease_s=LEASE, retry_delay=1.0
    )
    assert isinstance(done, JobRecord)
    assert (done.state, done.result, done.finished_at, done.lease_expires_at) == (
        S.COMPLETED,
        result,
        T0 + 20,
        None,
    )


@pytest.mark.parametrize(
    ("rec", "rep"),
    [
        (record(S.RUNNING), report("started")),
        (record(S.COMPLETED), report("completed")),
        (record(S.PENDING, error="exit 1", retry_at=T0 + 1), report("failed", error="exit 1")),
        (record(S.FAILED, error="failed"), report("failed")),
    ],
)
def test_a_repeated_report_is_accepted_without_a_change(rec: JobRecord, rep: JobReport) -> None:
    assert refusal(rec, rep) is None
    assert apply_report(rec, rep, T0, lease_s=LEASE, retry_delay=1.0) is None


def test_a_failed_report_retries_or_fails_for_good() -> None:
    rec = record(S.RUNNING, attempt=1)
    retried = apply_report(rec, report("failed", error="exit 3"), T0, lease_s=LEASE, retry_delay=4)
    assert isinstance(retried, JobRecord)
    assert (retried.state, retried.retry_at, retried.error) == (S.PENDING, T0 + 4, "exit 3")
    last = record(S.DISPATCHED, attempt=3, fencing=3, node_id="")
    rep = report("failed", attempt=3, fencing=3)
    failed = apply_report(last, rep, T0, lease_s=LEASE, retry_delay=4)
    assert isinstance(failed, JobRecord)
    assert (failed.state, failed.permanent, failed.node_id) == (S.FAILED, True, "n1")


@given(
    state=st.sampled_from(list(S)),
    phase=st.sampled_from(["started", "progress", "completed", "failed"]),
    attempt=st.integers(0, 4),
    fencing=st.integers(0, 4),
    node=st.sampled_from(["n1", "n2", ""]),
)
def test_reports_never_leave_a_terminal_state_or_accept_another_attempt(
    state: S, phase: str, attempt: int, fencing: int, node: str
) -> None:
    rec = record(state, attempt=2, fencing=3, node_id="n1")
    rep = report(phase, attempt=attempt, fencing=fencing, node_id=node)
    out = apply_report(rec, rep, T0, lease_s=LEASE, retry_delay=1.0)
    if (attempt, fencing) != (2, 3):
        assert isinstance(out, Refusal) and out.kind == "stale"
    if state in TERMINAL:
        assert out is None or isinstance(out, Refusal)
    if isinstance(out, JobRecord):
        assert out.attempt == rec.attempt and out.fencing == rec.fencing


# -- backoff --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "u", "expected"),
    [(1, 1.0, 1.0), (1, 0.0, 0.5), (2, 1.0, 2.0), (3, 1.0, 4.0), (6, 1.0, 30.0), (99, 0.0, 15.0)],
)
def test_backoff_table(attempt: int, u: float, expected: float) -> None:
    assert policy.backoff(attempt, base=1.0, cap=30.0, u=u) == pytest.approx(expected)


@given(
    attempt=st.integers(-5, 10_000),
    base=st.floats(0.001, 10),
    cap=st.floats(0.001, 100),
    u=st.floats(0, 1),
)
def test_backoff_is_capped_and_at_least_half(
    attempt: int, base: float, cap: float, u: float
) -> None:
    raw = min(cap, base * 2.0 ** min(max(attempt, 1) - 1, 60))
    delay = policy.backoff(attempt, base=base, cap=cap, u=u)
    assert raw / 2 - 1e-9 <= delay <= min(cap, raw) + 1e-9


@given(attempt=st.integers(1, 20), u=st.floats(0, 1))
def test_backoff_never_shrinks_with_more_attempts_at_the_same_jitter(
    attempt: int, u: float
) -> None:
    assert policy.backoff(attempt + 1, base=1, cap=30, u=u) >= policy.backoff(
        attempt, base=1, cap=30, u=u
    )


# -- pools ----------------------------------------------------------------------------------


def test_a_fresh_submit_is_left_to_its_instance_for_the_grace() -> None:
    fresh = record(S.PENDING, attempt=0, fencing=0, node_id="", retry_at=None)
    act = functools.partial(policy.reap_action, dispatch_timeout_s=60, lease_s=30)
    assert act(fresh, T0 + 1.0, False, submit_grace_s=2.0) is None
    assert act(fresh, T0 + 2.5, False, submit_grace_s=2.0) == policy.Reap("dispatch")
    # A retry (attempt 1, retry time come) is not a fresh submit: dispatched at once.
    retry = record(S.PENDING, retry_at=T0)
    assert act(retry, T0, False, submit_grace_s=2.0) == policy.Reap("dispatch")


@pytest.mark.parametrize(
    ("req", "selected", "asks", "pool"),
    [
        (Req(node_id="n9"), "n1", False, "node.n9"),
        (Req(node_id="n9", pooled=True), None, False, "node.n9"),
        (Req(capability="gpu", pooled=True), "n1", False, "cap.gpu"),
        (Req(capability="gpu", gpus=1), "n1", True, "node.n1"),
        (Req(capability="gpu", gpus=2), "n2", True, "node.n2"),
        (Req(capability="gpu", gpu=True), None, True, "cap.gpu"),
        (Req(capability="cpu", min_memory_mb=512), "", True, "cap.cpu"),
        (Req(capability="gpu", gpu_memory_mb=8000), "bad.id", True, "cap.gpu"),
        # Only a capability: any agent of the pool fits, so the selector is not asked.
        (Req(capability="cpu"), None, False, "cap.cpu"),
        (Req(), None, False, "cap.cpu"),
    ],
)
def test_pool_choice(req: Req, selected: str | None, asks: bool, pool: str) -> None:
    assert policy.needs_selector(req) == asks
    assert policy.choose_pool(req, selected) == pool
    assert policy.pool_node(pool) == (pool[5:] if pool.startswith("node.") else "")


def test_a_retry_asks_the_selector_to_avoid_the_node_that_failed_it() -> None:
    assert policy.needs_selector(Req(capability="cpu"), failed_on="n1")
    assert not policy.needs_selector(Req(capability="cpu", pooled=True), failed_on="n1")
    assert not policy.needs_selector(Req(node_id="n1"), failed_on="n1")


@pytest.mark.parametrize(
    ("req", "bad"),
    [
        (Req(), False),
        (Req(capability="gpu-a100", node_id="host_1"), False),
        (Req(capability="a.b"), True),
        (Req(capability=""), True),
        (Req(node_id="x>"), True),
        (Req(node_id="two words"), True),
    ],
)
def test_requirements_must_make_subject_tokens(req: Req, bad: bool) -> None:
    assert (policy.requirements_problem(req) is not None) == bad


def test_idempotency_keys_map_to_stable_bucket_keys() -> None:
    key = policy.idem_key("train:config-7:42")
    assert key == policy.idem_key("train:config-7:42") != policy.idem_key("train:config-7:43")
    assert key.startswith("idem-") and len(key) == 45


# -- the reaper -----------------------------------------------------------------------------


def reap(rec: JobRecord, now: float, seen: float | None) -> policy.Reap | None:
    """The reaper's decision for a node last heard at ``seen`` (5 s to LOST)."""
    lost = seen is not None and not LivenessRule(lost_after_s=5.0).alive(seen, now, 1.0)
    return policy.reap_action(rec, now, lost, dispatch_timeout_s=60.0, lease_s=LEASE)


@pytest.mark.parametrize(
    ("rec", "now", "seen", "expected"),
    [
        (record(S.PENDING, retry_at=None), T0, None, policy.Reap("dispatch")),
        (record(S.PENDING, retry_at=T0 + 1), T0, None, None),
        (record(S.PENDING, retry_at=T0 + 1), T0 + 1, None, policy.Reap("dispatch")),
        (record(S.DISPATCHED), T0 + 59, T0 + 58, None),
        (record(S.DISPATCHED), T0 + 61, T0 + 60, policy.Reap("fail", "not started")),
        (record(S.DISPATCHED), T0 + 10, T0 + 4, policy.Reap("fail", "node lost")),
        # a pooled dispatch names no node: only the dispatch timeout applies
        (record(S.DISPATCHED, node_id=""), T0 + 10, T0, None),
        (record(S.RUNNING, lease_expires_at=T0 + 30), T0 + 29, T0 + 28, None),
        (
            record(S.RUNNING, lease_expires_at=T0 + 30),
            T0 + 31,
            T0 + 30,
            policy.Reap("fail", "lease expired"),
        ),
        (
            record(S.RUNNING, lease_expires_at=T0 + 30),
            T0 + 20,
            T0 + 10,
            policy.Reap("fail", "node lost"),
        ),
        # a node never heard of is never declared lost: the lease decides
        (record(S.RUNNING, lease_expires_at=T0 + 30), T0 + 20, None, None),
        (
            record(
                S.RUNNING,
                spec=JobSpec(type="t", timeout_s=10),
                started_at=T0,
                lease_expires_at=T0 + 100,
            ),
            T0 + 10 + LEASE + 1,
            T0 + 41,
            policy.Reap("fail", "timed out"),
        ),
        (record(S.COMPLETED), T0 + 1e6, None, None),
        (record(S.FAILED), T0 + 1e6, None, None),
        (record(S.CANCELLED), T0 + 1e6, T0, None),
    ],
)
def test_reaper_decisions(
    rec: JobRecord, now: float, seen: float | None, expected: policy.Reap | None
) -> None:
    assert reap(rec, now, seen) == expected


@given(
    state=st.sampled_from(list(S)),
    now=st.floats(0, 1e5),
    seen=st.none() | st.floats(0, 1e5),
    lease=st.none() | st.floats(0, 1e5),
)
def test_the_reaper_only_fails_live_attempts(
    state: S, now: float, seen: float | None, lease: float | None
) -> None:
    action = reap(record(state, lease_expires_at=lease), now, seen)
    if action is not None and action.action == "fail":
        assert policy.allowed(state, "reap")
    if action is not None and action.action == "dispatch":
        assert state is S.PENDING


# -- queries -----------------------------------------------------------------------------------


def test_select_and_count() -> None:
    recs = [
        record(S.RUNNING, job_id="a", submitted_at=1.0),
        record(S.COMPLETED, job_id="b", submitted_at=3.0, node_id="n2"),
        record(S.RUNNING, job_id="c", submitted_at=2.0, spec=JobSpec(type="train")),
    ]
    listed = select_jobs(recs, JobQuery())
    assert [r.job_id for r in listed.jobs] == ["b", "c", "a"] and listed.total == 3
    running = select_jobs(recs, JobQuery(state=S.RUNNING, limit=1))
    assert [r.job_id for r in running.jobs] == ["c"] and running.total == 2
    assert [r.job_id for r in select_jobs(recs, JobQuery(type="train")).jobs] == ["c"]
    assert [r.job_id for r in select_jobs(recs, JobQuery(node_id="n2")).jobs] == ["b"]
    counts = count_states(recs)
    assert counts["RUNNING"] == 2 and counts["COMPLETED"] == 1 and counts["PENDING"] == 0


def _reap_with(
    rec: JobRecord, agent: policy.Agent | None, published: bool = True, now: float = T0 + 3
) -> policy.Reap | None:
    return policy.reap_action(
        rec,
        now,
        False,
        dispatch_timeout_s=60.0,
        lease_s=LEASE,
        agent=agent,
        published=published,
        republish_after_s=2.0,
    )


@pytest.mark.parametrize(
    ("incarnation", "agent", "lost"),
    [
        ("a", policy.Agent("b", frozenset()), True),
        # the agent that started it, not listing it (yet): the lease decides
        ("a", policy.Agent("a", frozenset()), False),
        # a new incarnation that took the attempt over lists it
        ("a", policy.Agent("b", frozenset({"j1"})), False),
        # an older agent (no incarnation) on either side: nothing is known
        ("", policy.Agent("b", frozenset()), False),
        ("a", policy.Agent("", frozenset()), False),
        ("a", None, False),
    ],
)
def test_a_running_attempt_dies_with_its_agents_incarnation(
    incarnation: str, agent: policy.Agent | None, lost: bool
) -> None:
    rec = record(S.RUNNING, incarnation=incarnation, lease_expires_at=T0 + 30)
    expected = policy.Reap("fail", policy.AGENT_RESTARTED) if lost else None
    assert _reap_with(rec, agent) == expected
    # A DISPATCHED record names no incarnation: the dispatch timeout decides.
    assert _reap_with(record(S.DISPATCHED, updated_at=T0), agent) is None


def test_an_unvouched_dispatch_is_republished_not_failed() -> None:
    dispatched = record(S.DISPATCHED, updated_at=T0)
    assert _reap_with(dispatched, None, published=False, now=T0 + 1) is None
    assert _reap_with(dispatched, None, published=False) == policy.Reap("republish")
    # Published and never started: the dispatch timeout still fails it.
    assert _reap_with(dispatched, None, now=T0 + 61) == policy.Reap("fail", "not started")


def test_no_republish_past_the_streams_dedupe_window() -> None:
    old = record(S.DISPATCHED, updated_at=T0)
    late = T0 + policy.DEDUPE_WINDOW_S + 1
    assert _reap_with(old, None, published=False, now=late) == policy.Reap("fail", "not started")


def test_a_dispatch_first_queued_by_a_republish_times_out_from_then() -> None:
    # A manager down for 70 s finds a dispatch cut before its publish.
    cut = record(S.DISPATCHED, updated_at=T0)
    assert _reap_with(cut, None, published=False, now=T0 + 70) == policy.Reap("republish")

    def after(now: float) -> policy.Reap | None:
        return policy.reap_action(
            cut,
            now,
            False,
            dispatch_timeout_s=60.0,
            lease_s=LEASE,
            queued_at=T0 + 70,
        )

    assert after(T0 + 75) is None  # queued only now: a full dispatch timeout from here
    assert after(T0 + 131) == policy.Reap("fail", "not started")
