"""Running one service as a process: config, logging, signals, exit codes.

Every ``services/<name>/__main__.py`` is two lines on top of this: parse the config,
run the service. Exit codes: 0 stopped in order, 1 could not start (NATS unreachable,
server too old), 2 bad configuration or arguments.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any, TypeVar

import anyio

from shared.config import BaseConfig, load_config
from shared.errors import BusError, ConfigError
from shared.service import Service

C = TypeVar("C", bound=BaseConfig)

log = logging.getLogger("ringmaster")


def configure_logging(level: str, name: str, instance: str = "") -> None:
    """One-line log records on stderr, tagged with the service and instance."""
    tag = f"{name}:{instance}" if instance else name
    logging.basicConfig(
        level=level.upper(),
        format=f"%(asctime)s %(levelname)s {tag} %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def fail(prog: str, message: str, code: int) -> int:
    """Print one clear line to stderr and return ``code``."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


def parse_config(cls: type[C], service: str, argv: Sequence[str] | None = None) -> C:
    """Load a service's config; a bad one exits 2 with one line naming the field."""
    try:
        return load_config(cls, service, argv)
    except ConfigError as exc:
        raise SystemExit(fail(f"ringmaster service {service}", str(exc), 2)) from None


async def serve(service: Service[Any]) -> None:
    """Run ``service`` until SIGTERM, SIGINT or a stop command."""
    async with anyio.create_task_group() as tg:

        async def watch_signals() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    log.info("%s: %s, stopping", service.name, signal.Signals(signum).name)
                    service.request_stop(signal.Signals(signum).name)

        tg.start_soon(watch_signals)
        await service.run()
        tg.cancel_scope.cancel()


def run_service(service_cls: type[Service[C]], config: C, argv: Sequence[str] | None = None) -> int:
    """Build and run the service; returns the process exit code."""
    configure_logging(config.log_level, service_cls.name, config.instance)

    def reload() -> C:
        return load_config(type(config), service_cls.name, argv)

    async def build_and_serve() -> None:
        # Built inside the event loop: a service may make loop-bound objects in __init__.
        await serve(service_cls(config, reload_config=reload))

    prog = f"ringmaster service {service_cls.name}"
    try:
        anyio.run(build_and_serve)
    except BaseException as exc:
        error = unwrap(exc)
        if isinstance(error, BusError):
            return fail(prog, str(error), 1)
        if isinstance(error, ConfigError):
            return fail(prog, str(error), 2)
        if isinstance(error, KeyboardInterrupt):
            return 0
        raise
    return 0


def unwrap(exc: BaseException) -> BaseException:
    """The one error inside (nested) single-member exception groups, else ``exc``.

    Task groups wrap what fails inside them; an expected startup failure must still
    reach the user as its own one-line message.
    """
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
