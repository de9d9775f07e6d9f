"""The loop manager service: hosts the registered housekeeping loops.

Every run of a hosted loop emits LOOP_STARTED, then LOOP_COMPLETED (duration and the
run's result) or LOOP_FAILED (the error, a timeout included). Operators control each
loop over ``P.api.loop_manager.list|pause|resume|trigger``; the loops' stats are in the
health details (the framework shows ``self.loops``), their latest results too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from services.loop_manager.config import LoopManagerConfig
from services.loop_manager.policy import loop_problems
from services.loop_manager.registry import LoopBody, LoopDef, available
from shared.config import BaseConfig
from shared.contracts import Empty, HealthCheckResult, LoopList, LoopRequest
from shared.errors import Conflict, NotFound
from shared.events import LoopCompleted, LoopFailed, LoopStarted
from shared.loops import Loop, LoopStats
from shared.service import Service

log = logging.getLogger("ringmaster.loop_manager")


class LoopManagerService(Service[LoopManagerConfig]):
    """Hosts housekeeping loops with per-loop control and LOOP_* events."""

    name = "loop_manager"
    description = "cluster housekeeping loops with per-loop control and LOOP_* events"
    config_type = LoopManagerConfig

    def __init__(
        self,
        config: LoopManagerConfig,
        *,
        reload_config: Callable[[], LoopManagerConfig] | None = None,
    ) -> None:
        super().__init__(config, reload_config=reload_config)
        self.hosted: dict[str, Loop] = {}
        self.results: dict[str, dict[str, Any]] = {}
        # Loops the operator paused one by one stay paused across a service resume.
        self._paused_by_operator: set[str] = set()

    async def setup(self) -> None:
        """Build the enabled loops from the registry and add the control endpoints."""
        # The config already refused names the registry does not know.
        for name, factory in sorted(available().items()):
            if name in self.config.disabled_loops:
                log.info("loop %s disabled by config", name)
                continue
            self.host_loop(name, factory(self))
        await self.add_endpoint("list", Empty, self._list)
        await self.add_endpoint("pause", LoopRequest, self._pause)
        await self.add_endpoint("resume", LoopRequest, self._resume)
        await self.add_endpoint("trigger", LoopRequest, self._trigger)

    def host_loop(self, name: str, definition: LoopDef) -> Loop:
        """Add ``definition`` as a loop whose every run emits LOOP_* events."""
        if name in self.hosted:
            raise ValueError(f"loop {name!r} is already hosted")
        interval = self.config.loops.get(name, definition.interval)
        loop = Loop(
            name,
            self._instrumented(name, definition.body),
            interval=interval,
            timeout=definition.timeout,
            max_backoff=max(60.0, interval),
            on_error=self._on_loop_error,
        )
        self.hosted[name] = loop
        return super().add_loop(loop)

    def add_loop(self, loop: Loop) -> Loop:
        """Only loops built by :meth:`host_loop` run here, so that none runs without events."""
        if self.hosted.get(loop.name) is not loop:
            raise TypeError(
                f"loop {loop.name!r}: the loop manager hosts loops through "
                "host_loop() (or the registry) so every run emits LOOP_* events"
            )
        return super().add_loop(loop)

    def _instrumented(self, name: str, body: LoopBody) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            number = self.hosted[name].stats().runs
            self.emit_nowait(LoopStarted(loop=name, run=number))
            started = time.monotonic()
            result = await body()
            # Emitted before the result is kept: a result that does not encode is
            # this run's failure, not a stale "latest result".
            self.emit_nowait(
                LoopCompleted(
                    loop=name, run=number, duration_s=time.monotonic() - started, result=result
                )
            )
            self.results[name] = result

        return run

    def _on_loop_error(self, name: str, error: BaseException) -> None:
        # Called by Loop for exceptions and timeouts alike, so each failure emits once.
        number = self.hosted[name].stats().runs
        self.emit_nowait(
            LoopFailed(loop=name, run=number, error=f"{type(error).__name__}: {error}")
        )

    # -- API -------------------------------------------------------------------------
    def _loop(self, request: LoopRequest) -> Loop:
        loop = self.hosted.get(request.loop)
        if loop is None:
            raise NotFound(f"no loop {request.loop!r}; hosted: {', '.join(sorted(self.hosted))}")
        return loop

    async def _list(self, _: Empty) -> LoopList:
        return LoopList(
            instance=self.instance,
            loops=[loop.stats() for loop in self.hosted.values()],
            results=dict(self.results),
        )

    async def _pause(self, request: LoopRequest) -> LoopStats:
        loop = self._loop(request)
        loop.pause()
        self._paused_by_operator.add(loop.name)
        return loop.stats()

    async def _resume(self, request: LoopRequest) -> LoopStats:
        loop = self._loop(request)
        if self.paused:
            raise Conflict("the loop manager is paused; resume the service first")
        loop.resume()
        self._paused_by_operator.discard(loop.name)
        return loop.stats()

    async def _trigger(self, request: LoopRequest) -> LoopStats:
        loop = self._loop(request)
        loop.trigger()
        return loop.stats()

    # -- hooks -----------------------------------------------------------------------
    async def on_resume(self) -> None:
        """The framework resumed every loop; re-pause those the operator paused."""
        for name in self._paused_by_operator:
            self.hosted[name].pause()

    async def on_reload(self, old: BaseConfig) -> None:
        """Intervals and the loop set take effect at the next start; say so."""
        if isinstance(old, LoopManagerConfig) and (old.loops, old.disabled_loops) != (
            self.config.loops,
            self.config.disabled_loops,
        ):
            log.warning("loop intervals and disabled loops change at the next restart")

    def health(self) -> HealthCheckResult:
        """DEGRADED while a loop keeps failing or its latest result carries warnings."""
        stats = [loop.stats() for loop in self.hosted.values()]
        problems = loop_problems(
            stats, self.results, failures_degraded=self.config.failures_degraded
        )
        details = {
            "hosted": sorted(self.hosted),
            "disabled": self.config.disabled_loops,
            "results": dict(self.results),
        }
        if problems:
            return HealthCheckResult.degraded("; ".join(problems), **details)
        return HealthCheckResult.ok(f"{len(self.hosted)} loops", **details)

    def custom_metrics(self) -> dict[str, float]:
        """Runs and failures of each hosted loop."""
        metrics: dict[str, float] = {}
        for name, loop in self.hosted.items():
            stats = loop.stats()
            metrics[f"loop_{name}_runs_total"] = stats.runs
            metrics[f"loop_{name}_failures_total"] = stats.failures
            metrics[f"loop_{name}_paused"] = float(stats.paused)
        return metrics
