"""The live dashboard: its files, the snapshot it shows and the events it tails.

The snapshot is built from what the orchestrator already holds (registry, supervised
children, nodes, jobs, champions) once per tick while a page is open, encoded once and
sent as the same bytes to every page; nobody is asked anything per client. Events
come from one core subscription to ``P.event.>`` into bounded deques (the tail and
the recent failures); JOB_PROGRESS and METRICS_COLLECTED are counted but not tailed,
since progress shows as bars and the collector's rounds would drown everything else.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from importlib import resources
from typing import Any

import msgspec
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext

from services.orchestrator.config import OrchestratorConfig
from services.orchestrator.elo import EloHistory
from services.orchestrator.http import Page
from services.orchestrator.sse import SseHub, frame
from shared.contracts import ClusterStatus, Event, InstanceView, ModelRow
from shared.subjects import Subjects

#: Event subjects (``<noun>.<phase>`` at their end) counted but not tailed.
QUIET = (".job.progress", ".metrics.collected")
#: Event types listed as failures besides every ``*_FAILED``.
FAILURES = ("SERVICE_LOST", "SERVICE_GAVE_UP", "NODE_UNHEALTHY")

#: Data fields that say why, shown first in an event's line.
_WHY = ("error", "reason", "message")

_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}


def pages() -> dict[str, Page]:
    """The dashboard's files (package data of ``services.orchestrator.static``) by path."""
    static = resources.files("services.orchestrator") / "static"
    return {path: (ctype, (static / name).read_bytes()) for path, (name, ctype) in _FILES.items()}


def summary(data: dict[str, Any], limit: int = 160) -> str:
    """``key=value`` pairs of an event's data on one short line, what went wrong first."""
    # A stable sort: the error (or reason) leads, so a truncated failure line still says why.
    items = sorted(data.items(), key=lambda kv: kv[0] not in _WHY)
    text = " ".join(f"{k}={v}" for k, v in items if v not in ("", None, [], {}))
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Dashboard:
    """Snapshot per tick, event tail and failures, fanned out through an SseHub."""

    def __init__(
        self,
        status: Callable[[], ClusterStatus],
        elo: EloHistory,
        *,
        tail: int = 200,
        failures: int = 50,
        max_event_bytes: int = 65536,
        max_clients: int = 16,
        send_timeout: float = 10.0,
        interval: float = 1.0,
    ) -> None:
        self._status = status
        self.interval = interval
        self.elo = elo
        self.max_event_bytes = max_event_bytes
        self.tail: deque[dict[str, Any]] = deque(maxlen=tail)
        self.failures: deque[dict[str, Any]] = deque(maxlen=failures)
        #: Tail entries not yet sent to open pages (bounded like the tail itself).
        self.fresh: deque[dict[str, Any]] = deque(maxlen=tail)
        self.hub = SseHub(self.greeting, max_clients=max_clients, send_timeout=send_timeout)
        self.events: Counter[str] = Counter()
        self.ticks = 0
        self._seq = 0
        self._snapshot = b""
        self._snapshot_at = 0.0
        self._decoder = msgspec.json.Decoder(Event)
        self._encoder = msgspec.json.Encoder()

    @classmethod
    def for_config(
        cls, config: OrchestratorConfig, subjects: Subjects, status: Callable[[], ClusterStatus]
    ) -> Dashboard:
        """The orchestrator's dashboard, sized by its config."""
        return cls(
            status,
            EloHistory(subjects),
            tail=config.dashboard_tail,
            failures=config.dashboard_failures,
            max_event_bytes=config.max_message_bytes,
            max_clients=config.dashboard_max_clients,
            send_timeout=config.http_timeout,
            interval=config.dashboard_interval,
        )

    # -- events ------------------------------------------------------------------------
    async def on_event(self, msg: Msg) -> None:
        """Raw callback of the ``P.event.>`` subscription: O(1), never raises."""
        if msg.subject.endswith(QUIET):
            self.events["quiet"] += 1
            return
        if len(msg.data) > self.max_event_bytes:
            self.events["oversized"] += 1
            return
        try:
            event = self._decoder.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.events["invalid"] += 1
            return
        self.add(event)

    def add(self, event: Event) -> None:
        """Put one event in the tail (and in the failures if it is one)."""
        self.events["tailed"] += 1
        self._seq += 1
        entry = {
            "seq": self._seq,
            "time": event.time,
            "type": event.type,
            "source": "/".join(event.source.rsplit("/", 2)[-2:]),
            "text": summary(event.data),
        }
        self.tail.append(entry)
        self.fresh.append(entry)
        if event.type.endswith("_FAILED") or event.type in FAILURES:
            self.failures.append(entry)

    # -- snapshots ---------------------------------------------------------------------
    async def tick(self) -> None:
        """Once per interval: while a page is open, one snapshot and the new events to all."""
        if self.hub.clients == 0:
            self.fresh.clear()  # a page opening later gets the whole tail anyway
            return
        self.ticks += 1
        self._take_snapshot()
        fresh = self._events_frame(reset=False) if self.fresh else b""
        self.fresh.clear()
        self.hub.publish(self._snapshot + fresh)

    def greeting(self) -> list[bytes]:
        """What a page gets on connecting: the last snapshot (or a new one) and the tail."""
        if time.monotonic() - self._snapshot_at > self.interval:
            self._take_snapshot()  # no page was open: the cached one is stale
        return [self._snapshot, self._events_frame(reset=True)]

    async def refresh_elo(self, js: JetStreamContext) -> None:
        """Read new model records, only while a page is open to show them."""
        if self.hub.clients > 0:
            await self.elo.refresh(js)

    def _take_snapshot(self) -> None:
        self._snapshot = frame("snapshot", self._encoder.encode(self.build()))
        self._snapshot_at = time.monotonic()

    def _events_frame(self, *, reset: bool) -> bytes:
        events = list(self.tail) if reset else list(self.fresh)
        return frame("events", self._encoder.encode({"reset": reset, "events": events}))

    def build(self) -> dict[str, Any]:
        """The page's whole state as plain data."""
        status = self._status()
        children = {c.instance: c for c in status.children}
        now = time.time()
        services = []
        for view in status.services:
            child = children.get(view.instance)
            services.append(
                {
                    "service": view.service,
                    "instance": view.instance,
                    "status": view.status.value,
                    "liveness": view.liveness.value,
                    "healthy": view.healthy,
                    "message": view.message[:200],
                    "pid": view.pid,
                    "host": view.host,
                    "seen_s": round(max(0.0, now - view.last_seen), 1),
                    "uptime_s": round(max(0.0, now - view.started_at)),
                    "restarts": child.restarts if child else None,
                }
            )
        return {
            "prefix": status.prefix,
            "orchestrator": status.orchestrator,
            "generated_at": status.generated_at,
            "services": services,
            "nodes": status.nodes,
            "jobs": status.jobs,
            "backlog": _backlog(status.services),
            "models": self._models(status.models),
            "failures": list(self.failures),
            "clients": self.hub.clients,
        }

    def _models(self, rows: list[ModelRow]) -> list[dict[str, Any]]:
        """Each game's champion row (from the status view) with its Elo curve."""
        by_game = {r.game: r for r in rows}
        return [
            {
                **msgspec.structs.asdict(by_game.get(game) or ModelRow(game=game)),
                "game": game,
                "curve": self.elo.curve(game),
                "trimmed": game in self.elo.trimmed,
            }
            for game in sorted({*by_game, *self.elo.games()})
        ]

    def health(self) -> dict[str, Any]:
        """Clients, frames dropped, events tailed or skipped: for the health details."""
        return {
            **self.hub.health(),
            "ticks": self.ticks,
            "tail": len(self.tail),
            "failures": len(self.failures),
            "events": dict(self.events),
            "elo_reads": dict(self.elo.reads),
        }


def _backlog(services: list[InstanceView]) -> str:
    """The selfplay scheduler's word on its backlog (its health message), or ""."""
    for view in services:
        if view.service == "selfplay_scheduler" and view.message.startswith("backlog"):
            return view.message[:200]
    return ""
