"""Which of a node's GPUs each job holds, and the environment that shows a job its own.

GPUs are handed out as whole devices from the node's inventory (the resource sample's
GPUs, detected or declared); no device is ever held by two jobs. A job is shown exactly
its devices through ``CUDA_VISIBLE_DEVICES`` and ``NVIDIA_VISIBLE_DEVICES`` (empty for a
CPU job, so that it sees no GPU even on a GPU host), with ``CUDA_DEVICE_ORDER`` set to
``PCI_BUS_ID`` because CUDA's default order (fastest first) need not match the NVML and
nvidia-smi indices the devices are named by.

A dispatch is judged when it is pulled, before anything is reported:

- it can never fit this node (more GPUs than the node has, or more memory per device
  than enough of its devices have): it is refused (:func:`refuse`), counted;
- it fits, but not now (other jobs hold the devices): it waits on the node, parked,
  and the node takes no other work until it starts, exactly as a full node does;
- it fits now: its devices are held until its process ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec
import nats.errors
from nats.aio.msg import Msg

from services.node_agent.config import NodeAgentConfig
from services.node_agent.job import settle
from services.node_agent.policy import ack_due
from services.node_agent.reports import AgentStats, Reporter
from shared.jobs import REFUSED, GpuInfo, JobDispatch, JobReport, Requirements

log = logging.getLogger("ringmaster.node_agent.assignment")

#: Seconds a refused capability-pool dispatch waits before the pool offers it again,
#: so that a node that cannot fit it does not take it straight back.
REFUSE_DELAY_S = 2.0


def visible_devices_env(devices: tuple[int, ...]) -> dict[str, str]:
    """The variables that show a job exactly ``devices`` (none: a CPU job)."""
    ids = ",".join(str(d) for d in devices)
    return {
        "CUDA_VISIBLE_DEVICES": ids,
        "NVIDIA_VISIBLE_DEVICES": ids,
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
    }


def misfit(req: Requirements, inventory: list[GpuInfo]) -> str:
    """Why a job with ``req`` can never run on a node with ``inventory`` ("" if it can)."""
    need = req.gpu_count
    if need == 0:
        return ""
    fitting = [g for g in inventory if g.memory_total_mb >= req.gpu_memory_mb]
    if len(fitting) >= need:
        return ""
    if req.gpu_memory_mb:
        return (
            f"needs {need} GPU(s) with at least {req.gpu_memory_mb} MB each; "
            f"the node has {len(fitting)} such of {len(inventory)}"
        )
    return f"needs {need} GPU(s); the node has {len(inventory)}"


class GpuAssignment:
    """One node's GPU bookkeeping: held devices by job key, and its counters."""

    def __init__(self) -> None:
        #: Job key (``<job_id>-<attempt>``) -> the device indices it holds.
        self.held: dict[str, tuple[int, ...]] = {}
        #: Dispatches refused because they can never fit this node.
        self.refused = 0
        #: Dispatches that had to wait for devices held by other jobs.
        self.waited = 0
        self.last_refusal = ""

    def holders(self) -> dict[int, str]:
        """Device index -> the job key holding it."""
        return {device: key for key, devices in self.held.items() for device in devices}

    def take(self, key: str, req: Requirements, inventory: list[GpuInfo]) -> tuple[int, ...] | None:
        """Hold devices for ``key`` now; None when not enough are free (the job waits).

        The smallest devices that are big enough go first, so devices with more memory
        stay free for the jobs that need it.
        """
        need = req.gpu_count
        if need == 0:
            return ()
        busy = self.holders()
        free = [
            g for g in inventory if g.index not in busy and g.memory_total_mb >= req.gpu_memory_mb
        ]
        if len(free) < need:
            return None
        chosen = sorted(free, key=lambda g: (g.memory_total_mb, g.index))[:need]
        devices = tuple(sorted(g.index for g in chosen))
        self.held[key] = devices
        return devices

    def release(self, key: str) -> None:
        """``key``'s devices are free again (idempotent)."""
        self.held.pop(key, None)

    def annotate(self, inventory: list[GpuInfo]) -> list[GpuInfo]:
        """The inventory with each device's holder filled in, for NodeInfo."""
        holders = self.holders()
        return [msgspec.structs.replace(g, assigned_to=holders.get(g.index, "")) for g in inventory]

    def free_count(self, inventory: list[GpuInfo]) -> int:
        """Devices no job holds."""
        busy = self.holders()
        return sum(1 for g in inventory if g.index not in busy)

    def view(self, inventory: list[GpuInfo]) -> dict[str, Any]:
        """For health details: free devices, holders and the counters."""
        return {
            "free": self.free_count(inventory),
            "assigned": {str(d): key for d, key in sorted(self.holders().items())},
            "refused": self.refused,
            "waited": self.waited,
            "last_refusal": self.last_refusal,
        }


class GpuGate:
    """Judges each pulled dispatch against the node's GPUs; holds the one that waits.

    Shared by the real node and hollow nodes, so both refuse, wait and assign alike.
    """

    def __init__(
        self,
        node_id: str,
        own_subject: str,
        reporter: Reporter,
        stats: AgentStats,
        config: Callable[[], NodeAgentConfig],
    ) -> None:
        self.node_id = node_id
        self.own_subject = own_subject
        self.reporter = reporter
        self.stats = stats
        self.config = config
        self.gpus = GpuAssignment()
        #: A dispatch that fits this node but waits for devices other jobs hold.
        self.parked: tuple[Msg, JobDispatch] | None = None
        self._acked_at = 0.0

    async def admit(
        self, msg: Msg, d: JobDispatch, inventory: list[GpuInfo]
    ) -> tuple[int, ...] | None:
        """The devices to start ``d`` with now; None when it was refused or parked."""
        reason = misfit(d.spec.requirements, inventory)
        if reason:
            await self._refuse(msg, d, reason)
            return None
        devices = self.gpus.take(f"{d.job_id}-{d.attempt}", d.spec.requirements, inventory)
        if devices is None:
            self.gpus.waited += 1
            self.parked, self._acked_at = (msg, d), time.monotonic()
        return devices

    def unpark(self, inventory: list[GpuInfo]) -> tuple[Msg, JobDispatch, tuple[int, ...]] | None:
        """The parked dispatch with its devices, once they are free."""
        if self.parked is None:
            return None
        msg, d = self.parked
        devices = self.gpus.take(f"{d.job_id}-{d.attempt}", d.spec.requirements, inventory)
        if devices is None:
            return None
        self.parked = None
        return msg, d, devices

    async def resume(
        self, open_: bool, inventory: list[GpuInfo]
    ) -> tuple[Msg, JobDispatch, tuple[int, ...]] | None:
        """The parked dispatch once its devices are free; handed back if the node closed."""
        if self.parked is None:
            return None
        if not open_:
            await self.give_back()
            return None
        await self.keep_lease()
        return self.unpark(inventory)

    async def give_back(self) -> None:
        """Hand the parked dispatch back to its pool (the node stops taking work)."""
        if self.parked is not None:
            msg, self.parked = self.parked[0], None
            await settle(msg.nak, self.stats, "nak")

    async def keep_lease(self) -> None:
        """In-progress ack the parked dispatch when due, so its ack wait never runs out.

        Called after every wake-up of the node, not on a timer of its own: jobs ending
        one by one wake the node often without freeing enough devices.
        """
        now = time.monotonic()
        if self.parked is not None and ack_due(now, self._acked_at, self.config().ack_wait_s):
            self._acked_at = now
            await settle(self.parked[0].in_progress, self.stats, "in_progress")

    async def _refuse(self, msg: Msg, d: JobDispatch, reason: str) -> None:
        """Refuse a dispatch this node can never fit.

        From the node's own pool the job was aimed at this node and no other node will
        see it: the attempt is reported failed with the reason (the job manager retries
        it, through the selector, and fails it for good after ``max_attempts``). From a
        capability pool another node may fit it: it goes back to the pool after a delay,
        except on its last delivery, which reports the reason as a failed attempt rather
        than leave the server to drop it with none.
        """
        error = f"{REFUSED}node {self.node_id} cannot fit it: {reason}"
        self.gpus.refused += 1
        self.gpus.last_refusal = f"{d.job_id}-{d.attempt}: {reason}"
        log.warning("job %s-%s %s", d.job_id, d.attempt, error)
        cfg = self.config()
        last = _deliveries(msg) >= cfg.max_deliver
        if msg.subject != self.own_subject and not last:
            await settle(lambda: msg.nak(delay=REFUSE_DELAY_S), self.stats, "nak")
            return
        report = JobReport(
            job_id=d.job_id,
            attempt=d.attempt,
            fencing=d.fencing,
            node_id=self.node_id,
            phase="failed",
            error=error,
        )
        await self.reporter.send_final(report, cfg.report_attempts)
        await settle(msg.ack, self.stats, "ack")


def _deliveries(msg: Msg) -> int:
    """How many times the server delivered ``msg`` (1 when its metadata is unreadable)."""
    try:
        return int(msg.metadata.num_delivered)
    except (nats.errors.Error, ValueError, IndexError):
        return 1
