"""Running ``ringmaster`` and services as real processes in tests, and reading their output."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import ByteReceiveStream, Process

from shared.procutil import die_with_parent_argv
from shared.testing.bounds import WAIT

__all__ = ["CLI", "REPO", "WAIT", "Lines", "open_child", "spawn"]

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "shared.cli"]


class Lines:
    """Reads a process's output stream line by line, keeping everything it read."""

    def __init__(self, stream: ByteReceiveStream | None) -> None:
        assert stream is not None
        self.stream = stream
        self.buffer = b""
        self.seen: list[str] = []

    async def until(self, pattern: str, timeout: float = WAIT) -> re.Match[str]:
        """Read lines until one matches ``pattern``; fail on EOF or after ``timeout``."""
        regex = re.compile(pattern)
        with anyio.fail_after(timeout):
            while True:
                while b"\n" in self.buffer:
                    raw, self.buffer = self.buffer.split(b"\n", 1)
                    line = raw.decode()
                    self.seen.append(line)
                    match = regex.search(line)
                    if match:
                        return match
                try:
                    self.buffer += await self.stream.receive()
                except anyio.EndOfStream:
                    raise AssertionError(f"EOF before {pattern!r}; read: {self.seen}") from None

    async def rest(self, timeout: float = WAIT) -> list[str]:
        """Every remaining line up to EOF."""
        with anyio.fail_after(timeout):
            while True:
                try:
                    self.buffer += await self.stream.receive()
                except anyio.EndOfStream:
                    break
        lines = [line.decode() for line in self.buffer.splitlines()]
        self.buffer = b""
        self.seen += lines
        return lines


async def open_child(argv: Sequence[str], **options: Any) -> Process:
    """``anyio.open_process`` of a child that dies with the test run, even by ``kill -9``.

    A cluster or server a test starts must not outlive pytest (Linux: the kernel's
    parent-death signal, see :func:`shared.procutil.die_with_parent_argv`).
    """
    return await anyio.open_process(die_with_parent_argv(argv), **options)


@asynccontextmanager
async def spawn(
    *argv: str, env: dict[str, str] | None = None, cwd: Path = REPO
) -> AsyncIterator[Process]:
    """A CLI subprocess, killed at the end if the test left it running (or pytest died)."""
    async with await open_child([*CLI, *argv], env=env, cwd=cwd, start_new_session=True) as proc:
        try:
            yield proc
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):  # the group already ended
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
