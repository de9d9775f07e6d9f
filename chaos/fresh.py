"""A promotion after the faults, through the whole gate: a fresh lineage.

The run's game, 3x3k3, has a perfect champion within minutes, so its later candidates
are rightly rejected and a promotion after the faults cannot be asked of it. So the
training coordinator also trains ``FRESH`` (4x4k3) from the start, a game that has no
games and no champion until the faults are over: the selfplay scheduler does not
schedule it, and its readiness ticks (every fault goes through them) find nothing to
train. Once the faults are over the harness submits selfplay jobs of that game, the
spec the scheduler makes (type selfplay, labelled ``kind=selfplay``), and the rest is
the cluster's own path: the agents play the games, the sync planner writes the
manifests, the coordinator finds enough new games, trains, evaluates the candidate in
batches against the random player (there is no champion) until SPRT decides, switches
the champion key by CAS and announces MODEL_PROMOTED. Nothing here writes a model, a
state or a champion. The check (``chaos.checks.promoted_after``) fails when no model is
promoted after the faults.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import msgspec
import nats.errors
from nats.aio.client import Client

from chaos.checks import After
from chaos.record import champion_history
from shared.codec import decode, encode
from shared.contracts import Event
from shared.intake import ERROR_CODE_HEADER
from shared.jobs import JobSpec, Requirements
from shared.testing.helpers import stream_events

if TYPE_CHECKING:
    from chaos.runner import Run

FRESH = "4x4k3"
#: Selfplay jobs of the fresh game and games in each: more than ``FRESH_MIN_GAMES``.
FRESH_JOBS, FRESH_GAMES = 4, 100
#: The coordinator's threshold for the fresh game (the run's cluster file).
FRESH_MIN_GAMES = 300
#: A submit left unanswered is tried again (same key, same job) for this long.
SUBMIT_S = 60.0


def fresh_spec(number: int, seed: int) -> JobSpec:
    """The ``number``-th selfplay job of the fresh game, as the scheduler would make it."""
    return JobSpec(
        type="selfplay",
        args={"game": FRESH, "games": FRESH_GAMES, "seed": seed + number, "exploration": 0.2},
        requirements=Requirements(capability="selfplay", pooled=True),
        labels={"kind": "selfplay", "game": FRESH, "model_id": ""},
        timeout_s=600.0,
        max_attempts=3,
        idempotency_key=f"chaos-fresh-{seed}-{number}",
    )


async def _submit(run: Run, nc: Client, spec: JobSpec) -> bool:
    subject = run.subjects.api("job_manager", "submit")
    unanswered = 0
    with anyio.move_on_after(SUBMIT_S):
        while True:
            try:
                reply = await nc.request(subject, encode(spec), timeout=3.0)
                if not (reply.headers or {}).get(ERROR_CODE_HEADER):
                    return True
            except (nats.errors.Error, TimeoutError):
                # The job manager is busy or restarting: the same key again.
                unanswered += 1
            await anyio.sleep(1.0)
    run.log(f"after the faults: {spec.idempotency_key} not accepted ({unanswered} unanswered)")
    return False


async def promote_fresh(run: Run, nc: Client, before: int) -> After:
    """Start the fresh game, wait up to ``after_s`` for its promotion; what was read then.

    ``before`` is the number of events of the settled read: the events after it are
    those from the end of the faults on.
    """
    promoted = await nc.subscribe(run.subjects.event("training_coordinator", "MODEL_PROMOTED"))
    try:
        submitted = 0
        for number in range(FRESH_JOBS):
            submitted += await _submit(run, nc, fresh_spec(number, run.options.seed))
        run.log(f"after the faults: {submitted} selfplay jobs of {FRESH} submitted")
        run.log(f"after the faults: waiting up to {run.options.after_s:.0f}s for a promotion")
        with anyio.move_on_after(run.options.after_s):
            while True:  # the event is the wake-up; the verdict reads the stream and keys
                msg = await promoted.next_msg(timeout=run.options.after_s)
                try:
                    data = decode(Event, msg.data).data
                except msgspec.DecodeError:
                    run.log("after the faults: an undecodable MODEL_PROMOTED, ignored")
                    continue
                run.log(f"after the faults: {data.get('game')} {data.get('model_id')} promoted")
                if data.get("game") == FRESH:
                    break  # another game's promotion counts too, but the fresh one is sure
    except TimeoutError:
        run.log("after the faults: no promotion")
    finally:
        await promoted.unsubscribe()
    events = await stream_events(nc, run.subjects.events_stream)
    return After(events=events[before:], champions=await champion_history(nc, run.subjects))
