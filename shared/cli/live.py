"""What ``ringmaster up`` shows while the cluster runs.

On a terminal, a rich Live view refreshed about twice a second from
``P.api.orchestrator.status``: a header (URLs, orchestrator process) above the
tables of :mod:`shared.cli.tables`. Elsewhere (a pipe, a log file, ``--no-live``),
one timestamped line per change, so the output stays readable as a log.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

import anyio
from nats.aio.client import Client
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from shared.cli.client import CliError, request
from shared.cli.tables import changes, render, snapshot
from shared.contracts import ClusterStatus, Empty
from shared.subjects import Subjects

REFRESH_S = 0.5


class StatusView:
    """The Live view or the plain lines; use as a context manager around the run."""

    def __init__(self, console: Console, *, live: bool, header: Callable[[], str]) -> None:
        self.console = console
        self.header = header
        self._live = (
            Live(console=console, refresh_per_second=2, auto_refresh=True) if live else None
        )
        self._status: ClusterStatus | None = None
        self._error = "waiting for the orchestrator"
        self._last: dict[str, str] = {}
        self._answering: bool | None = None

    def __enter__(self) -> Self:
        if self._live is not None:
            self._live.update(self._renderable())
            self._live.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.update(self._renderable(), refresh=True)
            self._live.stop()

    def note(self, line: str) -> None:
        """An event worth its own line (a restart, a stop), above the live view."""
        self.console.print(f"{time.strftime('%H:%M:%S')} {line}", highlight=False, soft_wrap=True)

    def update(self, status: ClusterStatus | None, error: str = "") -> None:
        """The latest status, or why there is none."""
        self._status, self._error = status, error
        if self._live is not None:
            self._live.update(self._renderable())
            return
        answering = status is not None
        if answering != self._answering:
            self._answering = answering
            self.note("orchestrator answers" if answering else f"orchestrator: {error}")
        if status is not None:
            now = snapshot(status)
            for line in changes(self._last, now):
                self.note(line)
            self._last = now

    def _renderable(self) -> RenderableType:
        parts: list[RenderableType] = [Text(self.header(), style="bold")]
        if self._status is not None:
            parts.append(render(self._status))
        if self._error:
            parts.append(Text(self._error, style="yellow"))
        parts.append(Text("Ctrl-C stops the cluster", style="dim"))
        return Group(*parts)


async def follow_status(nc: Client, subjects: Subjects, view: StatusView) -> None:
    """Ask the orchestrator for its status every REFRESH_S and show the answer."""
    subject = subjects.api("orchestrator", "status")
    while True:
        try:
            status = await request(nc, subject, Empty(), ClusterStatus, timeout=1.0)
        except CliError as exc:
            view.update(None, f"no status yet: {exc.message}")
        else:
            view.update(status)
        await anyio.sleep(REFRESH_S)
