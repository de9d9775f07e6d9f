"""GPU detection behind one small interface: NVML, ``nvidia-smi``, or the config's list.

A :class:`GpuSource` reads the node's GPUs or raises :class:`GpuError`. Three exist:
:class:`NvmlSource` (nvidia-ml-py, imported as ``pynvml``, when installed),
:class:`SmiSource` (the ``nvidia-smi`` binary) and :class:`DeclaredSource` (the
config's ``declared_gpus``, for hosts where detection is impossible and for tests).
:class:`GpuProbe` tries NVML, then ``nvidia-smi`` once at start and keeps the first
that works; a source that fails later is reported in ``last_error`` and that sample
falls back on the declared GPUs (none by default), never an exception.
"""

from __future__ import annotations

import importlib
import logging
import shutil
import subprocess
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from shared.jobs import GpuInfo

log = logging.getLogger("ringmaster.node_agent.gpus")

SMI_QUERY = "index,name,memory.total,memory.used,utilization.gpu"
SMI_TIMEOUT_S = 10.0


class GpuError(RuntimeError):
    """A GPU source could not be read."""


class GpuSource(Protocol):
    """Where a node's GPUs come from."""

    #: Shown in health details: ``nvml``, ``nvidia-smi`` or ``declared``.
    name: str

    def read(self) -> list[GpuInfo]:
        """The GPUs now (blocking); raises :class:`GpuError` when they cannot be read."""
        ...


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


def _text(value: Any) -> str:
    # Older pynvml versions return bytes for names, newer ones str.
    return value.decode() if isinstance(value, bytes) else str(value)


class NvmlSource:
    """GPUs through NVML; ``nvml`` is the ``pynvml`` module (or a stand-in in tests)."""

    name = "nvml"

    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml

    def read(self) -> list[GpuInfo]:
        """Every device NVML counts, in NVML's (PCI bus) order."""
        nvml = self.nvml
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
        except Exception as exc:  # NVMLError has no stable import path: any failure
            raise GpuError(f"NVML: {exc}") from exc
        return gpus


#: Runs an argv and returns its stdout (raises OSError or SubprocessError).
Run = Callable[[list[str]], str]


def _run(argv: list[str]) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=SMI_TIMEOUT_S, check=True)
    return out.stdout


class SmiSource:
    """GPUs from the ``nvidia-smi`` binary at ``path``; ``run`` is replaceable in tests."""

    name = "nvidia-smi"

    def __init__(self, path: str, run: Run = _run) -> None:
        self.argv = [path, f"--query-gpu={SMI_QUERY}", "--format=csv,noheader,nounits"]
        self.run = run

    def read(self) -> list[GpuInfo]:
        """The devices nvidia-smi lists."""
        try:
            return parse_nvidia_smi(self.run(self.argv))
        except (OSError, subprocess.SubprocessError) as exc:
            raise GpuError(f"nvidia-smi: {exc}") from exc


class DeclaredSource:
    """The GPUs the config declares, as they are."""

    name = "declared"

    def __init__(self, gpus: Sequence[GpuInfo]) -> None:
        self.gpus = list(gpus)

    def read(self) -> list[GpuInfo]:
        """The declared GPUs."""
        return list(self.gpus)


def _load_nvml() -> Any:
    # importlib rather than an import statement: nvidia-ml-py is optional and untyped.
    try:
        return importlib.import_module("pynvml")
    except ImportError:
        return None


def detect_source() -> tuple[GpuSource | None, str]:
    """The first detecting source that works (NVML, then nvidia-smi), and why not."""
    error = ""
    nvml = _load_nvml()
    if nvml is not None:
        try:
            nvml.nvmlInit()
            return NvmlSource(nvml), ""
        except Exception as exc:  # noqa: BLE001 - NVMLError has no stable import path
            error = f"NVML: {exc}"
            log.info("NVML present but not usable: %s", exc)
    path = shutil.which("nvidia-smi")
    if path is not None:
        smi = SmiSource(path)
        try:
            smi.read()
            return smi, ""
        except GpuError as exc:
            error = str(exc)
    return None, error


class GpuProbe:
    """Reads the node's GPUs: the detected source, else the declared GPUs."""

    def __init__(
        self,
        declared: Sequence[GpuInfo] = (),
        *,
        detect: bool = True,
        source: GpuSource | None = None,
    ) -> None:
        self.fallback = DeclaredSource(declared)
        self.last_error = ""
        if source is None and detect:
            source, self.last_error = detect_source()
        self.detected = source
        self.source = source.name if source else ("declared" if declared else "none")

    def read(self) -> list[GpuInfo]:
        """The GPUs now (blocking: call it from a worker thread)."""
        if self.detected is not None:
            try:
                found = self.detected.read()
            except GpuError as exc:
                self.last_error = str(exc)
            else:
                self.last_error = ""
                if found:
                    return found
        return self.fallback.read()
