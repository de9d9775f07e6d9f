"""``ringmaster watch``: events (and beacons) as they happen, one line each, until Ctrl-C.

Lines are ``time source TYPE key=value ...``; ``--json`` prints each message's own
JSON instead (one per line, for ``jq``). Without ``--since`` only what is published
from now on is shown; ``--since 10m`` (or an ISO time) first replays the events the
``P_EVENTS`` stream holds from then, through an ordered consumer that then keeps
following. A message that does not decode is counted and reported on stderr; it
never stops the watch.
"""

from __future__ import annotations

import argparse
import signal
import sys
from datetime import datetime

import anyio
import msgspec
from nats.aio.msg import Msg

from shared.cli.client import CliError, connected, nats_url, non_negative_int, short, subjects
from shared.cli.history import parse_since, subscribe_since
from shared.codec import decode, decode_error_kind
from shared.contracts import Beacon, Event
from shared.errors import ConfigError
from shared.subjects import Subjects, check_token

_SKIPPED_FIELDS = ("details",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Filters and output format."""
    parser.add_argument("--service", metavar="NAME", help="only this service's events")
    parser.add_argument("--type", metavar="TYPE", help="only this event type (SERVICE_STARTED)")
    parser.add_argument("--failed", action="store_true", help="only failure events (*_FAILED)")
    parser.add_argument("--beacons", action="store_true", help="show beacons too")
    parser.add_argument("--json", action="store_true", help="print each message's JSON")
    parser.add_argument(
        "--since",
        metavar="WHEN",
        help="replay events from WHEN (90s, 10m, 2h, 1d or an ISO time), then follow",
    )
    parser.add_argument(
        "--count",
        metavar="N",
        type=non_negative_int,
        default=0,
        help="stop after N lines (default: never)",
    )


class Watcher:
    """Decodes, filters and prints messages; counts what it cannot read."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.printed = 0
        self.undecodable = 0
        self.done = anyio.Event()

    def wanted(self, event: Event) -> bool:
        """Whether ``event`` passes the ``--type`` and ``--failed`` filters."""
        if self.args.type and event.type != self.args.type:
            return False
        return not self.args.failed or event.type.endswith("_FAILED")

    async def on_event(self, msg: Msg) -> None:
        """Print one event, if it decodes and passes the filters."""
        try:
            event = decode(Event, msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.warn(msg, exc)
            return
        if self.wanted(event):
            self.emit(msg.data, event_line(event))

    async def on_beacon(self, msg: Msg) -> None:
        """Print one beacon."""
        try:
            beacon = decode(Beacon, msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.warn(msg, exc)
            return
        self.emit(msg.data, beacon_line(beacon))

    def emit(self, raw: bytes, line: str) -> None:
        """Print ``line`` (or the raw JSON) and stop after ``--count`` lines."""
        if self.done.is_set():
            return
        text = raw.decode("utf-8", errors="replace") if self.args.json else line
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
        self.printed += 1
        if self.args.count and self.printed >= self.args.count:
            self.done.set()

    def warn(self, msg: Msg, exc: Exception) -> None:
        """Count a message that did not decode and say so on stderr."""
        self.undecodable += 1
        print(
            f"ringmaster watch: warning: undecodable message #{self.undecodable} on "
            f"{msg.subject} ({decode_error_kind(exc)}): {short(str(exc), 120)}",
            file=sys.stderr,
            flush=True,
        )


def _clock(iso: str) -> str:
    try:
        return datetime.fromisoformat(iso).astimezone().strftime("%H:%M:%S.%f")[:-3]
    except ValueError:
        return iso


def event_line(event: Event) -> str:
    """``time source TYPE key=value ...``, long values shortened."""
    fields = " ".join(
        f"{key}={short(value, 60)}"
        for key, value in event.data.items()
        if key not in _SKIPPED_FIELDS
    )
    return f"{_clock(event.time)} {event.source} {event.type} {fields}".rstrip()


def beacon_line(beacon: Beacon) -> str:
    """``time beacon service/instance STATUS seq=N message``."""
    when = datetime.fromtimestamp(beacon.sent_at).strftime("%H:%M:%S.%f")[:-3]
    text = f"{when} beacon {beacon.service}/{beacon.instance} {beacon.status} seq={beacon.seq}"
    return f"{text} {short(beacon.message, 60)}".rstrip()


def event_subject(subs: Subjects, args: argparse.Namespace) -> str:
    """The narrowest subject for the filters (the rest is filtered here)."""
    if args.service:
        return subs.events_of(args.service)
    return subs.failed_events if args.failed else subs.events


async def watch(args: argparse.Namespace) -> int:
    """Subscribe, print until Ctrl-C (or ``--count``), then report what was skipped."""
    subs = subjects(args)
    try:
        if args.service:
            check_token(args.service, "--service")
    except ConfigError as exc:
        raise CliError(str(exc), 2) from None
    since = parse_since(args.since) if args.since else None  # a bad one: exit 2, nothing sent
    watcher = Watcher(args)
    async with connected(args, "ringmaster-watch") as nc:
        watched = [event_subject(subs, args)]
        if since is None:
            await nc.subscribe(watched[0], cb=watcher.on_event)
        else:
            # The same callback as a live watch: the ordered consumer replays, then follows.
            js = nc.jetstream()
            await subscribe_since(js, subs.events_stream, watched[0], since, watcher.on_event)
            watched[0] += f" since {since.astimezone():%Y-%m-%d %H:%M:%S}"
        if args.beacons:
            beacons = subs.beacon(args.service, "*") if args.service else subs.beacons
            await nc.subscribe(beacons, cb=watcher.on_beacon)
            watched.append(beacons)
        await nc.flush()
        print(
            f"ringmaster watch: watching {', '.join(watched)} on {nats_url(args)} (Ctrl-C stops)",
            file=sys.stderr,
            flush=True,
        )
        async with anyio.create_task_group() as tg:

            async def stop_on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        watcher.done.set()

            tg.start_soon(stop_on_signal)
            await watcher.done.wait()
            tg.cancel_scope.cancel()
    if watcher.undecodable:
        print(
            f"ringmaster watch: {watcher.undecodable} undecodable messages skipped", file=sys.stderr
        )
    return 0


def run(args: argparse.Namespace) -> int:
    """Watch until Ctrl-C; 0 on an orderly stop."""
    return int(anyio.run(watch, args))
