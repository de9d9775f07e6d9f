"""The end of a chaos run: stop making jobs, let every job end, read every record.

What is read here is all the verdict sees: the stream and the buckets (the durable
record), and the independent records (the harness's ledger, the stream's own count,
every live instance's outbox counters, the champion keys' history, the failpoint
markers). The creators are resumed afterwards, so the health read last also shows
that training goes on; with ``after_s`` a fresh game is then started and its promotion
awaited (:mod:`chaos.fresh`).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import anyio
from nats.aio.client import Client

from chaos.checks import Independent
from chaos.fresh import promote_fresh
from chaos.invariants import DurableRecord
from chaos.record import (
    bucket_values,
    champion_history,
    instance_metrics,
    jobs_of,
    read_record,
    stream_size,
)
from shared import failpoints
from shared.jobs import TERMINAL
from shared.subjects import Subjects

if TYPE_CHECKING:
    from chaos.runner import Run

#: Services that create jobs; paused at the end so every job can reach its end.
CREATORS = ("selfplay_scheduler", "training_coordinator")
#: A generous bound that catches a hang; it measures nothing.
SETTLE_S = 240.0


async def settle(run: Run, nc: Client) -> DurableRecord:
    """Stop making jobs, let every job end, read the record, resume, check health."""
    run.log("settling: waiting for every service to run again")
    # The last victim's beacons still look fresh for a moment: let its death show.
    await anyio.sleep(3.0)
    await run.wait_ready(nc)
    if run.options.ledger:
        # Submits that got no answer during the faults are made now, same keys.
        await run.aimed.ledger.catch_up(nc, run.subjects, run.options.seed, run.aimed.submitted)
    for service in CREATORS:
        await run.control(nc, service, "pause")
    run.log("settling: creators paused; waiting for every job to end")
    with anyio.move_on_after(SETTLE_S):
        while True:
            if await _jobs_done(nc, run.subjects):
                break
            await anyio.sleep(1.0)
    messages, record = await _read_settled(run, nc)
    champions = await champion_history(nc, run.subjects)
    for service in CREATORS:
        await run.control(nc, service, "resume")
    status = await run.wait_ready(nc) or await run.status(nc)
    after = await promote_fresh(run, nc, len(record.events)) if run.options.after_s else None
    instances = [(v.service, v.instance) for v in status.services] if status else []
    fp_dir = run.workdir / "failpoints"
    run.independent = Independent(
        ledger=set(run.aimed.ledger.submitted.values()),
        cancelled=set(run.aimed.ledger.cancelled),
        stream_messages=messages,
        stream_read=len(record.events),
        metrics=await instance_metrics(nc, run.subjects, instances),
        champions=champions,
        armed=list(failpoints.POINTS) if run.options.failpoints else [],
        fired=failpoints.fired(fp_dir) if fp_dir.is_dir() else {},
        after=after,
    )
    if status is None:
        return record
    return dataclasses.replace(record, services=status.services, children=status.children)


async def _read_settled(run: Run, nc: Client) -> tuple[int, DurableRecord]:
    """The stream's size and the record, read when every job in it is terminal.

    A pause reaches a creator that is restarting late, and a submit round under way
    finishes after it: a job can start after every job had ended. Such a record is
    read again (the pause sent again) once that job has ended, up to ``SETTLE_S``.
    """
    messages = await stream_size(nc, run.subjects)
    record = await read_record(nc, run.subjects)
    with anyio.move_on_after(SETTLE_S):
        while any(job.state not in TERMINAL for job in record.jobs.values()):
            run.log("settling: a job started after the pause; reading again when it ends")
            for service in CREATORS:
                await run.control(nc, service, "pause")
            await anyio.sleep(2.0)
            messages = await stream_size(nc, run.subjects)
            record = await read_record(nc, run.subjects)
    return messages, record


async def _jobs_done(nc: Client, subjects: Subjects) -> bool:
    jobs = jobs_of(await bucket_values(nc, subjects.bucket("jobs")))
    return all(job.state in TERMINAL for job in jobs.values())
