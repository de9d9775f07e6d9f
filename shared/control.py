"""Control commands every instance answers: pause, resume, drain, stop, health, reload.

They arrive on ``P.ctl.<service>.<instance>`` (one instance) and
``P.ctl.<service>.all`` (every instance), and are answered with a ControlReply.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

import anyio.lowlevel
import msgspec
from nats.aio.client import Client
from nats.aio.subscription import Subscription

from shared.contracts import ControlCommand, ControlReply, HealthCheckResult, ServiceStatus
from shared.errors import ConfigError, Conflict
from shared.instance import Instance
from shared.intake import Intake
from shared.loops import Loop


class Controllable(Instance, Protocol):
    """What the control commands reach of a service: its switches and its hooks."""

    paused: bool
    draining: bool

    @property
    def nc(self) -> Client: ...
    @property
    def intake(self) -> Intake: ...
    @property
    def intake_types(self) -> dict[str, type[Any]]: ...
    @property
    def loops(self) -> Sequence[Loop]: ...
    @property
    def reload_config(self) -> Callable[[], Any] | None: ...

    def health_check(self) -> HealthCheckResult: ...
    def effective_status(self, health: HealthCheckResult | None = None) -> ServiceStatus: ...
    def request_stop(self, reason: str = "") -> None: ...
    def spawn(self, func: Callable[[], Coroutine[Any, Any, None]]) -> None: ...
    def wake_beacon(self) -> None: ...
    def replace_config(self, new: Any) -> None:
        """Make ``new`` the service's config (the hooks see it from now on)."""

    async def on_pause(self) -> None: ...
    async def on_resume(self) -> None: ...
    async def on_drain(self) -> None: ...
    async def on_reload(self, old: Any) -> None: ...


log = logging.getLogger("ringmaster.control")


async def start_control(service: Controllable) -> list[Subscription]:
    """Subscribe ``service`` to its control subjects; returns the subscriptions."""
    handler = service.intake.request_handler(
        "control", ControlCommand, lambda cmd: handle_control(service, cmd), lambda: None
    )
    subjects = (
        service.subjects.ctl(service.name, service.instance),
        service.subjects.ctl_all(service.name),
    )
    service.intake_types.update(dict.fromkeys(subjects, ControlCommand))
    return [await service.nc.subscribe(subject, cb=handler) for subject in subjects]


def _reply(service: Controllable, cmd: ControlCommand, message: str) -> ControlReply:
    return ControlReply(
        ok=True,
        command=cmd.command,
        service=service.name,
        instance=service.instance,
        status=service.effective_status(),
        message=message,
    )


async def handle_control(service: Controllable, cmd: ControlCommand) -> ControlReply:
    """Carry out one command and say what happened."""
    log.info("%s: control %s %s", service.name, cmd.command, cmd.reason)
    if cmd.command == "health":
        health = service.health_check()
        return msgspec.structs.replace(_reply(service, cmd, health.message), health=health)
    if cmd.command == "pause":
        service.paused = True
        for loop in service.loops:
            loop.pause()
        await service.on_pause()
    elif cmd.command == "resume":
        service.paused = False
        for loop in service.loops:
            loop.resume()
        await service.on_resume()
    elif cmd.command == "stop":
        service.request_stop(cmd.reason or "stop command")
    elif cmd.command == "drain":
        service.draining = True
        service.spawn(lambda: _drain_then_stop(service, cmd.reason))
    elif cmd.command == "reload":
        await _reload(service)
    service.wake_beacon()
    return _reply(service, cmd, f"{cmd.command} done")


async def _drain_then_stop(service: Controllable, reason: str) -> None:
    await service.on_drain()
    # Let the control reply and the DRAINING beacon go out before intake stops.
    await anyio.lowlevel.checkpoint()
    service.request_stop(reason or "drained")


async def _reload(service: Controllable) -> None:
    if service.reload_config is None:
        raise Conflict("this instance has no config source to reload from")
    try:
        new = service.reload_config()
    except ConfigError as exc:
        raise Conflict(f"reload refused: {exc}") from exc
    except SystemExit as exc:
        raise Conflict("reload refused: the command line no longer parses") from exc
    old = service.config
    if (new.prefix, new.instance, new.nats_url) != (old.prefix, old.instance, old.nats_url):
        raise Conflict("reload cannot change prefix, instance or nats_url; restart instead")
    service.replace_config(new)
    logging.getLogger().setLevel(new.log_level.upper())
    await service.on_reload(old)
