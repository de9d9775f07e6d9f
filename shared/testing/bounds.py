"""The bounds tests wait with, and the pytest timeouts derived from them.

Every bound here catches a hang; none measures anything. They are generous because
the suite runs on loaded 2-core machines, where a step that takes a second alone can
take many times that beside other work.

A test's ``pytest.mark.timeout`` must be at or above the waits the test itself makes,
or pytest kills a test that was still inside a bound of its own and reports a hang
where there was none. ``timeout_for`` adds the waits up, so the mark follows them.
"""

from __future__ import annotations

import pytest

__all__ = ["COLD_START", "SLACK", "WAIT", "timeout_for"]

#: One step that should take a moment: a line printed, a job RUNNING, a clean stop.
WAIT = 30.0
#: A cluster from nothing (``ringmaster up`` with an empty store, or a browser and a
#: cluster) until every service is RUNNING: Python start-up of a dozen processes.
COLD_START = 120.0
#: What a test does outside its waits (start-up, teardown, reading streams).
SLACK = 30.0


def timeout_for(*waits: float) -> pytest.MarkDecorator:
    """``pytest.mark.timeout`` of the sum of a test's successive waits plus ``SLACK``."""
    return pytest.mark.timeout(sum(waits) + SLACK)
