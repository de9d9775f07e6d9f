"""GPU detection: NVML where ``pynvml`` is installed, else ``nvidia-smi``, else the config.

Each source is tried once at start; the first that works is used from then on. A
source that fails later is reported in the probe's ``last_error`` and yields no GPUs
for that sample (the declared ones when there are any), never an exception.
"""

from __future__ import annotations

import importlib
import logging
import shutil
import subprocess
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from shared.jobs import GpuInfo

log = logging.getLogger("ringmaster.node_agent.gpus")

SMI_QUERY = "index,name,memory.total,memory.used,utilization.gpu"
SMI_TIMEOUT_S = 10.0


def _number(text: str) -> float:
    """A number from nvidia-smi's CSV; ``[N/A]`` and the like read as 0."""
    try:
        return float(text.strip())
    except ValueError:
        return 0.0


def parse_nvidia_smi(text: str) -> list[GpuInfo]:
    """GPUs from ``nvidia-smi --query-gpu=SMI_QUERY --format=csv,noheader,nounits``."""
    gpus = []
    for line in text.splitlines():
        raw = line.split(",")
        fields = [f.strip() for f in raw]
        if len(fields) < 5 or not fields[0].isdigit():
            continue
        # A GPU name may itself hold a comma: the name is whatever sits between.
        name = ",".join(raw[1:-3]).strip()
        gpus.append(
            GpuInfo(
                index=int(fields[0]),
                name=name,
                memory_total_mb=int(_number(fields[-3])),
                memory_used_mb=int(_number(fields[-2])),
                utilization_pct=_number(fields[-1]),
            )
        )
    return gpus


def _load_nvml() -> ModuleType | None:
    # importlib rather than an import statement: nvidia-ml-py is optional and untyped.
    try:
        return importlib.import_module("pynvml")
    except ImportError:
        return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class GpuProbe:
    """Reads the node's GPUs from the first source that works."""

    def __init__(self, declared: Sequence[GpuInfo] = (), *, detect: bool = True) -> None:
        self.declared = list(declared)
        self.source = "declared" if self.declared else "none"
        self.last_error = ""
        self._nvml: ModuleType | None = None
        self._smi: str | None = None
        if detect:
            self._choose()

    def _choose(self) -> None:
        nvml = _load_nvml()
        if nvml is not None:
            try:
                nvml.nvmlInit()
            except Exception as exc:  # noqa: BLE001 - NVMLError has no stable import path
                self.last_error = f"NVML: {exc}"
                log.info("NVML present but not usable: %s", exc)
            else:
                self._nvml, self.source = nvml, "nvml"
                return
        smi = shutil.which("nvidia-smi")
        if smi is not None and self._read_smi(smi) is not None:
            self._smi, self.source = smi, "nvidia-smi"

    def read(self) -> list[GpuInfo]:
        """The GPUs now (blocking: call it from a worker thread)."""
        found: list[GpuInfo] | None = None
        if self._nvml is not None:
            found = self._read_nvml(self._nvml)
        elif self._smi is not None:
            found = self._read_smi(self._smi)
        return found if found else list(self.declared)

    def _read_nvml(self, nvml: ModuleType) -> list[GpuInfo] | None:
        try:
            gpus = []
            for i in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(i)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                util = nvml.nvmlDeviceGetUtilizationRates(handle)
                gpus.append(
                    GpuInfo(
                        index=i,
                        name=_text(nvml.nvmlDeviceGetName(handle)),
                        memory_total_mb=int(memory.total) >> 20,
                        memory_used_mb=int(memory.used) >> 20,
                        utilization_pct=float(util.gpu),
                    )
                )
        except Exception as exc:  # noqa: BLE001 - any NVML failure: this sample has no GPUs
            self.last_error = f"NVML: {exc}"
            return None
        return gpus

    def _read_smi(self, smi: str) -> list[GpuInfo] | None:
        argv = [smi, f"--query-gpu={SMI_QUERY}", "--format=csv,noheader,nounits"]
        try:
            out = subprocess.run(
                argv, capture_output=True, text=True, timeout=SMI_TIMEOUT_S, check=True
            )
        except (OSError, subprocess.SubprocessError) as exc:
            self.last_error = f"nvidia-smi: {exc}"
            return None
        return parse_nvidia_smi(out.stdout)
