"""The node agent's pure judgements: floors, slots, timeouts, progress, commands.

No I/O here: every function takes what it needs and returns a decision, so each rule
can be tested alone.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

_DIR_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

#: Placeholders an argv template may use, filled in for each job.
PLACEHOLDERS = ("python", "job_id", "attempt", "inputs_dir", "outputs_dir", "work_dir")


class CommandError(ValueError):
    """A job's command cannot be built (unknown type or bad arguments)."""


@dataclass(frozen=True)
class Floors:
    """Whether the node may take work, and why not."""

    accepting: bool
    reason: str = ""


def judge_floors(
    *,
    disk_free_mb: int,
    memory_available_mb: int,
    min_free_disk_mb: int,
    min_memory_mb: int,
) -> Floors:
    """Refuse work below the disk or memory floor (every breach is named)."""
    reasons = []
    if disk_free_mb < min_free_disk_mb:
        reasons.append(f"free disk {disk_free_mb} MB below the floor of {min_free_disk_mb} MB")
    if memory_available_mb < min_memory_mb:
        reasons.append(
            f"available memory {memory_available_mb} MB below the floor of {min_memory_mb} MB"
        )
    return Floors(accepting=not reasons, reason="; ".join(reasons))


def free_slots(capacity: int, running: int, floors: Floors, *, intake_open: bool = True) -> int:
    """Slots free for new work: none below a floor or with intake closed."""
    if not floors.accepting or not intake_open:
        return 0
    return max(0, capacity - running)


def job_timeout(spec_timeout_s: float, job_type: str, type_caps: Mapping[str, float]) -> float:
    """The job's own timeout, cut to its type's cap when the config sets one."""
    cap = type_caps.get(job_type)
    return spec_timeout_s if cap is None else min(spec_timeout_s, cap)


def parse_progress_line(line: bytes | str) -> float | None:
    """The progress in ``{"progress": x}`` with x a finite number in [0, 1]; else None."""
    try:
        value: Any = json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    progress = value.get("progress")
    # bool is an int to Python, but ``true`` is no progress.
    if isinstance(progress, bool) or not isinstance(progress, int | float):
        return None
    if not math.isfinite(progress) or not 0.0 <= progress <= 1.0:
        return None
    return float(progress)


@dataclass(frozen=True)
class ProgressAction:
    """What the lease keeper does on one tick."""

    report: bool = False
    event: bool = False


def progress_action(
    *,
    now: float,
    last_report_at: float,
    reported: float,
    progress: float,
    min_interval_s: float,
    heartbeat_s: float,
) -> ProgressAction:
    """Report new progress at most every ``min_interval_s`` (with a JOB_PROGRESS event);
    with no news, still report every ``heartbeat_s`` so the job's lease stays renewed."""
    since = now - last_report_at
    if progress != reported and since >= min_interval_s:
        return ProgressAction(report=True, event=True)
    if since >= heartbeat_s:
        return ProgressAction(report=True)
    return ProgressAction()


def heartbeat_interval(lease_remaining_s: float | None, ack_wait_s: float) -> float:
    """A third of the lease the job manager granted (or of the ack wait when unknown)."""
    base = ack_wait_s if lease_remaining_s is None else min(lease_remaining_s, ack_wait_s)
    return max(0.2, base / 3)


def ack_due(now: float, last_ack_at: float, ack_wait_s: float) -> bool:
    """An in-progress ack is due every third of the ack wait."""
    return now - last_ack_at >= ack_wait_s / 3


def build_argv(
    job_type: str,
    args: Mapping[str, Any],
    commands: Mapping[str, Sequence[str]],
    values: Mapping[str, str],
    *,
    shell: bool = False,
) -> list[str]:
    """The job's argv: ``shell`` runs ``args["argv"]``; other types fill their template.

    ``shell`` jobs run only where ``shell`` is true (the node serves that capability).
    Only the known ``{placeholder}`` tokens are replaced, so other braces in a template
    are left as they are.
    """
    if job_type == "shell":
        if not shell:
            raise CommandError("shell jobs are not enabled on this node")
        argv = args.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise CommandError('shell job needs args["argv"], a non-empty list of strings')
        return list(argv)
    template = commands.get(job_type)
    if template is None:
        raise CommandError(f"no command for job type {job_type}")
    result = []
    for part in template:
        for name in PLACEHOLDERS:
            if name in values:
                part = part.replace("{" + name + "}", values[name])
        result.append(part)
    return result


#: What a job gets of the agent's environment: what programs need to start and find
#: their tools and locale. Never the agent's credentials path, tokens or passwords.
JOB_ENV = (
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ",
    "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "SYSTEMROOT",
)  # fmt: skip


def base_env(environ: Mapping[str, str], extra: Iterable[str] = ()) -> dict[str, str]:
    """The allow-listed part of ``environ`` (``JOB_ENV`` and ``extra`` names)."""
    return {name: environ[name] for name in (*JOB_ENV, *extra) if name in environ}


def job_env(
    *, job_id: str, attempt: int, args: Mapping[str, Any], inputs_dir: str, outputs_dir: str
) -> dict[str, str]:
    """The variables a job gets on top of :func:`base_env`."""
    return {
        "RINGMASTER_JOB_ID": job_id,
        "RINGMASTER_JOB_ATTEMPT": str(attempt),
        "RINGMASTER_JOB_ARGS": json.dumps(dict(args), separators=(",", ":")),
        "RINGMASTER_INPUTS_DIR": inputs_dir,
        "RINGMASTER_OUTPUTS_DIR": outputs_dir,
        # Progress lines are read as they come; a buffered child would send them late.
        "PYTHONUNBUFFERED": "1",
    }


def safe_relative_name(name: str) -> bool:
    """True for a relative path that stays inside its directory (an input's name)."""
    if not name or "\\" in name or "\x00" in name:
        return False
    path = PurePosixPath(name)
    # "." has no parts at all: it names the directory itself, not a file in it.
    return not path.is_absolute() and ".." not in path.parts and bool(path.parts)


def safe_dir_name(name: str) -> bool:
    """True when ``name`` (a job's ``<job_id>-<attempt>``) can be one directory's name."""
    return bool(_DIR_NAME.match(name)) and len(name) <= 200


def failure_message(exit_code: int, stderr_tail: Iterable[str], limit: int = 2000) -> str:
    """``exit code N`` and the last lines of stderr, bounded in length."""
    text = "\n".join(line.rstrip() for line in stderr_tail).strip()
    if len(text) > limit:
        text = "..." + text[-limit:]
    return f"exit code {exit_code}" + (f": {text}" if text else "")


def kv_put_due(*, now: float, last_put_at: float | None, changed: bool, refresh_s: float) -> bool:
    """Put NodeInfo in the nodes bucket when it changed, or every ``refresh_s`` anyway."""
    return last_put_at is None or changed or now - last_put_at >= refresh_s
