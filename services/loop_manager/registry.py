"""The registry of housekeeping loops the loop manager can host.

A loop is a factory registered under a name: given the running service (as a
:class:`LoopContext`), it returns a :class:`LoopDef` whose ``body`` does one run and
returns a result dict (it becomes the LOOP_COMPLETED payload; a ``warnings`` list in
it makes the service DEGRADED until a later run has none). Adding a loop is a new
module that calls :func:`register`, named in ``BUILTIN_MODULES``; the service itself
does not change.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from nats.aio.client import Client
from nats.js.client import JetStreamContext

from shared.subjects import Subjects

if TYPE_CHECKING:
    from services.loop_manager.config import LoopManagerConfig

LoopBody = Callable[[], Awaitable[dict[str, Any]]]

#: Modules whose import registers the built-in loops.
BUILTIN_MODULES = ("services.loop_manager.stream_usage",)


class LoopContext(Protocol):
    """What a loop factory may use from the running service."""

    subjects: Subjects
    config: LoopManagerConfig

    @property
    def nc(self) -> Client:
        """The NATS connection."""
        ...

    @property
    def js(self) -> JetStreamContext:
        """The JetStream context."""
        ...


@dataclass(frozen=True)
class LoopDef:
    """One hosted loop: its run, default interval and per-run timeout (seconds)."""

    body: LoopBody
    interval: float
    timeout: float | None = 60.0
    description: str = ""


LoopFactory = Callable[[LoopContext], LoopDef]

#: name -> factory; filled by ``register`` when a loop module is imported.
REGISTRY: dict[str, LoopFactory] = {}


def register(name: str) -> Callable[[LoopFactory], LoopFactory]:
    """Decorator: register ``factory`` under ``name`` (a name is registered once)."""

    def add(factory: LoopFactory) -> LoopFactory:
        if name in REGISTRY and REGISTRY[name] is not factory:
            raise ValueError(f"loop {name!r} is already registered")
        REGISTRY[name] = factory
        return factory

    return add


def available() -> dict[str, LoopFactory]:
    """Every registered loop, the built-in ones imported first."""
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    return dict(REGISTRY)
