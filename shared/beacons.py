"""Beacons: one per instance every ``beacon_interval``, and at once when status changes.

A beacon carries the instance's status and health (with its details), so the
orchestrator and any operator subscribing to ``P.beacon.>`` see the cluster without
asking anyone. Beacons are plain NATS messages: a lost one is covered by the next,
and the orchestrator needs two missed intervals before it even suspects anything.
"""

from __future__ import annotations

import time
from typing import Protocol

import anyio
from anyio.abc import TaskStatus
from nats.aio.client import Client

from shared.codec import encode
from shared.contracts import Beacon, HealthCheckResult, ServiceStatus
from shared.instance import Instance


class BeaconSource(Instance, Protocol):
    """What the beacon publisher reads of its service."""

    @property
    def version(self) -> str: ...
    @property
    def started_at(self) -> float: ...
    @property
    def connection(self) -> Client | None:
        """The NATS connection, None before it is made."""

    def health_check(self) -> HealthCheckResult: ...
    def effective_status(self, health: HealthCheckResult | None = None) -> ServiceStatus: ...


class Beacons:
    """The beacon publisher of one service."""

    def __init__(self, service: BeaconSource) -> None:
        self._service = service
        self._wake = anyio.Event()
        self.seq = 0

    def build(self) -> Beacon:
        """The beacon for the service's current state."""
        svc = self._service
        health = svc.health_check()
        self.seq += 1
        return Beacon(
            service=svc.name,
            instance=svc.instance,
            version=svc.version,
            host=svc.host,
            pid=svc.pid,
            status=svc.effective_status(health),
            healthy=health.healthy,
            message=health.message,
            details=health.details,
            started_at=svc.started_at,
            sent_at=time.time(),
            seq=self.seq,
            interval_s=svc.config.beacon_interval,
        )

    async def publish(self) -> None:
        """Publish one beacon now (skipped while disconnected: the next one follows)."""
        svc = self._service
        nc = svc.connection
        if nc is not None and nc.is_connected:
            beacon = self.build()
            await nc.publish(svc.subjects.beacon(svc.name, svc.instance), encode(beacon))

    def wake(self) -> None:
        """Publish at once instead of at the next interval."""
        self._wake.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Publish every interval, or sooner when woken; until cancelled."""
        task_status.started()
        while True:
            await self.publish()
            with anyio.move_on_after(self._service.config.beacon_interval):
                await self._wake.wait()
            self._wake = anyio.Event()
