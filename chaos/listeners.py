"""What a running service listens to, read from the service itself, not from a list.

- core subscriptions: every subject the instance's NATS connection is subscribed to
  (the client's own subscription table), inboxes and ``$SRV`` left out, each with the
  type its intake decodes (``Service.intake_types``). A subject that is subscribed but
  missing from the intake catalogue is reported, so neither can drift from the other;
- durable consumers: the consumers of ``P_EVENTS`` that appeared when it started,
  with their filter subjects.

Wildcards are filled with one token, so every pattern becomes a subject to publish on.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal

from nats.aio.client import Client

from chaos.payloads import TOKEN
from shared.contracts import Event
from shared.service import Service
from shared.subjects import Subjects

Kind = Literal["request", "message", "stream"]

#: Framework subjects whose payload is ignored by protocol (PING, INFO, STATS).
PAYLOAD_FREE = "$SRV."


@dataclass(frozen=True)
class Listener:
    """One subject a service takes messages on."""

    service: str
    pattern: str
    subject: str
    kind: Kind
    type: type[Any]


def concrete(pattern: str) -> str:
    """A subject matching ``pattern``: each wildcard token becomes ``TOKEN``."""
    return ".".join(TOKEN if t in ("*", ">") else t for t in pattern.split("."))


def service_class(name: str) -> type[Service[Any]]:
    """The Service subclass of ``services.<name>.service`` whose ``name`` is ``name``."""
    module = importlib.import_module(f"services.{name}.service")
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, Service) and value.name == name:
            return value
    raise LookupError(f"services.{name}.service defines no Service named {name!r}")


def subscribed(nc: Client) -> list[str]:
    """Every subject the connection is subscribed to, except inboxes and ``$SRV``."""
    subs = nc._subs.values()
    return sorted(
        {
            s.subject
            for s in subs
            if not s.subject.startswith(("_INBOX.", PAYLOAD_FREE)) and "_INBOX" not in s.subject
        }
    )


def core_listeners(svc: Service[Any]) -> tuple[list[Listener], list[str]]:
    """The service's core subscriptions, and subjects it listens to with no known type."""
    endpoints = {e.subject for e in svc._micro.endpoints.values()} if svc._micro else set()
    requests = endpoints | {
        svc.subjects.ctl(svc.name, svc.instance),
        svc.subjects.ctl_all(svc.name),
    }
    found: list[Listener] = []
    unknown: list[str] = []
    for pattern in subscribed(svc.nc):
        tp = svc.intake_types.get(pattern)
        if tp is None:
            unknown.append(pattern)
            continue
        kind: Kind = "request" if pattern in requests else "message"
        found.append(Listener(svc.name, pattern, concrete(pattern), kind, tp))
    return found, unknown


async def durable_consumers(nc: Client, subjects: Subjects) -> dict[str, list[str]]:
    """Durable consumers of ``P_EVENTS`` and their filter subjects."""
    js = nc.jetstream()
    out: dict[str, list[str]] = {}
    for info in await js.consumers_info(subjects.events_stream):
        config = info.config
        filters = list(config.filter_subjects or []) or [config.filter_subject or subjects.events]
        if config.durable_name:
            out[config.durable_name] = filters
    return out


def stream_listeners(
    service: str, before: dict[str, list[str]], after: dict[str, list[str]]
) -> list[Listener]:
    """The consumers that appeared between ``before`` and ``after``, one per filter."""
    return [
        Listener(service, pattern, concrete(pattern), "stream", Event)
        for name in sorted(set(after) - set(before))
        for pattern in after[name]
    ]
