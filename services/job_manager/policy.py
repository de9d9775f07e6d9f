"""The job manager's rules as pure functions: no I/O, the clock and randomness passed in.

- the state machine: which phase (a report, a dispatch, a reap, a cancel) may act on a
  record in which state, and the record each phase produces (reports: ``reports.py``);
- retry backoff: exponential from a base, capped, with jitter;
- where a job goes: a pinned node, a capability pool, or the selector's best node;
- the reaper's decision for one record given the time and its node's last NodeInfo.

``fencing`` rises with every dispatch, ``attempt`` only with dispatches that count: a
dispatch whose publish failed gives its attempt back but never its fencing token, so a
ghost message of it can never be mistaken for a later attempt.
"""

from __future__ import annotations

import hashlib
import re
from typing import NamedTuple

import msgspec

from shared.jobs import JobRecord, JobSpec, JobState, Requirements

S = JobState

#: Every phase and the states it may act on; anything else is refused.
TRANSITIONS: dict[str, frozenset[S]] = {
    "dispatch": frozenset({S.PENDING}),
    "started": frozenset({S.DISPATCHED}),
    "progress": frozenset({S.RUNNING}),
    "completed": frozenset({S.RUNNING}),
    "failed": frozenset({S.DISPATCHED, S.RUNNING}),
    "reap": frozenset({S.DISPATCHED, S.RUNNING}),
    "cancel": frozenset({S.PENDING, S.DISPATCHED, S.RUNNING}),
}

_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


def allowed(state: S, phase: str) -> bool:
    """Whether ``phase`` may act on a record in ``state``."""
    return state in TRANSITIONS.get(phase, frozenset())


def is_token(value: str) -> bool:
    """Whether ``value`` can be one subject token (a node id or a capability)."""
    return bool(_TOKEN.match(value))


def idem_key(idempotency_key: str) -> str:
    """The jobs-bucket key that maps an idempotency key to its job_id."""
    return "idem-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:40]


def backoff(attempt: int, *, base: float, cap: float, u: float) -> float:
    """Delay before retrying after failed ``attempt`` (1-based); ``u`` is uniform in [0, 1].

    ``base * 2**(attempt-1)`` capped at ``cap``, then jittered into its upper half so
    retries of many jobs failed together spread out but never wait less than half.
    """
    raw = min(cap, base * 2.0 ** min(max(attempt, 1) - 1, 60))
    return raw * (0.5 + 0.5 * min(max(u, 0.0), 1.0))


# -- where a job goes ---------------------------------------------------------------


def requirements_problem(req: Requirements) -> str | None:
    """Why ``req`` cannot become a pool subject, or None when it can."""
    if not is_token(req.capability):
        return f"requirements.capability {req.capability!r} must be one subject token"
    if req.node_id and not is_token(req.node_id):
        return f"requirements.node_id {req.node_id!r} must be one subject token"
    return None


def needs_selector(req: Requirements, failed_on: str = "") -> bool:
    """Whether the node selector is asked: only when the choice of node matters.

    Pinned or pooled jobs never ask. Nor does a first attempt that needs only a
    capability: every agent serving the capability pool fits it, and the first one
    with a free slot takes it, which spreads load by itself; pooling it by default
    saves a round trip to the selector per job. GPUs or a memory minimum need the
    selector's view of which nodes have them free, and a retry of an attempt that
    failed on node ``failed_on`` needs it to steer clear of that node.
    """
    if req.node_id or req.pooled:
        return False
    return bool(failed_on) or req.gpu_count > 0 or req.min_memory_mb > 0


def choose_pool(req: Requirements, selected: str | None) -> str:
    """The pool: the pinned node, else the pool if asked for, else the selected node.

    No usable selection (selector down or no node fits) falls back to the capability
    pool: late binding, the first free agent serving the capability takes it.
    """
    if req.node_id:
        return f"node.{req.node_id}"
    if req.pooled or not selected or not is_token(selected):
        return f"cap.{req.capability}"
    return f"node.{selected}"


def pool_node(pool: str) -> str:
    """The node a pool names (``node.<id>``), or "" for a capability pool."""
    kind, _, rest = pool.partition(".")
    return rest if kind == "node" else ""


#: Seconds a fresh submit is left to the job manager instance that took it.
SUBMIT_GRACE_S = 2.0


# -- records --------------------------------------------------------------------------


def new_record(job_id: str, spec: JobSpec, now: float) -> JobRecord:
    """A freshly submitted job."""
    return JobRecord(job_id=job_id, spec=spec, state=S.PENDING, submitted_at=now, updated_at=now)


def dispatched(rec: JobRecord, now: float, pool: str) -> JobRecord | None:
    """PENDING -> DISPATCHED as a new attempt with a new fencing token; None if not PENDING."""
    if not allowed(rec.state, "dispatch"):
        return None
    return msgspec.structs.replace(
        rec,
        state=S.DISPATCHED,
        attempt=rec.attempt + 1,
        fencing=rec.fencing + 1,
        pool=pool,
        node_id=pool_node(pool),
        updated_at=now,
        started_at=None,
        lease_expires_at=None,
        retry_at=None,
        progress=0.0,
    )


def undispatched(rec: JobRecord, fencing: int, now: float, retry_at: float) -> JobRecord | None:
    """The publish of dispatch ``fencing`` failed: PENDING again, the attempt given back."""
    if rec.state is not S.DISPATCHED or rec.fencing != fencing:
        return None
    return msgspec.structs.replace(
        rec, state=S.PENDING, attempt=rec.attempt - 1, pool="", updated_at=now, retry_at=retry_at
    )


def fail_attempt(rec: JobRecord, now: float, error: str, delay: float) -> JobRecord:
    """The live attempt failed: PENDING for a retry after ``delay``, or FAILED for good."""
    if rec.attempt < rec.spec.max_attempts:
        return msgspec.structs.replace(
            rec,
            state=S.PENDING,
            error=error,
            updated_at=now,
            lease_expires_at=None,
            retry_at=now + delay,
        )
    return msgspec.structs.replace(
        rec,
        state=S.FAILED,
        error=error,
        permanent=True,
        announced=False,
        updated_at=now,
        finished_at=now,
        lease_expires_at=None,
        retry_at=None,
    )


def cancelled(rec: JobRecord, now: float, reason: str) -> JobRecord | None:
    """Any non-terminal state -> CANCELLED; None when already terminal."""
    if not allowed(rec.state, "cancel"):
        return None
    return msgspec.structs.replace(
        rec,
        state=S.CANCELLED,
        error=reason or "cancelled",
        announced=False,
        updated_at=now,
        finished_at=now,
        lease_expires_at=None,
        retry_at=None,
    )


# -- the reaper -------------------------------------------------------------------------


class Reap(NamedTuple):
    """What the reaper does with a record: ``dispatch`` it, ``fail`` its attempt, or
    ``republish`` a dispatch whose message this instance cannot vouch for."""

    action: str
    reason: str = ""


#: The duplicate window of ``P_JOBS`` (``shared.provision``): a message id seen this
#: recently is not stored again.
DEDUPE_WINDOW_S = 120.0

#: The reason given when an agent's new incarnation dropped the attempt.
AGENT_RESTARTED = "agent restarted"


class Agent(NamedTuple):
    """The latest NodeInfo of a node, as far as the reaper needs it."""

    incarnation: str
    running: frozenset[str]


def agent_lost_it(rec: JobRecord, agent: Agent | None) -> bool:
    """Whether ``rec``'s live attempt died with its agent: the node's agent is a new
    incarnation, not the one that started the attempt, and does not list the job.

    Only a RUNNING attempt names the incarnation that started it; without one (an
    older agent, or none yet) the lease decides. Absence from a brand-new NodeInfo
    alone is not enough: the agent may have just pulled the job and not taken it yet.
    """
    return (
        rec.state is S.RUNNING
        and bool(rec.incarnation)
        and agent is not None
        and bool(agent.incarnation)
        and agent.incarnation != rec.incarnation
        and rec.job_id not in agent.running
    )


def reap_action(
    rec: JobRecord,
    now: float,
    node_lost: bool,
    *,
    dispatch_timeout_s: float,
    lease_s: float,
    pooled_dispatch_timeout_s: float | None = None,
    agent: Agent | None = None,
    published: bool = True,
    republish_after_s: float = 2.0,
    queued_at: float | None = None,
    submit_grace_s: float = 0.0,
) -> Reap | None:
    """The reaper's decision for ``rec``; None when there is nothing to do.

    A dispatch waiting in a capability pool is queued work, not a stuck one: the pool
    holds a backlog ahead of the free slots on purpose, so it gets the longer
    ``pooled_dispatch_timeout_s`` (the plain timeout when not given).

    ``node_lost``: the record's node was heard and is now LOST (``shared.liveness``);
    a node never heard of is left to the lease and the dispatch timeout.
    ``published`` is False for a DISPATCHED record whose message this instance did
    not see acknowledged (a dispatch cut between its write and its publish, or made
    by an instance that died): it is published again, under the same message id,
    before its dispatch can time out, so the cut never spends an attempt;
    ``queued_at`` is when that republish queued it, where its dispatch timeout starts.
    A fresh submit (attempt 0, no retry time) is left to the instance that took it for
    ``submit_grace_s``: with several job managers, another one's submit is PENDING for
    the moment its dispatch asks the selector, and dispatching it here too would only
    lose the compare-and-set after a second selector round trip.
    """
    lost = bool(rec.node_id) and node_lost
    if rec.state is S.PENDING:
        if rec.attempt == 0 and rec.retry_at is None:
            fresh = now - rec.submitted_at < submit_grace_s
            return None if fresh else Reap("dispatch")
        return Reap("dispatch") if rec.retry_at is None or rec.retry_at <= now else None
    if rec.state is S.DISPATCHED:
        if lost:
            return Reap("fail", "node lost")
        age = now - rec.updated_at
        # Past the stream's deduplication window a republish could double a message
        # that did land: then the dispatch timeout decides, as for any dispatch.
        if not published and republish_after_s < age < DEDUPE_WINDOW_S:
            return Reap("republish")
        limit = dispatch_timeout_s
        if pooled_dispatch_timeout_s is not None and rec.pool and not pool_node(rec.pool):
            limit = pooled_dispatch_timeout_s
        if now - max(rec.updated_at, queued_at or 0.0) > limit:
            return Reap("fail", "not started")
        return None
    if rec.state is S.RUNNING:
        if lost:
            return Reap("fail", "node lost")
        if agent_lost_it(rec, agent):
            return Reap("fail", AGENT_RESTARTED)
        if rec.lease_expires_at is not None and rec.lease_expires_at < now:
            return Reap("fail", "lease expired")
        # A backstop behind the agent's own timeout, one lease later.
        if rec.started_at is not None and now > rec.started_at + rec.spec.timeout_s + lease_s:
            return Reap("fail", "timed out")
    return None
