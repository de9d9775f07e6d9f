"""What every node of an agent is and does, real (node.py) or hollow (hollow.py).

The agent drives its nodes through this Protocol only: start them, hand them a
cancel, close their intake, stop them, and read their free slots, running jobs,
GPU gate and NodeInfo. A new kind of node (a remote executor, say) is one more class
that satisfies it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import anyio

from services.node_agent.assignment import GpuGate
from services.node_agent.job import Kill
from shared.jobs import JobDispatch, NodeInfo


class Held(Protocol):
    """A job a node holds, from its dispatch until its final ack."""

    @property
    def dispatch(self) -> JobDispatch: ...


class Node(Protocol):
    """One node: its id, its running jobs, its intake and its lifecycle."""

    #: Cleared to stop pulling new work (draining); the node finishes what it holds.
    intake_open: bool

    @property
    def node_id(self) -> str: ...
    @property
    def running(self) -> Mapping[str, Held]: ...
    @property
    def gate(self) -> GpuGate:
        """Jobs waiting for GPUs, and the devices held."""

    @property
    def finished(self) -> anyio.Event:
        """Set once the node has wound down after ``stop``."""

    def free(self) -> int:
        """Slots free for new work now."""

    def info(self, reason: str = "") -> NodeInfo:
        """The node's NodeInfo now."""

    def cancel(self, job_id: str) -> None:
        """Kill ``job_id`` if this node runs it (a JOB_CANCELLED arrived)."""

    def stop(self, why: Kill) -> None:
        """Stop pulling work and kill what runs, reported with ``why``."""

    async def run(self) -> None:
        """Pull and run jobs until stopped, then wind down."""
