"""The job lifecycle as sequences: any interleaving of the phases that act on a record.

Hypothesis drives jobs through submits, dispatches, failed publishes, node agent
reports (live, repeated, stale, from another node), reaper failures, cancels and the
passing of time, in any order, through the job manager's pure rules, exactly as the
service applies them (``policy`` and ``reports``). After every step:

- fencing strictly grows with each dispatch and never goes back;
- a terminal state absorbs: nothing changes a COMPLETED, FAILED or CANCELLED record;
- each job has exactly one transition into a terminal state once it is terminal;
- a refused or stale report changes nothing, and attempts never pass ``max_attempts``.
"""

from __future__ import annotations

import msgspec
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    precondition,
    rule,
)

from services.job_manager import policy
from services.job_manager.reports import Refusal, apply_report
from shared.jobs import TERMINAL, JobRecord, JobReport, JobSpec, JobState, Requirements
from shared.testing.builders import report_of

S = JobState
LEASE_S = 5.0
NODES = ("n1", "n2")
PHASES = ("started", "progress", "completed", "failed")


class JobLifecycle(RuleBasedStateMachine):
    """A few jobs, each record replaced only by what a phase returns."""

    jobs = Bundle("jobs")

    def __init__(self) -> None:
        super().__init__()
        self.now = 1_000.0
        self.records: dict[str, JobRecord] = {}
        self.fencings: dict[str, list[int]] = {}
        self.terminal_transitions: dict[str, int] = {}

    # -- applying a phase the way the service does: compare-and-set of the new record --

    def write(self, job_id: str, new: JobRecord | None) -> None:
        old = self.records[job_id]
        if new is None or new == old:
            return
        assert old.state not in TERMINAL, f"{old.state} changed to {new.state}"
        assert new.fencing >= old.fencing, "fencing went back"
        if new.fencing > old.fencing:
            assert new.fencing > max(self.fencings[job_id], default=0)
            self.fencings[job_id].append(new.fencing)
        if new.state in TERMINAL:
            self.terminal_transitions[job_id] += 1
        self.records[job_id] = new

    # -- rules -----------------------------------------------------------------------

    @precondition(lambda self: len(self.records) < 4)
    @rule(target=jobs, max_attempts=st.integers(1, 3), pinned=st.booleans())
    def submit(self, max_attempts: int, pinned: bool) -> multiple[str]:
        job_id = f"job-{len(self.records)}"
        req = Requirements(capability="cpu", node_id="n1" if pinned else "")
        spec = JobSpec(type="shell", requirements=req, max_attempts=max_attempts)
        self.records[job_id] = policy.new_record(job_id, spec, self.now)
        self.fencings[job_id] = []
        self.terminal_transitions[job_id] = 0
        return multiple(job_id)

    @rule(job_id=jobs, selected=st.sampled_from((None, *NODES)))
    def dispatch(self, job_id: str, selected: str | None) -> None:
        rec = self.records[job_id]
        pool = policy.choose_pool(rec.spec.requirements, selected)
        new = policy.dispatched(rec, self.now, pool)
        assert (new is None) == (rec.state is not S.PENDING)
        if new is not None:
            assert new.attempt == rec.attempt + 1 and new.fencing == rec.fencing + 1
        self.write(job_id, new)

    @rule(job_id=jobs, stale=st.booleans(), rarely=st.integers(0, 3))
    def publish_failed(self, job_id: str, stale: bool, rarely: int) -> None:
        if rarely < 3:
            return
        rec = self.records[job_id]
        fencing = rec.fencing - 1 if stale else rec.fencing
        new = policy.undispatched(rec, fencing, self.now, self.now + 1.0)
        if stale or rec.state is not S.DISPATCHED:
            assert new is None
        self.write(job_id, new)

    def apply(self, job_id: str, report: JobReport, age: int) -> None:
        rec = self.records[job_id]
        outcome = apply_report(rec, report, self.now, lease_s=LEASE_S, retry_delay=1.0)
        if age:
            assert isinstance(outcome, Refusal) and outcome.kind == "stale"
        if isinstance(outcome, Refusal):
            return
        if outcome is not None:
            assert policy.allowed(rec.state, report.phase), (rec.state, report.phase)
            if rec.state is S.RUNNING:
                assert report.node_id == rec.node_id  # only its node reports on it
        self.write(job_id, outcome)

    @rule(job_id=jobs, end=st.sampled_from(("completed", "progress", "failed")))
    def agent_reports(self, job_id: str, end: str) -> None:
        """The agent that holds the live attempt reports on it: started, then ``end``."""
        rec = self.records[job_id]
        phase = "started" if rec.state is S.DISPATCHED else end
        self.apply(job_id, report_of(rec, phase, rec.node_id or NODES[0], 0), 0)

    @rule(
        job_id=jobs,
        phase=st.sampled_from(PHASES),
        node=st.sampled_from(NODES),
        age=st.integers(0, 2),
        ghost=st.integers(0, 2),
    )
    def any_report(self, job_id: str, phase: str, node: str, age: int, ghost: int) -> None:
        """Any node reports on any attempt: late, repeated, from the wrong host, or a
        ghost of a dispatch whose publish failed (its attempt number, an old fencing)."""
        rec = self.records[job_id]
        self.apply(job_id, report_of(rec, phase, node, age, ghost), age + ghost)

    @rule(
        job_id=jobs,
        reason=st.sampled_from(("node lost", "lease expired", "not started")),
        rarely=st.integers(0, 3),
    )
    def reaper_fails_it(self, job_id: str, reason: str, rarely: int) -> None:
        if rarely < 3:
            return
        rec = self.records[job_id]
        if not policy.allowed(rec.state, "reap"):
            return  # the reaper's compare-and-set refuses: nothing to fail
        self.write(job_id, policy.fail_attempt(rec, self.now, reason, 1.0))

    # Cancels, reaper failures and failed publishes end attempts or jobs: acted on only
    # for the highest ``rarely`` (Hypothesis favours low draws), so that sequences also
    # run jobs to the end.
    @rule(job_id=jobs, rarely=st.integers(0, 3))
    def cancel(self, job_id: str, rarely: int) -> None:
        if rarely < 3:
            return
        rec = self.records[job_id]
        new = policy.cancelled(rec, self.now, "operator")
        assert (new is None) == (rec.state in TERMINAL)
        self.write(job_id, new)

    @rule(seconds=st.floats(0.0, 10.0))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    # -- invariants ------------------------------------------------------------------

    @invariant()
    def one_terminal_transition_per_terminal_job(self) -> None:
        for job_id, rec in self.records.items():
            expected = 1 if rec.state in TERMINAL else 0
            assert self.terminal_transitions[job_id] == expected, (job_id, rec.state)

    @invariant()
    def terminal_states_absorb(self) -> None:
        for rec in self.records.values():
            if rec.state not in TERMINAL:
                continue
            assert policy.dispatched(rec, self.now, "cap.cpu") is None
            assert policy.undispatched(rec, rec.fencing, self.now, self.now) is None
            assert policy.cancelled(rec, self.now, "late") is None
            assert not policy.allowed(rec.state, "reap")
            for phase in PHASES:
                for node in NODES:
                    report = report_of(rec, phase, node, 0)
                    outcome = apply_report(rec, report, self.now, lease_s=LEASE_S, retry_delay=1)
                    assert outcome is None or isinstance(outcome, Refusal), (rec.state, phase)

    @invariant()
    def fencing_counts_every_dispatch(self) -> None:
        for job_id, rec in self.records.items():
            fencings = self.fencings[job_id]
            assert fencings == sorted(set(fencings))  # strictly growing
            assert rec.fencing == (fencings[-1] if fencings else 0)
            assert 0 <= rec.attempt <= rec.fencing
            assert rec.attempt <= rec.spec.max_attempts

    @invariant()
    def a_failed_job_used_every_attempt(self) -> None:
        for rec in self.records.values():
            if rec.state is S.FAILED:
                assert rec.attempt == rec.spec.max_attempts and rec.permanent

    @invariant()
    def records_round_trip(self) -> None:
        for rec in self.records.values():
            assert msgspec.json.decode(msgspec.json.encode(rec), type=JobRecord) == rec


TestJobLifecycle = JobLifecycle.TestCase
