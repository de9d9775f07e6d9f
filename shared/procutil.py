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
from collections.abc import Callable

__all__ = ["set_parent_death_signal"]

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
