"""The orchestrator process that ``ringmaster up`` starts, keeps alive and stops.

It runs ``python -m services.orchestrator`` in its own session (so a Ctrl-C meant
for ``up`` reaches it only as the SIGTERM ``up`` sends, in order), with the kernel
asked to kill it if ``up`` dies, and its output appended to its log file. If it
dies, it is restarted: at once the first time, then with a doubling delay capped at
MAX_DELAY_S, the count of quick deaths reset after a STABLE_S run. An exit with
code 2 (its configuration is wrong) is not retried: it would fail the same way.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import anyio

from shared.procutil import set_parent_death_signal

MAX_DELAY_S = 30.0
STABLE_S = 60.0
POLL_S = 0.2
EXIT_BAD_CONFIG = 2

Note = Callable[[str], None]


_ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception)\b|\berror:|\b(ERROR|CRITICAL)\b")


def last_log_line(path: Path, limit: int = 200) -> str:
    """What a dead process said last: its last error line, else its last line.

    Traceback frames of exception groups are drawn with ``|`` and ``+---``; they are
    stripped so the line found is the exception itself, not the frame around it.
    """
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 8192))
            text = f.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"(log unreadable: {exc})"
    lines = [line.strip().lstrip("|+- ").strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return "(log empty)"
    found = next((line for line in reversed(lines) if _ERROR_LINE.search(line)), lines[-1])
    return found[:limit]


def describe(code: int) -> str:
    """``code 1`` or ``signal SIGKILL`` for a Popen return code."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
    return f"code {code}"


class Orchestrator:
    """One supervised orchestrator process."""

    def __init__(self, env: dict[str, str], log_file: Path, *, cwd: Path) -> None:
        self.env = env
        self.log_file = log_file
        self.cwd = cwd
        self.command = [sys.executable, "-m", "services.orchestrator"]
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.restarts = 0
        self.quick_deaths = 0
        self.fatal = ""

    @property
    def pid(self) -> int | None:
        """The running process's id."""
        return self.proc.pid if self.proc is not None else None

    def start(self) -> None:
        """Start the process (from the main thread: the death signal follows its parent)."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=set_parent_death_signal,
            )
        self.started_at = time.monotonic()

    def next_delay(self) -> float:
        """Seconds before the next restart: 0, then 1, 2, 4, ... up to MAX_DELAY_S."""
        if time.monotonic() - self.started_at >= STABLE_S:
            self.quick_deaths = 0
        self.quick_deaths += 1
        if self.quick_deaths == 1:
            return 0.0
        return float(min(MAX_DELAY_S, 2 ** (self.quick_deaths - 2)))

    async def keep_alive(self, note: Note, stop: anyio.Event) -> None:
        """Restart the process whenever it dies, until cancelled; a config error ends ``up``."""
        while True:
            await anyio.sleep(POLL_S)
            code = self.proc.poll() if self.proc is not None else None
            if code is None:
                continue
            said = last_log_line(self.log_file)
            if code == EXIT_BAD_CONFIG:
                self.fatal = (
                    f"the orchestrator refused its configuration (exit 2): {said} "
                    f"(log: {self.log_file})"
                )
                stop.set()
                return
            delay = self.next_delay()
            note(
                f"orchestrator (pid {self.pid}) exited with {describe(code)}: {said}; "
                f"restarting it in {delay:g}s"
            )
            await anyio.sleep(delay)
            try:
                self.start()
            except OSError as exc:  # no process to supervise any more: end `up`, said once
                self.fatal = f"cannot restart the orchestrator: {exc}"
                stop.set()
                return
            self.restarts += 1
            note(f"orchestrator restarted (pid {self.pid}, restart {self.restarts})")

    async def stop(self, timeout: float, force: anyio.Event, note: Note) -> None:
        """SIGTERM, wait up to ``timeout`` (or until ``force``), then SIGKILL its group."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with anyio.move_on_after(timeout):
            # Polled: a child process has no awaitable exit in a plain Popen, and the
            # poll also notices a second Ctrl-C (force).
            while True:
                if proc.poll() is not None or force.is_set():
                    break
                await anyio.sleep(POLL_S)
        if proc.poll() is None:
            note(f"orchestrator did not stop in time; killing process group {proc.pid}")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        # After SIGKILL the wait is bounded by the kernel.
        code = proc.wait()
        note(f"orchestrator stopped ({describe(code)})")
