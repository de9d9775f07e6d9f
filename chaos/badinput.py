"""The bad-input suite: every subject every service listens to, fed garbage.

For each service (started in this process on its own prefix), for each subject it
listens to (:mod:`chaos.listeners`): random bytes, hypothesis-generated wrong-schema
JSON, an empty message, messages over the size limit, and one valid message replayed
(sent once, then again and again). The service is paused while fed, so its own loops
change nothing, and the suite checks (:mod:`chaos.feed`):

- no crash: it still runs and answers afterwards;
- no state change: every KV bucket holds the same values after the garbage and the
  replays as before them, and the event stream grew by exactly what was published to it;
- every invalid message counted in health details (the intake's ``invalid_total``,
  and the durable consumers' ``invalid``);
- an error reply (the micro error headers) for every invalid message with a reply subject.
"""

from __future__ import annotations

import logging
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import nats
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from chaos.feed import Feed, Sent
from chaos.listeners import (
    Listener,
    core_listeners,
    durable_consumers,
    service_class,
    stream_listeners,
)
from chaos.record import kv_state
from shared.cli.service import known_services
from shared.codec import decode, encode
from shared.config import convert_config
from shared.contracts import ControlCommand, ControlReply
from shared.embedded import EmbeddedServer, free_port
from shared.service import Service
from shared.subjects import Subjects

#: The size limit the services run with here, so over-size messages stay small.
LIMIT = 4096
#: What some services need to start on a bare server (no cluster file, no HTTP).
EXTRA: dict[str, dict[str, Any]] = {
    "node_agent": {"min_free_disk_mb": 1, "min_memory_mb": 1, "slots": 1},
    "orchestrator": {"http_port": -1},
    "status_metrics_collector": {"prometheus_port": 0},
}


@dataclass
class ServiceReport:
    """What held for one service."""

    service: str
    listeners: list[Listener] = field(default_factory=list)
    sent: Sent = field(default_factory=Sent)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every check held."""
        return not self.problems


async def _health(nc: Client, subjects: Subjects, service: str, instance: str) -> dict[str, Any]:
    reply = await nc.request(
        subjects.ctl(service, instance), encode(ControlCommand(command="health")), timeout=5.0
    )
    health = decode(ControlReply, reply.data).health
    return dict(health.details) if health is not None else {}


def intake_invalid(details: dict[str, Any]) -> int:
    """The intake's count of invalid messages in health details."""
    return int(details.get("framework", {}).get("intake", {}).get("invalid_total", 0))


def consumer_invalid(details: dict[str, Any]) -> int:
    """The durable consumers' count of invalid events in health details."""
    consumer = details.get("consumer")
    return int(consumer.get("invalid", 0)) if isinstance(consumer, dict) else 0


async def _control(nc: Client, subjects: Subjects, service: str, instance: str, verb: str) -> None:
    cmd = ControlCommand(command=verb, reason="bad-input suite")  # type: ignore[arg-type]
    await nc.request(subjects.ctl(service, instance), encode(cmd), timeout=5.0)


async def _consumers(nc: Client, subjects: Subjects) -> dict[str, list[str]]:
    try:
        return await durable_consumers(nc, subjects)
    except NotFoundError:
        return {}  # no stream yet: the first service creates it


async def check_service(
    cls: type[Service[Any]],
    url: str,
    prefix: str,
    per_subject: int,
    seed: int,
    *,
    patience: float = 30.0,
) -> ServiceReport:
    """Feed one service every kind of bad input on every subject; what held."""
    name = cls.name
    report = ServiceReport(name)
    subjects = Subjects(prefix)
    instance = f"{name}-0"
    values = {"nats_url": url, "prefix": prefix, "instance": instance, "max_message_bytes": LIMIT}
    config = convert_config(cls.config_type, {**values, **EXTRA.get(name, {})})
    nc = await nats.connect(url)
    try:
        before = await _consumers(nc, subjects)
        svc = cls(config)
        async with svc.running():
            core, unknown = core_listeners(svc)
            report.problems += [f"{s}: subscribed, but no intake type is known" for s in unknown]
            report.listeners = core + stream_listeners(name, before, await _consumers(nc, subjects))
            await _control(nc, subjects, name, instance, "pause")
            feed = Feed(nc, svc, report.listeners, LIMIT, random.Random(seed), patience)
            await feed.quiet()
            await feed.originals()
            kv_before = await kv_state(nc, subjects)
            seq_before = await feed.events_seq()
            details = await _health(nc, subjects, name, instance)
            report.sent = await feed.garbage(per_subject)
            report.problems += report.sent.reply_problems()
            after = await feed.settle(
                lambda: _health(nc, subjects, name, instance),
                intake_invalid(details) + report.sent.invalid_core,
                consumer_invalid(details) + report.sent.invalid_stream,
            )
            report.problems += _count_problems(details, after, report.sent)
            if await kv_state(nc, subjects) != kv_before:
                report.problems.append("KV state changed")
            grew = await feed.events_seq() - seq_before
            if grew != report.sent.to_events:
                report.problems.append(f"event stream grew by {grew}, {report.sent.to_events} sent")
            await _control(nc, subjects, name, instance, "resume")
            if svc._stop_requested.is_set() or svc.status.value != "RUNNING":
                report.problems.append(f"not running afterwards: {svc.status}")
    finally:
        await nc.close()
    return report


def _count_problems(before: dict[str, Any], after: dict[str, Any], sent: Sent) -> list[str]:
    problems = []
    counted = intake_invalid(after) - intake_invalid(before)
    if counted != sent.invalid_core:
        problems.append(f"intake counted {counted} invalid of {sent.invalid_core} sent")
    counted = consumer_invalid(after) - consumer_invalid(before)
    if counted != sent.invalid_stream:
        problems.append(f"consumer counted {counted} invalid of {sent.invalid_stream} sent")
    return problems


async def run_suite(url: str, per_subject: int, seed: int) -> list[ServiceReport]:
    """Every known service, one after the other, each on its own prefix."""
    reports = []
    for number, name in enumerate(known_services()):
        started = time.monotonic()
        prefix = f"bad{seed % 10000}x{number}"
        report = await check_service(service_class(name), url, prefix, per_subject, seed)
        reports.append(report)
        print(
            f"bad input: {name}: {len(report.listeners)} subjects, "
            f"{report.sent.total} messages in {time.monotonic() - started:.1f}s, "
            f"{'PASS' if report.ok else 'FAIL'}",
            flush=True,
        )
    return reports


def print_reports(reports: list[ServiceReport]) -> None:
    """The per-subject table and every problem found."""
    print("\n== bad input")
    print(f"{'service':<26} {'subject':<56} {'kind':<8} sent")
    for report in reports:
        for listener in report.listeners:
            count = report.sent.per_subject.get(listener.subject, 0)
            print(f"{report.service:<26} {listener.pattern:<56} {listener.kind:<8} {count}")
    for report in reports:
        for problem in report.problems[:10]:
            print(f"FAIL {report.service}: {problem}")
    held = sum(r.ok for r in reports)
    print(f"{held}/{len(reports)} services held under bad input", flush=True)


def main(per_subject: int, seed: int) -> int:
    """Run the suite on its own nats-server; 0 when every service held."""
    # Each service logs the first invalid message of every kind; thousands of kinds
    # would bury the table. The counters in health details are the record.
    logging.getLogger("ringmaster").setLevel(logging.ERROR)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="badinput-") as tmp:
        server = EmbeddedServer(port=free_port(), store_dir=Path(tmp) / "nats")
        server.start()
        try:
            reports = anyio.run(run_suite, server.url, per_subject, seed)
        finally:
            server.stop()
    print_reports(reports)
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100, 0))
