"""The invariants from records independent of the event stream, as pure functions.

``chaos.invariants`` judges the stream against the KV buckets. These judge it against
what the stream cannot vouch for: the harness's own ledger of the jobs it submitted,
the number of messages the stream says it holds (a short read fails the run), the
outboxes' counters of every live instance, the history of each champion key in the
models bucket (every switch of the title, whether announced or not), which
failpoints fired, and a promotion after the faults (through the whole gate).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from chaos.invariants import Verdict, _terminal
from shared.contracts import Event, ServiceMetrics
from shared.jobs import TERMINAL, JobRecord


@dataclass(frozen=True)
class After:
    """What the harness read once a promotion after the faults came (or its wait ended)."""

    #: The stream's events from the end of the faults on (those after the settled read).
    events: list[Event]
    #: game -> the champion key's history then, as in :class:`Independent`.
    champions: dict[str, list[tuple[str, str]]]


@dataclass(frozen=True)
class Independent:
    """What the harness read besides the stream and the buckets' current values."""

    #: Job ids the harness submitted itself, and those it asked to cancel.
    ledger: set[str]
    cancelled: set[str]
    #: Messages the stream said it held when it was read, and how many were read.
    stream_messages: int
    stream_read: int
    #: Every live instance's metrics (outbox counters among them).
    metrics: list[ServiceMetrics]
    #: game -> the champion key's history, oldest first: (model_id, previous model_id).
    champions: dict[str, list[tuple[str, str]]]
    #: Failpoints armed for the run, and how often each fired.
    armed: list[str] = field(default_factory=list)
    fired: dict[str, int] = field(default_factory=dict)
    #: What was read after the faults, when a promotion was waited for.
    after: After | None = None


def _verdict(name: str, checked: int, bad: list[str], note: str = "") -> Verdict:
    return Verdict(name, not bad, checked, bad, note)


def ledger_kept(ledger: set[str], events: Sequence[Event], jobs: dict[str, JobRecord]) -> Verdict:
    """Each job the harness submitted is in the bucket, terminal, announced exactly once."""
    ends: Counter[str] = Counter()
    for event in events:
        if _terminal(event) is not None:
            ends[event.data["job_id"]] += 1
    bad: list[str] = []
    for job_id in sorted(ledger):
        record = jobs.get(job_id)
        if record is None:
            bad.append(f"{job_id}: the harness submitted it, no record")
        elif record.state not in TERMINAL:
            bad.append(f"{job_id}: still {record.state}")
        elif ends[job_id] != 1:
            bad.append(f"{job_id}: {record.state} with {ends[job_id]} terminal events")
    return _verdict("every job of the harness's ledger ended once", len(ledger), bad)


def stream_read_whole(messages: int, read: int) -> Verdict:
    """The stream was read to its end: a short read fails instead of passing quietly."""
    bad = [] if read >= messages else [f"read {read} of {messages} messages"]
    return _verdict("the event stream was read whole", messages, bad)


def outboxes_clean(metrics: Sequence[ServiceMetrics]) -> Verdict:
    """No live instance dropped an event or still holds one unacknowledged."""
    bad = [
        f"{m.instance}: dropped {m.events_dropped}, pending {m.events_pending}"
        for m in metrics
        if m.events_dropped or m.events_pending
    ]
    if not metrics:
        bad.append("no instance answered for its metrics")
    emitted = sum(m.events_emitted for m in metrics)
    return _verdict(
        "no event dropped or pending in any outbox", len(metrics), bad, f"{emitted} emitted"
    )


def champions_announced(
    champions: dict[str, list[tuple[str, str]]], events: Sequence[Event]
) -> Verdict:
    """Every switch of a champion key has its MODEL_PROMOTED, and no promotion is extra."""
    told: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for event in events:
        if event.type == "MODEL_PROMOTED":
            data = event.data
            told[data["game"]].add((data["model_id"], data.get("previous", "")))
    bad: list[str] = []
    switches = 0
    for game in sorted(set(champions) | set(told)):
        moved = champions.get(game, [])
        switches += len(moved)
        if len(set(moved)) != len(moved):
            bad.append(f"{game}: a model took the title twice: {moved}")
        for model_id, previous in moved:
            if (model_id, previous) not in told[game]:
                bad.append(f"{game}: {model_id} over {previous or 'none'} never announced")
        for model_id, previous in sorted(told[game] - set(moved)):
            bad.append(f"{game}: {model_id} over {previous or 'none'} announced, key never moved")
    return _verdict("every champion switch announced, none extra", switches, bad)


def failpoints_fired(armed: Sequence[str], fired: dict[str, int]) -> Verdict:
    """The armed failpoints did fire (the crashes aimed at the windows happened)."""
    if not armed:
        return Verdict("failpoints fired", True, 0, [], "none armed")
    missed = [name for name in armed if not fired.get(name)]
    note = f"{sum(fired.values())} crashes; not reached: {', '.join(missed) or 'none'}"
    bad = [] if len(missed) < len(armed) else ["no armed failpoint fired"]
    return Verdict("failpoints fired", not bad, len(armed), bad, note)


def promoted_after(after: After | None, before: Sequence[Event]) -> Verdict:
    """A model was promoted after the faults, through the whole gate.

    A promotion counts when it is new (its model was not promoted ``before``, so a
    decision re-announced after a crash is not one), an evaluation of that candidate
    against that champion accepted it after the faults too, and the champion key moved
    to it. A promotion after the faults that fails either is a violation; none at all
    fails the check.
    """
    name = "a model promoted after the faults"
    if after is None:
        return Verdict(name, True, 0, [], "not waited for")
    earlier = {(e.data["game"], e.data["model_id"]) for e in before if e.type == "MODEL_PROMOTED"}
    accepted: set[tuple[str, str, str]] = set()
    good: list[str] = []
    bad: list[str] = []
    for event in after.events:
        data = event.data
        if event.type == "EVALUATION_COMPLETED" and data.get("decision") == "accept":
            accepted.add((data["game"], data["candidate"], data.get("champion", "")))
        elif event.type == "MODEL_PROMOTED":
            game, model, previous = data["game"], data["model_id"], data.get("previous", "")
            if (game, model) in earlier:
                continue  # an earlier promotion announced again: not a new one
            if (game, model, previous) not in accepted:
                bad.append(f"{game} {model}: promoted with no accepting evaluation before it")
            elif (model, previous) not in after.champions.get(game, []):
                bad.append(f"{game} {model}: announced, the champion key never moved to it")
            else:
                good.append(f"{game} {model} over {previous or 'none'}")
    if not good and not bad:
        bad.append("no model was promoted after the faults")
    return Verdict(name, not bad, len(good) + len(bad), bad, "; ".join(good))


def check_independent(
    extra: Independent, events: Sequence[Event], jobs: dict[str, JobRecord]
) -> list[Verdict]:
    """Every check of this module, in the order the table shows them."""
    return [
        ledger_kept(extra.ledger, events, jobs),
        stream_read_whole(extra.stream_messages, extra.stream_read),
        outboxes_clean(extra.metrics),
        champions_announced(extra.champions, events),
        failpoints_fired(extra.armed, extra.fired),
        promoted_after(extra.after, events),
    ]
