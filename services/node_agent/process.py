"""One job's process: started in its own process group, watched, and killed as a group.

The job's process leads a new session (``start_new_session``), so whatever it starts
shares its group and is killed with it. It is started from the event loop's thread
with ``set_parent_death_signal``, so the kernel kills it if the agent dies, even by
SIGKILL. When the leader exits, the rest of its group is killed too: no job process
outlives its job, and none outlives the agent.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from functools import partial
from pathlib import Path

import anyio

from shared.procutil import set_parent_death_signal

#: Longest stdout/stderr line read as one line; a longer one counts as garbage.
LINE_LIMIT = 1 << 20
#: How often the leader's exit is checked (asyncio's wait() also waits for the pipes,
#: which a grandchild may hold open).
POLL_S = 0.05
#: Seconds the pipes get to close after the group was killed.
PIPE_GRACE_S = 2.0
#: Stands for a line over LINE_LIMIT, which is never a valid progress line.
OVERLONG = b"<overlong line>"


def _die_with_parent(parent: int) -> None:
    """Run in the forked child before exec: ask for SIGKILL when the parent dies."""
    set_parent_death_signal()
    # The parent may have died between fork and prctl: then no signal ever comes.
    if os.getppid() != parent:
        os._exit(1)


def kill_group(pgid: int) -> None:
    """SIGKILL a whole process group; an empty group is not an error."""
    # ProcessLookupError: every member is gone. PermissionError: the id now names
    # someone else's group, so ours is gone too.
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


async def spawn(argv: list[str], *, cwd: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    """Start ``argv`` as a new process group leader that dies with the agent.

    Raises OSError or SubprocessError when it cannot be started.
    """
    # Shielded: a started process must always reach the caller, which kills it later.
    # On the loop thread: the death signal fires when the *forking thread* exits.
    with anyio.CancelScope(shield=True):
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=str(cwd),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=partial(_die_with_parent, os.getpid()),
            limit=LINE_LIMIT,
        )
    return proc


async def _pump(
    stream: asyncio.StreamReader | None, on_line: Callable[[bytes], None], done: anyio.Event
) -> None:
    try:
        while stream is not None:
            try:
                line = await stream.readline()
            except ValueError:
                # Over LINE_LIMIT: asyncio dropped it; count it and read on.
                on_line(OVERLONG)
                continue
            if not line:
                return
            on_line(line)
    finally:
        done.set()


def stderr_collector(tail: deque[str], width: int = 500) -> Callable[[bytes], None]:
    """A line callback keeping the last lines of stderr (each cut to ``width``)."""

    def collect(line: bytes) -> None:
        tail.append(line.decode(errors="replace").rstrip()[:width])

    return collect


async def supervise(
    proc: asyncio.subprocess.Process,
    *,
    timeout_s: float,
    on_stdout: Callable[[bytes], None],
    on_stderr: Callable[[bytes], None],
) -> bool:
    """Read the job's output until it exits or ``timeout_s`` passes; True on timeout.

    Either way the whole group is killed before this returns (also when cancelled).
    """
    timed_out = False
    try:
        async with anyio.create_task_group() as tg:
            done = (anyio.Event(), anyio.Event())
            tg.start_soon(_pump, proc.stdout, on_stdout, done[0])
            tg.start_soon(_pump, proc.stderr, on_stderr, done[1])
            with anyio.move_on_after(timeout_s) as scope:
                # Polled: Process.wait() would also wait for pipes a grandchild holds.
                while proc.returncode is None:  # noqa: ASYNC110
                    await anyio.sleep(POLL_S)
            timed_out = scope.cancelled_caught
            kill_group(proc.pid)
            with anyio.move_on_after(PIPE_GRACE_S):
                for event in done:
                    await event.wait()
            tg.cancel_scope.cancel()
        with anyio.move_on_after(PIPE_GRACE_S):
            await proc.wait()
    finally:
        kill_group(proc.pid)
    return timed_out
