"""Named crash points at the windows where a crash can lose work, off unless armed.

A failpoint is a call ``failpoint("job_manager.report.after_write")`` placed where a
crash is most harmful: after a durable write and before what must follow it (an
event's acknowledgment, a message's ack, a second write). Random kills almost never
land in such a window; the chaos suite aims at them by arming the points by name:

    RINGMASTER_FAILPOINTS="job_manager.report.after_write=crash"
    RINGMASTER_FAILPOINTS="job_manager.report.after_write=crash(0.3),node_agent.ack.before=hang"
    RINGMASTER_FAILPOINTS="*=crash(once)"

Actions: ``crash`` (SIGKILL to the process itself: nothing runs after it, as with
kill -9), ``hang`` (SIGSTOP to itself: the process stays but does nothing, as a hung
one), each with a probability ``(0.3)`` or ``(once)``. ``once`` needs
``RINGMASTER_FAILPOINTS_DIR``: a point fires once per directory, over every process and
restart (the marker file says it fired), so a cluster armed with ``*=crash(once)``
crashes at each point in turn instead of crash-looping at the first. With the
directory set every firing leaves a marker ``<name>.<pid>``, the chaos harness's own
evidence of what fired. ``*`` arms every point in :data:`POINTS`.

The environment is parsed once per process; when nothing is armed a call is one dict
lookup on an empty dict.
"""

from __future__ import annotations

import logging
import os
import random
import re
import signal
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger("ringmaster.failpoints")

ENV = "RINGMASTER_FAILPOINTS"
DIR_ENV = "RINGMASTER_FAILPOINTS_DIR"

#: Every point in the code, with the window it opens. The doc (docs/reliability.md)
#: lists the same names; a test keeps the two and the code's calls in step.
POINTS: dict[str, str] = {
    "job_manager.dispatch.after_write": "DISPATCHED written, JobDispatch not yet in P_JOBS",
    "job_manager.report.after_write": "a report's change written, its event not yet emitted",
    "job_manager.cancel.after_write": "CANCELLED written, JOB_CANCELLED not yet emitted",
    "job_manager.reaper.after_write": "an attempt failed by the reaper, JOB_FAILED not emitted",
    "job_manager.announce.after_ack": "a terminal event acknowledged, the record's flag not set",
    "node_agent.ack.before": "the job reported done, its P_JOBS message not yet acked",
    "training_coordinator.promote.after_cas": "the champion switched, MODEL_PROMOTED not emitted",
    "sync_planner.manifest.after_write": "a manifest written, DATA_AVAILABLE not yet emitted",
}

_SPEC = re.compile(r"^(crash|hang)(?:\((once|[0-9]*\.?[0-9]+)\))?$")


class Arm(NamedTuple):
    """What an armed point does: ``action`` with ``probability``, or ``once``."""

    action: str
    probability: float = 1.0
    once: bool = False


class FailpointError(ValueError):
    """``RINGMASTER_FAILPOINTS`` names an unknown point or action."""


def parse(text: str) -> dict[str, Arm]:
    """The armed points of a ``RINGMASTER_FAILPOINTS`` value."""
    armed: dict[str, Arm] = {}
    for item in re.split(r"[,;\s]+", text.strip()):
        if not item:
            continue
        name, _, spec = item.partition("=")
        match = _SPEC.match(spec or "crash")
        if match is None:
            raise FailpointError(f"{ENV}: {item!r}: action is crash or hang, e.g. crash(0.3)")
        action, arg = match.groups()
        arm = Arm(action, 1.0 if arg in (None, "once") else float(arg), arg == "once")
        names = list(POINTS) if name == "*" else [name]
        for one in names:
            if one not in POINTS:
                raise FailpointError(f"{ENV}: unknown failpoint {one!r}; see POINTS")
            armed[one] = arm
    return armed


_ARMED: dict[str, Arm] = {}
_DIR: Path | None = None


def configure(text: str | None = None, directory: str | None = None) -> None:
    """(Re)read the armed points, from the environment unless given (tests use this)."""
    global _ARMED, _DIR
    _ARMED = parse(os.environ.get(ENV, "") if text is None else text)
    where = os.environ.get(DIR_ENV, "") if directory is None else directory
    _DIR = Path(where) if where else None
    if _ARMED:
        log.warning("failpoints armed: %s", ", ".join(sorted(_ARMED)))


def armed() -> dict[str, Arm]:
    """The points armed in this process."""
    return dict(_ARMED)


def failpoint(name: str) -> None:
    """Crash or hang here if ``name`` is armed (and its draw says so); else nothing."""
    arm = _ARMED.get(name)
    if arm is None:
        return
    if arm.once:
        if _DIR is None or any(_DIR.glob(f"{name}.*")):
            return
    elif arm.probability < 1.0 and random.random() >= arm.probability:
        return
    if _DIR is not None:
        # Written before acting: the marker is the harness's record that it fired.
        (_DIR / f"{name}.{os.getpid()}").touch()
    log.error("failpoint %s: %s", name, arm.action)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.kill(os.getpid(), signal.SIGKILL if arm.action == "crash" else signal.SIGSTOP)


def fired(directory: Path) -> dict[str, int]:
    """How many times each point fired, from the markers in ``directory``."""
    counts: dict[str, int] = {}
    for marker in directory.iterdir():
        name = marker.name.rsplit(".", 1)[0]
        if name in POINTS:
            counts[name] = counts.get(name, 0) + 1
    return counts


configure()
