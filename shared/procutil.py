"""Helpers for the child processes Ringmaster starts (nats-server, services, jobs).

The one rule they serve: a child must not outlive the process that started it.
A supervisor killed with SIGKILL gets no chance to clean up, so on Linux the
kernel is asked to do it instead (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

__all__ = ["die_with_parent_argv", "set_parent_death_signal"]

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    """Resolve libc's ``prctl`` once, in the parent.

    Done at import rather than in the forked child because loading a shared
    library after ``fork()`` in a threaded program can deadlock on the loader lock.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        # CDLL(None) is the running program's own symbol table, which holds libc's
        # prctl under glibc and musl alike, without guessing a library file name.
        libc = ctypes.CDLL(None, use_errno=True)
        prctl: Callable[..., int] = libc.prctl
    except (OSError, AttributeError):
        # No prctl to be found: set_parent_death_signal says so when called.
        return None
    return prctl


_prctl = _load_prctl()


def set_parent_death_signal() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux only).

    Meant as ``subprocess.Popen(preexec_fn=set_parent_death_signal)``: it runs in
    the child between ``fork`` and ``exec`` and survives the ``exec``. On other
    platforms it does nothing.

    Caveat: Linux delivers the signal when the parent *thread* that forked the
    child exits, not only the parent process, so spawn long-lived children from a
    long-lived thread (the main thread), never from a short-lived worker thread.

    Raises:
        OSError: on Linux, if ``prctl`` is unavailable or refuses the request;
            a child that would silently outlive its parent is worse than one
            that does not start.
    """
    if not sys.platform.startswith("linux"):
        return
    if _prctl is None:
        raise OSError("prctl is not available in this process's libc")
    if _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(err)}")


def die_with_parent_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` wrapped so that the process it starts is killed when this one dies.

    For launchers that take no ``preexec_fn`` (``anyio.open_process``): the command
    becomes ``python -m shared.procutil <this pid> -- argv...``, which asks for the
    parent-death signal and then execs ``argv`` in the same process (same pid; the
    request survives ``exec``). The same thread rule as for
    :func:`set_parent_death_signal` applies: spawn from a long-lived thread.

    Off Linux, or without ``prctl``, ``argv`` is returned unchanged: the caller's own
    cleanup is then the only one.
    """
    if not sys.platform.startswith("linux") or _prctl is None:
        return list(argv)
    return [sys.executable, "-m", "shared.procutil", str(os.getpid()), "--", *argv]


def _exec_dying_with(parent: int, argv: Sequence[str]) -> NoReturn:
    """Ask for the parent-death signal, then become ``argv``."""
    set_parent_death_signal()
    # The parent may have died before the request: then no signal would ever come.
    if os.getppid() != parent:
        os._exit(1)
    os.execvp(argv[0], list(argv))


if __name__ == "__main__":
    if len(sys.argv) < 4 or not sys.argv[1].isdigit() or sys.argv[2] != "--":
        sys.exit("usage: python -m shared.procutil PARENT_PID -- COMMAND [ARG...]")
    _exec_dying_with(int(sys.argv[1]), sys.argv[3:])
