"""What every benchmark shares: result rows, its own nats-server, child processes.

Each benchmark gets a fresh :class:`Ctx`: a temporary directory, a nats-server of
its own on a free port (so benchmarks never disturb each other), and a list of the
processes it started. Closing the context stops every one of them, servers
included, whether the benchmark finished or failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio

from shared.embedded import EmbeddedServer, PortInUseError, free_port
from shared.procutil import set_parent_death_signal

#: The repository root: children run from here so ``-m services.x`` resolves.
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Row:
    """One goal of the issue: the figure, its raw limit measured in the same run, the goal."""

    key: str
    title: str
    figure: float
    unit: str
    raw: float | None
    raw_label: str
    goal: float
    higher_is_better: bool
    notes: list[str] = field(default_factory=list)
    #: Whether reaching the goal exactly meets it (``≤`` rather than ``<``).
    inclusive: bool = False

    @property
    def ratio(self) -> float | None:
        """Figure divided by the raw limit (None when there is no raw figure)."""
        if self.raw is None or self.raw == 0:
            return None
        return self.figure / self.raw

    @property
    def met(self) -> bool:
        """Whether the figure meets the goal."""
        if self.higher_is_better:
            return self.figure >= self.goal
        return self.figure <= self.goal if self.inclusive else self.figure < self.goal

    @property
    def goal_text(self) -> str:
        """The goal as the issue states it."""
        op = "≥" if self.higher_is_better else ("≤" if self.inclusive else "<")
        return f"{op} {fmt(self.goal, self.unit)}"


@dataclass
class Context:
    """A figure measured for context beside a goal (not a goal itself)."""

    key: str
    label: str
    value: float
    unit: str


def fmt(value: float, unit: str) -> str:
    """A number with its unit, rounded the way a reader wants it."""
    if unit == "/s":
        return f"{value:,.0f}/s"
    if unit == "s":
        return f"{value * 1000:,.0f} ms" if value < 1 else f"{value:.2f} s"
    if unit == "MB":
        return f"{value:.1f} MB"
    if unit == "":
        return f"{value:,.0f}"
    if unit == "MB/s":
        return f"{value:,.0f} MB/s"
    return f"{value:.3g} {unit}"


class Proc:
    """A child process in its own session, its output in a log file."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.name = name
        self.popen = popen
        self.log = log

    @property
    def pid(self) -> int:
        """The process id."""
        return self.popen.pid

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.popen.poll() is None

    def tail(self, lines: int = 15) -> str:
        """The last lines of the log, for error messages."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM the process group, SIGKILL after ``timeout``; returns the exit code."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        # Sweep what it started (its group), even if it exited by itself.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        return self.popen.returncode

    def kill(self) -> None:
        """SIGKILL the whole group and reap the process."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()


class Ctx:
    """One benchmark's scratch space, nats-server and processes; close() stops them all."""

    def __init__(self, name: str, *, log: Callable[[str], None] = print) -> None:
        self.name = name
        self.dir = Path(tempfile.mkdtemp(prefix=f"ringmaster-bench-{name}-"))
        self.procs: list[Proc] = []
        self.servers: list[EmbeddedServer] = []
        self.contexts: list[Context] = []
        #: Markdown sections (title, lines) a benchmark adds to RESULTS.md.
        self.sections: list[tuple[str, list[str]]] = []
        self.log = log

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop every process, then every server, then remove the scratch directory."""
        for proc in reversed(self.procs):
            proc.stop()
        for server in reversed(self.servers):
            server.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def server(self) -> EmbeddedServer:
        """Start a nats-server with JetStream on a free port and a fresh store directory."""
        for attempt in range(5):
            port = free_port()
            server = EmbeddedServer(
                port=port,
                store_dir=self.dir / f"nats-{port}",
                server_name=f"bench-{self.name}",
                log_file=self.dir / f"nats-{port}.log",
            )
            try:
                server.start()
            except PortInUseError:
                if attempt == 4:
                    raise
                continue  # another process took the port between the probe and the start
            self.servers.append(server)
            return server
        raise AssertionError("unreachable")

    def spawn(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> Proc:
        """Start ``argv`` from the repository root, in its own session, killed with us."""
        log = self.dir / f"{name}.log"
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        with log.open("ab") as out:
            popen = subprocess.Popen(
                list(argv),
                cwd=ROOT,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=set_parent_death_signal,
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def python(self, name: str, args: Sequence[str], env: Mapping[str, str] | None = None) -> Proc:
        """Start ``python ARGS`` with this interpreter."""
        return self.spawn(name, [sys.executable, *args], env)

    def context(self, key: str, label: str, value: float, unit: str) -> Context:
        """Record (and print) a figure measured for context."""
        item = Context(key, label, value, unit)
        self.contexts.append(item)
        self.log(f"    context: {label}: {fmt(value, unit)}")
        return item

    def section(self, title: str, lines: list[str]) -> None:
        """Add a section of its own to RESULTS.md (and print it)."""
        self.sections.append((title, lines))
        for line in lines:
            self.log(f"    {line}")

    def path(self, name: str) -> Path:
        """A file name in the scratch directory."""
        return self.dir / name


def wait_json(path: Path, timeout: float, proc: Proc | None = None) -> Any:
    """Wait for a helper script to write ``path`` (atomically) and return its JSON."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc is not None and not proc.alive() and not path.exists():
            raise RuntimeError(f"{proc.name} exited {proc.popen.returncode}:\n{proc.tail()}")
        if time.monotonic() > deadline:
            detail = f":\n{proc.tail()}" if proc is not None else ""
            raise TimeoutError(f"{path.name} not written within {timeout:g}s{detail}")
        time.sleep(0.02)
    return json.loads(path.read_text())


async def await_json(path: Path, timeout: float, proc: Proc | None = None) -> Any:
    """As :func:`wait_json`, without blocking the event loop."""
    deadline = time.monotonic() + timeout
    target = anyio.Path(path)
    while not await target.exists():
        if proc is not None and not proc.alive() and not await target.exists():
            raise RuntimeError(f"{proc.name} exited {proc.popen.returncode}:\n{proc.tail()}")
        if time.monotonic() > deadline:
            detail = f":\n{proc.tail()}" if proc is not None else ""
            raise TimeoutError(f"{path.name} not written within {timeout:g}s{detail}")
        await anyio.sleep(0.02)
    return json.loads(await target.read_text())


def write_json(path: Path, data: Any) -> None:
    """Write JSON so that a reader polling for the file never sees it half written."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation between closest ranks."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@contextlib.contextmanager
def timed(label: str, log: Callable[[str], None] = print) -> Iterator[None]:
    """Print how long a block took."""
    start = time.monotonic()
    try:
        yield
    finally:
        log(f"  ({label}: {time.monotonic() - start:.1f}s)")
