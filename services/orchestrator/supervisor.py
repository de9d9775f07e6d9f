"""Supervisor of the service processes ``ringmaster up`` starts.

One child per service instance, ``<service>-<i>`` (kept across restarts, so the
registry sees it RECOVERED): config in ``RINGMASTER_<SERVICE>_<FIELD>`` variables,
output appended to ``<log_dir>/<instance>.log``, its own process group, and killed by
the kernel if the supervisor dies, even by SIGKILL. On exit ``restart.decide`` picks:
restart after a delay (``ServiceRestarted``), past the intensity limit give up
(``ServiceGaveUp`` once, ERROR) yet keep restarting at the backoff cap, since the
cause (a NATS outage, say) may pass; or nothing (the policy does not want it back).
A child the orchestrator found hung (LOST while its process lives) is killed through
:meth:`Supervisor.condemn` and then restarted the same way.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import anyio
from anyio.abc import TaskGroup, TaskStatus

from services.orchestrator.children import Child, default_argv, die_with_parent
from services.orchestrator.restart import RestartLimits, decide, describe_exit
from shared.cluster import ClusterFile, service_env
from shared.contracts import ChildView
from shared.events import EventData, ServiceGaveUp, ServiceRestarted

__all__ = ["Supervisor", "default_argv"]

log = logging.getLogger(__name__)

Emit = Callable[[EventData], Awaitable[bool]]
ArgvFor = Callable[[str], list[str]]


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
        hung_grace_s: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        settings = cluster.cluster
        self._emit_fn = emit
        self._hung_grace_s = hung_grace_s
        self._tg: TaskGroup | None = None
        self._log_dir = log_dir
        self._argv_for = argv_for
        self._grace_s = grace_s
        self._limits = RestartLimits.from_settings(settings)
        self._decide = partial(decide, limits=self._limits, rng=rng or random.Random())
        self._children: list[Child] = []
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
                self._children.append(Child(name, instance, entry.restart, env))

    def _refreshed(self) -> list[Child]:
        now = time.monotonic()
        for child in self._children:
            child.refresh(now, self._limits.period_s)
        return self._children

    @property
    def gave_up(self) -> list[str]:
        """Instances past the intensity limit (restarted at the cap until a stable run)."""
        return [c.instance for c in self._refreshed() if c.gave_up]

    def snapshot(self) -> list[ChildView]:
        """The current state of every supervised instance."""
        return [c.view() for c in self._refreshed()]

    def condemn(self, service: str, instance: str, pid: int, reason: str) -> bool:
        """Kill ``instance`` as hung if ``pid`` is its running process; whether it was.

        The pid guards against a late verdict: a LOST about an earlier process of the
        instance must not kill the one that already replaced it.
        """
        child = next((c for c in self._children if c.instance == instance), None)
        if child is None or child.service != service or self._tg is None:
            return False
        if child.pid != pid or not child.running or child.condemned == pid:
            return False
        self._tg.start_soon(child.terminate, pid, self._hung_grace_s, reason)
        return True

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start every child (then ready), supervise until cancelled, then stop them all.

        SIGTERM to each group, SIGKILL after ``grace_s``. Idles on with no child left."""
        self._log_dir.mkdir(parents=True, exist_ok=True)
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                for child in self._children:
                    await tg.start(self._watch, child)
                task_status.started()
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await self._stop_all()

    async def _watch(
        self, child: Child, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run one instance through its restarts until its policy does not want it back."""
        await self._spawn(child)
        task_status.started()
        while True:
            code = await self._wait_exit(child)
            now, started = time.monotonic(), child.started_at
            verdict = code
            if child.condemned is not None:
                # Killed as hung: abnormal even if SIGTERM let it exit cleanly.
                verdict = code if code else -signal.SIGKILL
                child.condemned = None
            decision = self._decide(
                child.restart, verdict, child.state, now=now, started_at=started
            )
            child.state = decision.state
            if decision.action == "stop":
                log.info("%s: not restarted (policy %s)", child.instance, child.restart)
                return
            delay = decision.delay_s
            if decision.action == "give_up" and not child.gave_up:
                await self._give_up(child, decision.in_window, code)
            if child.gave_up:
                delay = max(delay, self._limits.max_delay_s)
            child.restarts += 1
            log.warning("%s: restart %d in %.2fs", child.instance, child.restarts, delay)
            await anyio.sleep(delay)
            if await self._spawn(child):
                n = child.restarts
                await self._emit(
                    ServiceRestarted(
                        service=child.service,
                        instance=child.instance,
                        exit_code=code,
                        restarts=n,
                        delay_s=delay,
                    )
                )

    async def _give_up(self, child: Child, restarts: int, code: int | None) -> None:
        """Say once that ``child`` is past the intensity limit; it is still retried."""
        child.gave_up = True
        window, cap = self._limits.period_s, self._limits.max_delay_s
        log.error(
            "%s: gave up, %d restarts in %.0fs; retrying every %.1fs until it runs steadily",
            child.instance,
            restarts,
            window,
            cap,
        )
        await self._emit(
            ServiceGaveUp(
                service=child.service,
                instance=child.instance,
                restarts=restarts,
                window_s=window,
                last_exit_code=code,
            )
        )

    async def _spawn(self, child: Child) -> bool:
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
                        preexec_fn=partial(die_with_parent, os.getpid()),
                    )
                    child.proc = proc
        except (OSError, subprocess.SubprocessError) as exc:
            log.error("%s: cannot start %s: %s", child.instance, argv, exc)
            child.proc = child.last_exit_code = child.started_at = None
            return False
        child.started_at = time.monotonic()
        log.info("%s: started pid %d", child.instance, proc.pid)
        return True

    async def _wait_exit(self, child: Child) -> int | None:
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
