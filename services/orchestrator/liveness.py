"""The orchestrator's liveness watch: beacons in, silence judged, hung children killed.

The beacon handler is the hot path (every instance, every interval): a raw callback
that decodes with one pre-made decoder and does O(1) work, no task per message. A
sweep every ``check_interval`` marks silent instances SUSPECT and probes them directly
before calling them LOST. While the orchestrator itself is cut off it judges nobody,
since the silence would be its own: cut off means disconnected, or deaf (no beacon
from anyone, its own included, for ``DEAF_AFTER`` intervals, as in a stalled server),
and a probe that fails while nobody is heard proves nothing. A LOST child of the
supervisor is hung: the supervisor kills and restarts it. Events are queued
(``emit_nowait``), never awaited here.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections import Counter
from typing import TYPE_CHECKING

import anyio
import nats.errors
from nats.aio.msg import Msg

from services.orchestrator.policy import BeaconReader, InvalidBeacon, deaf
from services.orchestrator.registry import Key, Registry
from shared.codec import encode
from shared.contracts import ControlCommand
from shared.events import EventData

if TYPE_CHECKING:
    from services.orchestrator.service import OrchestratorService

log = logging.getLogger("ringmaster.orchestrator")


class Watch:
    """Feeds the registry from beacons, sweeps and probes on behalf of ``svc``."""

    def __init__(self, svc: OrchestratorService) -> None:
        config = svc.config
        self.svc = svc
        self.registry = Registry(forget_after_s=config.forget_lost_after_s)
        self.beacons_ingested = 0
        self.probes: Counter[str] = Counter()
        self.blind_sweeps = 0
        #: LOST verdicts the supervisor acted on (a hung child killed).
        self.hung_kills = 0
        self._reader = BeaconReader(svc.subjects, config.max_message_bytes)
        self._probe_cmd = encode(ControlCommand(command="health", reason="liveness probe"))
        self._probe_limiter = anyio.CapacityLimiter(config.max_probes)
        self._blind = False
        #: Monotonic time of the last valid beacon from anyone (its own included).
        self._heard = time.monotonic()
        self._logged: set[str] = set()

    async def on_beacon(self, msg: Msg) -> None:
        """The beacon subscription's callback: never raises, bad beacons counted."""
        svc = self.svc
        try:
            beacon = self._reader.read(msg.subject, msg.data)
            self._heard = now = time.monotonic()
            events = self.registry.observe(beacon, now)
        except InvalidBeacon as exc:
            svc.intake.invalid[f"beacon:{exc.kind}"] += 1
            self._log_once(exc.kind, "invalid beacon (%s): %s", exc.kind, exc.detail[:200])
            await svc.intake.reply_error(msg, 400, f"invalid beacon ({exc.kind})")
            return
        except Exception as exc:  # noqa: BLE001 - a bug: counted, logged once, never fatal
            svc.intake.errors["beacon"] += 1
            self._log_once(f"bug:{type(exc).__name__}", "beacon handler failed: %r", exc)
            return
        self.beacons_ingested += 1
        for event in events:
            svc.emit_nowait(event)

    def _log_once(self, key: str, text: str, *args: object) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.warning(text + " (further ones are only counted)", *args)

    def cut_off(self, now: float) -> bool:
        """Whether the orchestrator cannot hear anyone: disconnected, or deaf."""
        interval = self.svc.config.beacon_interval
        return not self.svc.nc.is_connected or deaf(now - self._heard, interval)

    async def sweep(self) -> None:
        """Apply silence to every instance (unless cut off) and start the probes due."""
        now = time.monotonic()
        if self.cut_off(now):
            self._blind = True
            self.blind_sweeps += 1
            return
        if self._blind:
            # Nobody could be heard while we were cut off: restart every silence count.
            self._blind = False
            self.registry.pardon(now)
        events, probes = self.registry.sweep(now)
        self._announce(events)
        for key in probes:
            self.svc.spawn(functools.partial(self._probe, key))
        self._condemn_hung(now)

    async def _probe(self, key: Key) -> None:
        service, instance = key
        svc = self.svc
        async with self._probe_limiter:
            started = time.monotonic()
            self.probes["sent"] += 1
            answered: bool | None = True
            try:
                await svc.nc.request(
                    svc.subjects.ctl(service, instance),
                    self._probe_cmd,
                    timeout=svc.config.probe_timeout,
                )
            except nats.errors.NoRespondersError:
                # The server itself answered: nobody listens there (a dead process).
                answered = False if not self.cut_off(time.monotonic()) else None
            except (TimeoutError, nats.errors.Error, OSError):
                answered = await self._bus_works(started)
        self.probes[{True: "answered", False: "unanswered", None: "inconclusive"}[answered]] += 1
        self._announce(self.registry.probe_result(key, answered, started, time.monotonic()))

    async def _bus_works(self, started: float) -> bool | None:
        """After a probe timed out: False (unanswered) if the bus provably works, else None.

        Our own connection failing, or a bus that delivers nothing, says nothing about
        the instance. Proof that it works: a beacon from anyone since the probe went
        out, or a server round trip (PING/PONG) that succeeds now.
        """
        if self.cut_off(time.monotonic()):
            return None
        if self._heard > started:
            return False
        try:
            # nats-py takes whole seconds here; a PONG comes back in well under one.
            await self.svc.nc.flush(timeout=math.ceil(self.svc.config.probe_timeout))
        except (TimeoutError, nats.errors.Error, OSError):
            self.probes["flush_failed"] += 1
            return None
        return False

    def _announce(self, events: list[EventData]) -> None:
        for event in events:
            self.svc.emit_nowait(event)

    def _condemn_hung(self, now: float) -> None:
        """Hand every supervised child LOST for ``hung_after_s`` to the supervisor.

        Its process lives (else the supervisor would have seen it exit), so it is hung:
        killed and restarted. Asked every sweep; the supervisor acts once per process,
        since the verdict names the pid the beacons came from.
        """
        supervisor = self.svc.supervisor
        if supervisor is None:
            return
        for entry in self.registry.lost_for(now, self.svc.config.hung_after_s):
            b = entry.beacon
            reason = f"LOST, silent for {now - entry.seen:.1f}s, probe unanswered"
            if supervisor.condemn(b.service, b.instance, b.pid, reason):
                self.hung_kills += 1
