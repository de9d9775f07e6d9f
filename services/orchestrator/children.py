"""One supervised child process: its bookkeeping, signals and the rule for a hung one.

Kept apart from the supervisor's loop so each stays small. A child is *hung* when
the orchestrator declared its instance LOST (silent, and its direct probe
unanswered) while its process still exists: :meth:`Child.terminate` then does what
systemd's watchdog does, SIGTERM and SIGCONT to the group (a stopped process cannot
act on SIGTERM until continued), SIGKILL after a grace period.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from contextlib import suppress
from dataclasses import dataclass, field

import anyio

from services.orchestrator.restart import RestartState
from shared.cluster import RestartPolicy
from shared.contracts import ChildView
from shared.procutil import set_parent_death_signal

__all__ = ["Child", "default_argv", "die_with_parent"]

log = logging.getLogger("services.orchestrator.supervisor")


def default_argv(service: str) -> list[str]:
    """The command line of a service's process: ``python -m services.<service>``."""
    return [sys.executable, "-m", f"services.{service}"]


def die_with_parent(parent: int) -> None:
    """Run in the forked child before exec: ask for SIGKILL when the parent dies."""
    set_parent_death_signal()
    # The parent may have died between fork and prctl: then no signal ever comes.
    if os.getppid() != parent:
        os._exit(1)


@dataclass
class Child:
    """Bookkeeping for one supervised instance (mutated by its watcher and condemn)."""

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
    #: Hung-child kills sent to this instance (each one a LOST verdict acted on).
    hung_kills: int = 0
    #: The pid being killed as hung: its exit counts as abnormal whatever its code.
    condemned: int | None = None

    @property
    def running(self) -> bool:
        """Whether its process exists and has not exited."""
        return self.proc is not None and self.proc.returncode is None

    @property
    def pid(self) -> int | None:
        """The pid of its current (or last) process."""
        return None if self.proc is None else self.proc.pid

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

    def refresh(self, now: float, period_s: float) -> None:
        """Clear ``gave_up`` once the child has run ``period_s`` without exiting."""
        started = self.started_at
        if self.gave_up and self.running and started is not None and now - started > period_s:
            self.gave_up = False
            log.warning("%s: running steadily again after giving up", self.instance)

    async def terminate(self, pid: int, grace_s: float, reason: str) -> None:
        """Kill the hung process ``pid``: SIGTERM (and SIGCONT), SIGKILL after ``grace_s``."""
        if self.pid != pid or not self.running:
            return
        self.condemned = pid
        self.hung_kills += 1
        log.error(
            "%s: pid %d hung (%s): SIGTERM, SIGKILL in %.1fs", self.instance, pid, reason, grace_s
        )
        self.signal_group(signal.SIGTERM)
        self.signal_group(signal.SIGCONT)
        with anyio.move_on_after(grace_s):
            await self.wait()
        if self.pid == pid and self.running:
            log.error("%s: pid %d ignored SIGTERM for %.1fs: SIGKILL", self.instance, pid, grace_s)
            self.signal_group(signal.SIGKILL)

    def view(self) -> ChildView:
        """This child as ChildView (same field names, so the two cannot drift apart)."""
        return ChildView(**{name: getattr(self, name) for name in ChildView.__struct_fields__})
