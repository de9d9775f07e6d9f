"""Configuration of the node agent.

Resources are detected (psutil, NVML or ``nvidia-smi``); where detection is impossible
they can be declared here (``declared_*``). Job types map to argv templates in
``commands``; the built-in type ``shell`` runs ``spec.args["argv"]`` directly, and
only on a node that lists ``shell`` among its capabilities (off by default: it runs
whatever a submitter asks). A job's environment is the allow-list ``policy.JOB_ENV``
plus ``job_env``, never the agent's own secrets.
"""

from __future__ import annotations

import os
import re
import socket
from typing import Annotated, Literal

import msgspec

from shared.config import BaseConfig, Positive
from shared.jobs import GpuInfo
from shared.subjects import check_token

NonNegative = Annotated[int, msgspec.Meta(ge=0)]

#: The built-in job type: ``spec.args["argv"]`` run as it is, without a shell.
SHELL_TYPE = "shell"

_JOB_TYPE = re.compile(r"^[a-z][a-z0-9_]*$")
_SECRET = re.compile(r"RINGMASTER_|CREDENTIAL|TOKEN|PASSWORD|SECRET|_KEY$|^NATS_", re.IGNORECASE)


def secret_name(name: str) -> bool:
    """Whether an environment variable's name says it may hold (or point at) a secret."""
    return bool(_SECRET.search(name))


def default_node_id() -> str:
    """The short host name, made one subject token."""
    host = socket.gethostname().split(".")[0]
    return re.sub(r"[^A-Za-z0-9_-]", "-", host) or "node"


class NodeAgentConfig(BaseConfig, kw_only=True, forbid_unknown_fields=True):
    """Node agent settings; empty or zero values mean "detect" or "derive"."""

    #: This node's id (default: the short host name); hollow nodes add ``-h<i>``.
    node_id: str = ""
    #: Capability pools this node serves (``P.jobs.cap.<capability>``).
    #: ``shell`` also enables the built-in shell job type (arbitrary commands).
    capabilities: list[str] = msgspec.field(default_factory=lambda: ["cpu"])
    #: Jobs run at once (0: the CPU count).
    slots: NonNegative = 0
    #: Where each job gets its ``<job_id>-<attempt>`` directory (default
    #: ``.ringmaster/node/<node_id>``).
    work_dir: str = ""
    #: Cache of fetched input blobs, by sha256 (default ``<work_dir>/cache``).
    cache_dir: str = ""
    #: Job type -> argv template; ``{python}`` is this interpreter, and ``{job_id}``,
    #: ``{attempt}``, ``{inputs_dir}``, ``{outputs_dir}``, ``{work_dir}`` are filled in.
    commands: dict[str, list[str]] = msgspec.field(default_factory=dict)
    #: Job type -> the longest a job of that type may run (its spec may ask for less).
    type_timeouts_s: dict[str, Positive] = msgspec.field(default_factory=dict)
    #: Safety floors: below either the node takes no work and reports DEGRADED.
    min_free_disk_mb: NonNegative = 512
    min_memory_mb: NonNegative = 128
    #: Hard cap on concurrent jobs whatever ``slots`` says (0: no cap beyond slots).
    max_jobs: NonNegative = 0
    #: Run this many simulated nodes in one process instead of the real one.
    hollow: NonNegative = 0
    #: Resources to report where detection is impossible (0 / empty: detect).
    declared_gpus: list[GpuInfo] = msgspec.field(default_factory=list)
    declared_cpu_count: NonNegative = 0
    declared_memory_mb: NonNegative = 0
    #: Seconds one report to the job manager waits for its answer.
    report_timeout_s: Positive = 5.0
    #: Tries of a final (completed/failed) report before the lease is left to lapse.
    report_attempts: Annotated[int, msgspec.Meta(ge=1)] = 5
    #: Least seconds between two progress reports (and JOB_PROGRESS events) of a job.
    progress_interval_s: Positive = 1.0
    #: Ack wait of the pull consumers; in-progress acks go out every third of it.
    ack_wait_s: Annotated[float, msgspec.Meta(ge=3)] = 30.0
    #: Deliveries of one dispatch before the server gives up on it.
    max_deliver: Annotated[int, msgspec.Meta(ge=1)] = 5
    #: Hold the next dispatch while every slot is busy, so it starts the moment one
    #: frees (its lease is kept with in-progress acks while held).
    prefetch: bool = True
    #: Seconds one round of pulling (over every pool) waits for a job.
    fetch_timeout_s: Annotated[float, msgspec.Meta(ge=0.1)] = 1.0
    #: On drain, seconds running jobs get to finish before they are handed back.
    drain_grace_s: Annotated[float, msgspec.Meta(ge=0)] = 30.0
    #: Keep each job's directory after it ends (for debugging).
    keep_work_dirs: bool = False
    #: Names of the agent's environment variables jobs also get (beyond the allow-list).
    job_env: list[str] = msgspec.field(default_factory=list)
    #: How outputs are named in the object store: ``seal`` asks the sync planner to
    #: check and name the uploaded chunks (a per-node user may not write names);
    #: ``direct`` writes the name itself; ``auto`` seals when the credentials file is
    #: this node's own user file from ``ringmaster nats-config --nodes``.
    blob_upload: Literal["auto", "seal", "direct"] = "auto"
    #: Seconds a seal may take (the sync planner reads the whole upload back).
    seal_timeout_s: Positive = 60.0

    def __post_init__(self) -> None:
        if not self.node_id:
            # Several supervised agents on one host (node_agent-0, node_agent-1, ...) are
            # several nodes: each gets the host name with its instance number.
            supervised = re.fullmatch(r"node_agent-(\d+)", self.instance)
            suffix = f"-{supervised.group(1)}" if supervised else ""
            self.node_id = default_node_id() + suffix
        check_token(self.node_id, "config field 'node_id'")
        if not self.capabilities:
            raise ValueError("capabilities: a node serves at least one capability")
        for capability in self.capabilities:
            check_token(capability, "config field 'capabilities'")
        if not self.slots:
            self.slots = self.declared_cpu_count or os.cpu_count() or 1
        if not self.work_dir:
            self.work_dir = os.path.join(".ringmaster", "node", self.node_id)
        if not self.cache_dir:
            self.cache_dir = os.path.join(self.work_dir, "cache")
        for job_type, argv in self.commands.items():
            if not _JOB_TYPE.match(job_type):
                raise ValueError(f"commands: {job_type!r} is not a job type name")
            if job_type == SHELL_TYPE:
                raise ValueError("commands: 'shell' is built in and cannot be redefined")
            if not argv:
                raise ValueError(f"commands: the template of {job_type!r} is empty")
        for name in self.job_env:
            if secret_name(name):
                raise ValueError(f"job_env: {name!r} looks like a secret; jobs never get one")

    @property
    def runs_shell(self) -> bool:
        """Whether this node runs the built-in ``shell`` job type (arbitrary commands)."""
        return SHELL_TYPE in self.capabilities

    @property
    def job_types(self) -> list[str]:
        """The job types this node runs: its commands, and ``shell`` when enabled."""
        return sorted([*self.commands, *([SHELL_TYPE] if self.runs_shell else [])])

    @property
    def capacity(self) -> int:
        """Jobs this node runs at once: its slots, under the ``max_jobs`` cap."""
        return min(self.slots, self.max_jobs) if self.max_jobs else self.slots
