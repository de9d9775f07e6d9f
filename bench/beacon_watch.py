"""Every beacon of one instance as it arrives: what the restart and RSS benchmarks wait on."""

from __future__ import annotations

import time
from dataclasses import dataclass

import anyio
from nats.aio.msg import Msg

from shared.codec import decode
from shared.contracts import Beacon, ServiceStatus


@dataclass
class Seen:
    """One beacon as it arrived."""

    at: float
    pid: int
    status: ServiceStatus
    started_at: float


class Beacons:
    """Every beacon of one instance, in arrival order."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.wake = anyio.Event()

    async def on_beacon(self, msg: Msg) -> None:
        """Record one beacon."""
        b = decode(Beacon, msg.data)
        self.seen.append(Seen(time.monotonic(), b.pid, b.status, b.started_at))
        self.wake.set()

    async def first(self, after: float, timeout: float, *, not_pid: int = 0, running: bool) -> Seen:
        """The first beacon after ``after`` from a pid other than ``not_pid``."""
        deadline = time.monotonic() + timeout
        while True:
            for s in self.seen:
                ok_status = s.status is ServiceStatus.RUNNING or not running
                if s.at >= after and s.pid != not_pid and ok_status:
                    return s
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {'RUNNING ' if running else ''}beacon within {timeout}s")
            self.wake = anyio.Event()
            with anyio.move_on_after(remaining):
                await self.wake.wait()
