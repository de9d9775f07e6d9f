"""Killing job processes that outlived an agent killed without warning.

A job's leader dies with the agent (the kernel's parent-death signal), but what the
leader started does not: its children are orphaned into the same process group. So
each running job is registered under ``<work_dir>/.pgids/<job_id>-<attempt>`` (its
group id and job id), and an agent starting on that work directory kills whatever is
left of the groups registered there, then removes their working directories.

A group is killed only if one of its live members carries the job's
``RINGMASTER_JOB_ID`` in its environment: a process group id alone could, in theory,
name someone else's processes after every job process is gone.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
from contextlib import suppress
from pathlib import Path

import psutil

log = logging.getLogger("ringmaster.node_agent.sweep")

REGISTRY = ".pgids"


def register(work_dir: Path, key: str, pgid: int, job_id: str) -> None:
    """Record that job ``key`` runs as process group ``pgid``."""
    registry = work_dir / REGISTRY
    registry.mkdir(parents=True, exist_ok=True)
    (registry / key).write_text(f"{pgid} {job_id}\n")


def unregister(work_dir: Path, key: str) -> None:
    """Forget job ``key`` (it ended and its group was killed)."""
    with suppress(FileNotFoundError):
        (work_dir / REGISTRY / key).unlink()


def _members(pgid: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue  # gone while we looked
    return found


def _runs_job(proc: psutil.Process, job_id: str) -> bool:
    try:
        return proc.environ().get("RINGMASTER_JOB_ID") == job_id
    except psutil.Error:
        return False  # someone else's process, or gone: not ours to judge


def sweep_orphans(work_dir: Path) -> list[int]:
    """Kill the leftovers of every registered job group; returns the groups killed."""
    registry = work_dir / REGISTRY
    if not registry.is_dir():
        return []
    killed = []
    for entry in sorted(registry.iterdir()):
        try:
            pgid_text, job_id = entry.read_text().split()
            pgid = int(pgid_text)
        except (OSError, ValueError):
            log.warning("ignoring unreadable job registration %s", entry)
            entry.unlink(missing_ok=True)
            continue
        if any(_runs_job(p, job_id) for p in _members(pgid)):
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            killed.append(pgid)
            log.warning("killed process group %d left over from job %s", pgid, entry.name)
        shutil.rmtree(work_dir / entry.name, ignore_errors=True)
        entry.unlink(missing_ok=True)
    return killed
