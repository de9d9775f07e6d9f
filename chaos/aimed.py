"""Faults beyond kill -9: aimed crashes at failpoints, SIGSTOP hangs, a NATS stall, and
the harness's own jobs.

- Failpoints: the cluster is started with ``RINGMASTER_FAILPOINTS="*=crash(once)"``, so
  each point in ``shared.failpoints.POINTS`` crashes its process the first time it is
  passed, one after the other as training reaches them; the markers in the run's
  ``failpoints/`` directory say which fired.
- Hangs: a victim drawn like a kill is stopped with SIGSTOP for ``HANG_S`` (longer than
  the node-loss timeout and a job lease), then continued: its work was taken over
  meanwhile, and whatever it still believes must be refused (fencing), not applied.
- NATS stall: the single nats-server is stopped with SIGSTOP for ``STALL_S`` (longer
  than the node-loss timeout), then continued; every client sees a silent server.
- Ledger: jobs of the harness's own, some cancelled, checked against its ledger.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
from nats.aio.client import Client

from chaos.ledger import Ledger
from shared import failpoints

if TYPE_CHECKING:
    from chaos.runner import Run

#: A hang outlasts the job lease (5 s) and node loss (3 s) of the run's cluster file.
HANG_S = 8.0
STALL_S = 6.0
#: One ledger job per this many seconds while the faults go on; every 4th is cancelled.
LEDGER_EVERY_S = 3.0


@dataclass
class Aimed:
    """What the aimed faults did, for the summary and the verdict."""

    hangs: list[str] = field(default_factory=list)
    stalls: int = 0
    #: "orchestrator" and "ringmaster up", each killed with SIGKILL once.
    supervisors: list[str] = field(default_factory=list)
    #: Instances killed again while starting (right after the supervisor restarted them).
    startups: list[str] = field(default_factory=list)
    ledger: Ledger = field(default_factory=Ledger)
    submitted: int = 0


def failpoint_env(directory: Path) -> dict[str, str]:
    """The environment that arms every failpoint once for the whole cluster."""
    directory.mkdir(parents=True, exist_ok=True)
    return {failpoints.ENV: "*=crash(once)", failpoints.DIR_ENV: str(directory)}


def _signal(pid: int, sig: signal.Signals) -> bool:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
        return True
    return False


async def hang(run: Run, nc: Client, aimed: Aimed) -> None:
    """SIGSTOP one ready instance for ``HANG_S``, then SIGCONT it."""
    status = await run.status(nc)
    victim = run.plan.choose(status, time.monotonic()) if status is not None else None
    if victim is None or victim.pid is None or not _signal(victim.pid, signal.SIGSTOP):
        return
    run.log(f"hang: SIGSTOP {victim.instance} (pid {victim.pid}) for {HANG_S:.0f}s")
    try:
        await anyio.sleep(HANG_S)
    finally:
        _signal(victim.pid, signal.SIGCONT)
    aimed.hangs.append(victim.instance)
    run.log(f"hang: SIGCONT {victim.instance}")


async def stall_nats(run: Run, pid: int | None, aimed: Aimed) -> None:
    """SIGSTOP the nats-server for ``STALL_S``, then SIGCONT it."""
    if pid is None or not _signal(pid, signal.SIGSTOP):
        return
    run.log(f"nats: stalled (SIGSTOP) for {STALL_S:.0f}s")
    try:
        await anyio.sleep(STALL_S)
    finally:
        _signal(pid, signal.SIGCONT)
    aimed.stalls += 1
    run.log("nats: continued")


async def feed_ledger(run: Run, nc: Client, aimed: Aimed) -> None:
    """Submit the harness's jobs (and cancel every 4th) until cancelled."""
    while True:
        spec = aimed.ledger.spec(aimed.submitted, run.options.seed)
        aimed.submitted += 1
        await aimed.ledger.submit(nc, run.subjects, spec)
        if aimed.submitted % 4 == 0:
            # At once, so it is still waiting or running: a cancel of an ended job is a 409.
            await aimed.ledger.cancel(nc, run.subjects, spec.idempotency_key)
        await anyio.sleep(LEDGER_EVERY_S)


async def kill_orchestrator(run: Run, nc: Client, aimed: Aimed) -> None:
    """SIGKILL the orchestrator: its children die with it, ``ringmaster up`` restarts it."""
    status = await run.status(nc)
    views = [v for v in status.services if v.service == "orchestrator"] if status else []
    if not views or not _signal(views[0].pid, signal.SIGKILL):
        return
    aimed.supervisors.append("orchestrator")
    run.log(f"kill -9 the orchestrator (pid {views[0].pid}); waiting for the cluster")
    await anyio.sleep(3.0)
    await run.wait_ready(nc)
    run.log("the orchestrator and its cluster are back")


async def kill_up(run: Run, nc: Client, aimed: Aimed) -> None:
    """SIGKILL ``ringmaster up`` itself (everything dies with it), then start it again."""
    up = run.up
    if up is None:
        return
    _signal(up.pid, signal.SIGKILL)
    await up.wait()
    aimed.supervisors.append("ringmaster up")
    run.log(f"kill -9 ringmaster up (pid {up.pid}); starting it again")
    await anyio.sleep(2.0)  # its orchestrator and services die with it (PDEATHSIG)
    await run.spawn()
    await run.wait_ready(nc)
    run.log("ringmaster up and its cluster are back")


async def kill_starting(run: Run, nc: Client, aimed: Aimed, instance: str, old: int) -> None:
    """Kill ``instance`` again as soon as its restart is running, before it is ready."""
    with anyio.move_on_after(10.0):
        while True:
            status = await run.status(nc)
            child = next(
                (c for c in status.children if c.instance == instance) if status else iter(()),
                None,
            )
            if child is not None and child.running and child.pid and child.pid != old:
                await anyio.sleep(run.plan.rng.uniform(0.0, 0.6))  # somewhere in start-up
                if _signal(child.pid, signal.SIGKILL):
                    # Counted against the instance's kill budget (restart intensity).
                    run.plan.history.setdefault(instance, deque()).append(time.monotonic())
                    aimed.startups.append(instance)
                    run.log(f"kill -9 {instance} while starting (pid {child.pid})")
                return
            await anyio.sleep(0.05)
