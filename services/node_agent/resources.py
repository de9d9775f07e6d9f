"""What the node has: CPU, load, memory, free disk and GPUs, detected or declared.

A sample is taken in a worker thread (``nvidia-smi`` may take a while) once per
interval and shared by everything that needs it, hollow nodes included.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from services.node_agent.config import NodeAgentConfig
from services.node_agent.gpus import GpuProbe
from shared.jobs import GpuInfo

MB = 1 << 20


@dataclass(frozen=True)
class Sample:
    """One reading of the host's resources."""

    cpu_count: int
    load_1m: float
    memory_total_mb: int
    memory_available_mb: int
    disk_free_mb: int
    gpus: list[GpuInfo] = field(default_factory=list)
    errors: tuple[str, ...] = ()


class ResourceProbe:
    """Reads the host's resources with psutil, falling back on the config's declarations."""

    def __init__(self, config: NodeAgentConfig, *, detect_gpus: bool = True) -> None:
        self.config = config
        self.disk_path = Path(config.work_dir)
        self.gpus = GpuProbe(config.declared_gpus, detect=detect_gpus)
        self.hostname = socket.gethostname()

    def sample(self) -> Sample:
        """Read everything now (blocking: call it from a worker thread)."""
        cfg = self.config
        errors: list[str] = []
        cpu = cfg.declared_cpu_count or psutil.cpu_count() or 1
        load = 0.0
        try:
            load = os.getloadavg()[0]
        except OSError as exc:
            errors.append(f"load: {exc}")
        try:
            memory = psutil.virtual_memory()
            total, available = memory.total // MB, memory.available // MB
        except (OSError, RuntimeError) as exc:
            total = available = cfg.declared_memory_mb
            errors.append(f"memory: {exc}")
        if cfg.declared_memory_mb:
            total, available = cfg.declared_memory_mb, min(available, cfg.declared_memory_mb)
        # Unknown free space reads as none: fail closed, take no work.
        disk = 0
        try:
            self.disk_path.mkdir(parents=True, exist_ok=True)
            disk = psutil.disk_usage(str(self.disk_path)).free // MB
        except OSError as exc:
            errors.append(f"disk: {exc}")
        gpus = self.gpus.read()
        if self.gpus.last_error:
            errors.append(self.gpus.last_error)
        return Sample(
            cpu_count=cpu,
            load_1m=round(load, 2),
            memory_total_mb=total,
            memory_available_mb=available,
            disk_free_mb=disk,
            gpus=gpus,
            errors=tuple(errors),
        )
