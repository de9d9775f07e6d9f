"""Clusters and servers a test starts die with pytest, even when it is killed with -9."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import psutil
import pytest

from shared.embedded import free_port
from shared.testing.bounds import WAIT
from shared.testing.helpers import eventually
from shared.testing.procs import REPO, Lines

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only"
    ),
]

#: Stands in for a pytest process: starts ``ringmaster nats-server`` the way the
#: fixtures start clusters, prints its pid, then waits to be killed.
RUNNER = """
import sys
import anyio
from shared.testing.procs import Lines, spawn

async def main() -> None:
    argv = ("nats-server", "--port", sys.argv[1], "--store-dir", sys.argv[2])
    async with spawn(*argv) as server:
        await Lines(server.stdout).until("listening on")
        print(server.pid, flush=True)
        await anyio.sleep(600)

anyio.run(main)
"""


def gone(pid: int) -> bool:
    """Exited (a zombie not yet reaped counts) or never there."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def serving(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


async def test_a_server_started_by_a_killed_test_run_goes_away(tmp_path: Path) -> None:
    port = free_port()
    argv = [sys.executable, "-c", RUNNER, str(port), str(tmp_path / "js")]
    server = 0
    async with await anyio.open_process(argv, cwd=REPO, stderr=subprocess.DEVNULL) as runner:
        try:
            server = int((await Lines(runner.stdout).until(r"^\d+$", timeout=WAIT)).group(0))
            assert not gone(server) and serving(port)

            runner.kill()  # SIGKILL: the runner cleans nothing up
            await runner.wait()

            await eventually(lambda: gone(server), timeout=WAIT, what="the CLI to die")
            await eventually(lambda: not serving(port), timeout=WAIT, what="nats-server to die")
        finally:
            if server and not gone(server):  # only when the test failed: leak nothing
                os.kill(server, signal.SIGKILL)
