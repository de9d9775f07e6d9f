"""Supervisor of the service processes ``ringmaster up`` starts.

One child per service instance, ``<service>-<i>`` (kept across restarts, so the
registry sees it RECOVERED): config in ``RINGMASTER_<SERVICE>_<FIELD>`` variables,
output appended to ``<log_dir>/<instance>.log``, its own process group, and killed by
the kernel if the supervisor dies, even by SIGKILL. On exit ``restart.decide`` picks:
restart after a delay (``ServiceRestarted``), give up (``ServiceGaveUp``), or nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import anyio
from anyio.abc import TaskStatus

from services.orchestrator.restart import RestartLimits, RestartState, decide, describe_exit
from shared.cluster import ClusterFile, RestartPolicy, service_env
from shared.contracts import ChildView
from shared.events import EventData, ServiceGaveUp, ServiceRestarted
from shared.procutil import set_parent_death_signal

__all__ = ["Supervisor", "default_argv"]

log = logging.getLogger(__name__)

Emit = Callable[[EventData], Awaitable[bool]]
ArgvFor = Callable[[str], list[str]]


def default_argv(service: str) -> list[str]:
    """The command line of a service's process: ``python -m services.<service>``."""
    return [sys.executable, "-m", f"services.{service}"]


def _die_with_parent(parent: int) -> None:
    """Run in the forked child before exec: ask for SIGKILL when the parent dies."""
    set_parent_death_signal()
    # The parent may have died between fork and prctl: then no signal ever comes.
    if os.getppid() != parent:
        os._exit(1)


@dataclass
class _Child:
    """Bookkeeping for one supervised instance (mutated only by its watcher)."""

    service: str
    instance: str
    restart: RestartPolicy
    env: dict[str, str]
    proc: asyncio.subprocess.Process | None = None
    started_at: float | None = None
    state: RestartState = field(default_factory=RestartState)
    restarts: int = 0
    gave_up: bool = False
    last_exit_code: int | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def signal_group(self, sig: signal.Signals) -> None:
        """Signal the child's whole process group; an empty group is not an error."""
        if self.proc is None:
            return
        # No such group: all gone. EPERM: the id was reused by others, so ours are gone.
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    async def wait(self) -> int | None:
        """Wait for the child's exit; its returncode (None if it never started)."""
        return None if self.proc is None else await self.proc.wait()

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def view(self) -> ChildView:
        """This child as ChildView (same field names, so the two cannot drift apart)."""
        return ChildView(**{name: getattr(self, name) for name in ChildView.__struct_fields__})


class Supervisor:
    """Starts, watches, restarts and finally stops the cluster's service processes."""

    def __init__(
        self,
        cluster: ClusterFile,
        *,
        nats_url: str,
        emit: Emit,
        log_dir: Path,
        argv_for: ArgvFor = default_argv,
        grace_s: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        settings = cluster.cluster
        self._emit_fn = emit
        self._log_dir = log_dir
        self._argv_for = argv_for
        self._grace_s = grace_s
        self._limits = RestartLimits.from_settings(settings)
        self._decide = partial(decide, limits=self._limits, rng=rng or random.Random())
        self._children: list[_Child] = []
        #: Events ``emit`` did not get acknowledged (queued for retry by the emitter).
        self.emit_unacked = 0
        base = dict(os.environ)
        # Else a child's last words sit in its buffer and die with it on a SIGKILL.
        base.setdefault("PYTHONUNBUFFERED", "1")
        common: dict[str, object] = {"prefix": settings.prefix, "nats_url": nats_url}
        common["beacon_interval"] = settings.beacon_interval
        common["replicas"] = settings.replicas
        for name, entry in cluster.services.items():
            for i in range(entry.instances if entry.enabled else 0):
                instance = f"{name}-{i}"
                values = {**entry.config, **common, "instance": instance}
                env = {**base, **service_env(name, values)}
                self._children.append(_Child(name, instance, entry.restart, env))

    @property
    def gave_up(self) -> list[str]:
        """Instances the supervisor stopped restarting past the intensity limit."""
        return [c.instance for c in self._children if c.gave_up]

    def snapshot(self) -> list[ChildView]:
        """The current state of every supervised instance."""
        return [c.view() for c in self._children]

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start every child (then ready), supervise until cancelled, then stop them all.

        SIGTERM to each group, SIGKILL after ``grace_s``. Idles on with no child left."""
        self._log_dir.mkdir(parents=True, exist_ok=True)
        try:
            async with anyio.create_task_group() as tg:
                for child in self._children:
                    await tg.start(self._watch, child)
                task_status.started()
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await self._stop_all()

    async def _watch(
        self, child: _Child, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run one instance through its restarts until its policy or the limit ends it."""
        await self._spawn(child)
        task_status.started()
        while True:
            code = await self._wait_exit(child)
            now, started = time.monotonic(), child.started_at
            decision = self._decide(child.restart, code, child.state, now=now, started_at=started)
            child.state = decision.state
            if decision.action == "stop":
                log.info("%s: not restarted (policy %s)", child.instance, child.restart)
                return
            if decision.action == "give_up":
                child.gave_up = True
                n, window = decision.in_window, self._limits.period_s
                log.error("%s: gave up, %d restarts in %.0fs", child.instance, n, window)
                await self._emit(
                    ServiceGaveUp(
                        service=child.service,
                        instance=child.instance,
                        restarts=n,
                        window_s=window,
                        last_exit_code=code,
                    )
                )
                return
            child.restarts += 1
            log.warning("%s: restart %d in %.2fs", child.instance, child.restarts, decision.delay_s)
            await anyio.sleep(decision.delay_s)
            if await self._spawn(child):
                n, delay = child.restarts, decision.delay_s
                await self._emit(
                    ServiceRestarted(
                        service=child.service,
                        instance=child.instance,
                        exit_code=code,
                        restarts=n,
                        delay_s=delay,
                    )
                )

    async def _spawn(self, child: _Child) -> bool:
        """Start ``child``'s process; False (logged) if it could not be started."""
        argv = self._argv_for(child.service)
        path = self._log_dir / f"{child.instance}.log"
        try:
            with path.open("ab") as out:
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
                out.write(f"--- {stamp} starting {child.instance}: {argv}\n".encode())
                out.flush()
                # Shielded: a started process is always in child.proc for _stop_all. On the
                # loop thread, as the death signal fires when the *forking thread* exits.
                with anyio.CancelScope(shield=True):
                    proc = await asyncio.create_subprocess_exec(
                        *argv,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env=child.env,
                        start_new_session=True,
                        preexec_fn=partial(_die_with_parent, os.getpid()),
                    )
                    child.proc = proc
        except (OSError, subprocess.SubprocessError) as exc:
            log.error("%s: cannot start %s: %s", child.instance, argv, exc)
            child.proc = child.last_exit_code = child.started_at = None
            return False
        child.started_at = time.monotonic()
        log.info("%s: started pid %d", child.instance, proc.pid)
        return True

    async def _wait_exit(self, child: _Child) -> int | None:
        """Wait for ``child`` to exit, sweep its process group, record the code."""
        code = child.last_exit_code = await child.wait()
        # Whatever the child started is in its group and must not outlive it.
        child.signal_group(signal.SIGKILL)
        log.warning("%s: exited: %s", child.instance, describe_exit(code))
        return code

    async def _stop_all(self) -> None:
        """SIGTERM every running child's group, SIGKILL what is left after the grace."""
        live = [c for c in self._children if c.running]
        for child in live:
            log.info("%s: stopping", child.instance)
            child.signal_group(signal.SIGTERM)
        with anyio.move_on_after(self._grace_s):
            for child in live:
                await child.wait()
        for child in live:
            if child.running:
                log.warning("%s: no exit after %.1fs, SIGKILL", child.instance, self._grace_s)
            # SIGKILL the group even if the leader left: a grandchild may ignore SIGTERM.
            child.signal_group(signal.SIGKILL)
            with anyio.move_on_after(self._grace_s):
                child.last_exit_code = await child.wait()
            log.info("%s: stopped (%s)", child.instance, describe_exit(child.last_exit_code))

    async def _emit(self, data: EventData) -> None:
        if not await self._emit_fn(data):
            self.emit_unacked += 1
            log.warning("%s not acknowledged yet (left to the emitter's retry)", data.TYPE)
