"""GPUs per slot, the pure parts: sources (recorded outputs), requirements, assignment."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace
from typing import Any, cast

import msgspec
import pytest
from nats.aio.msg import Msg

from services.node_agent.assignment import GpuAssignment, GpuGate, misfit, visible_devices_env
from services.node_agent.config import NodeAgentConfig
from services.node_agent.gpus import (
    DeclaredSource,
    GpuError,
    GpuProbe,
    NvmlSource,
    SmiSource,
    parse_nvidia_smi,
)
from services.node_agent.reports import AgentStats, Reporter
from shared.codec import decode
from shared.config import convert_config
from shared.jobs import GpuInfo, JobDispatch, JobSpec, Requirements, free_gpus
from shared.testing.builders import node_info

#: ``nvidia-smi --query-gpu=index,name,memory.total,memory.used,utilization.gpu
#: --format=csv,noheader,nounits`` on an 8-GPU host, two devices busy, one unreadable.
SMI_8X = """\
0, NVIDIA A100-SXM4-80GB, 81920, 4, 0
1, NVIDIA A100-SXM4-80GB, 81920, 71234, 97
2, NVIDIA A100-SXM4-80GB, 81920, 4, 0
3, NVIDIA A100-SXM4-80GB, 81920, 65000, 100
4, NVIDIA A100-SXM4-80GB, 81920, 4, 0
5, NVIDIA A100-SXM4-80GB, 81920, 4, 0
6, NVIDIA A100-SXM4-80GB, 81920, 4, 0
7, NVIDIA A100-SXM4-80GB, 81920, [N/A], [N/A]
"""
#: The same query on a workstation with two different cards.
SMI_MIXED = "0, NVIDIA GeForce RTX 4090, 24564, 1317, 12\n1, Tesla T4, 15360, 0, 0\n"
#: What nvidia-smi prints when the driver is gone (exit code 9, on stdout).
SMI_NO_DRIVER = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running.\n"
)


def test_recorded_nvidia_smi_outputs() -> None:
    gpus = parse_nvidia_smi(SMI_8X)
    assert [g.index for g in gpus] == list(range(8))
    assert gpus[1].memory_used_mb == 71234 and gpus[1].utilization_pct == 97.0
    assert (gpus[7].memory_used_mb, gpus[7].utilization_pct) == (0, 0.0)
    mixed = parse_nvidia_smi(SMI_MIXED)
    assert [(g.name, g.memory_total_mb) for g in mixed] == [
        ("NVIDIA GeForce RTX 4090", 24564),
        ("Tesla T4", 15360),
    ]
    assert parse_nvidia_smi(SMI_NO_DRIVER) == []


def test_smi_source_runs_the_query_and_reports_failures() -> None:
    seen: list[list[str]] = []

    def run(argv: list[str]) -> str:
        seen.append(argv)
        return SMI_MIXED

    assert len(SmiSource("/usr/bin/nvidia-smi", run).read()) == 2
    assert seen[0][0] == "/usr/bin/nvidia-smi" and "--format=csv,noheader,nounits" in seen[0]

    def broken(argv: list[str]) -> str:
        raise subprocess.CalledProcessError(9, argv, output=SMI_NO_DRIVER)

    with pytest.raises(GpuError, match="nvidia-smi"):
        SmiSource("nvidia-smi", broken).read()


class FakeNvml:
    """The calls NvmlSource makes, answering as pynvml does (names as bytes, old style)."""

    def __init__(self, devices: list[tuple[bytes, int, int, int]], fail: bool = False) -> None:
        self.devices, self.fail = devices, fail

    def nvmlDeviceGetCount(self) -> int:  # pynvml's names
        if self.fail:
            raise RuntimeError("NVML_ERROR_GPU_IS_LOST")
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, h: int) -> bytes:
        return self.devices[h][0]

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        return SimpleNamespace(total=self.devices[h][1] << 20, used=self.devices[h][2] << 20)

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        return SimpleNamespace(gpu=self.devices[h][3], memory=0)


def test_nvml_source_and_the_probes_fallback() -> None:
    nvml = FakeNvml(
        [(b"NVIDIA H100 80GB HBM3", 81559, 512, 3), (b"NVIDIA H100 80GB HBM3", 81559, 0, 0)]
    )
    gpus = NvmlSource(nvml).read()
    assert gpus[0] == GpuInfo(
        index=0, name="NVIDIA H100 80GB HBM3", memory_total_mb=81559, memory_used_mb=512,
        utilization_pct=3.0,
    )  # fmt: skip
    declared = [GpuInfo(index=0, name="declared", memory_total_mb=1024)]
    probe = GpuProbe(declared, source=NvmlSource(nvml))
    assert probe.source == "nvml" and len(probe.read()) == 2 and probe.last_error == ""
    nvml.fail = True  # a lost GPU: this sample has the declared ones and says why
    assert probe.read() == declared and "GPU_IS_LOST" in probe.last_error
    nvml.fail = False
    assert len(probe.read()) == 2 and probe.last_error == ""
    assert DeclaredSource(declared).read() == declared
    assert GpuProbe(declared, detect=False).source == "declared"


def test_requirements_gpu_count_keeps_the_old_boolean() -> None:
    assert Requirements().gpu_count == 0
    assert Requirements(gpu=True).gpu_count == 1  # old clients: "at least one"
    assert Requirements(gpu=True, gpus=4).gpu_count == 4
    assert Requirements(gpus=2).gpu_count == 2
    assert Requirements(gpu_memory_mb=8000).gpu_count == 1
    # An old client's spec decodes; the new fields get their defaults.
    old = decode(JobSpec, b'{"type": "train", "requirements": {"gpu": true}}')
    assert (old.requirements.gpus, old.requirements.gpu_memory_mb) == (0, 0)


@pytest.mark.parametrize("bad", [{"gpus": -1}, {"gpus": 65}, {"gpu_memory_mb": -1}, {"gpus": "2"}])
def test_bad_gpu_requirements_do_not_decode(bad: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"type": "t", "requirements": bad}, JobSpec)


FOUR = [GpuInfo(index=i, name="A100", memory_total_mb=40960) for i in range(4)]


def test_whole_devices_are_assigned_disjointly_and_freed() -> None:
    a = GpuAssignment()
    two = Requirements(gpus=2)
    assert a.take("j1-1", two, FOUR) == (0, 1)
    assert a.take("j2-1", two, FOUR) == (2, 3)
    assert a.take("j3-1", two, FOUR) is None  # fits the node, not now: waits
    assert a.take("cpu-1", Requirements(), FOUR) == ()  # a CPU job needs none
    assert a.free_count(FOUR) == 0
    assert [g.assigned_to for g in a.annotate(FOUR)] == ["j1-1", "j1-1", "j2-1", "j2-1"]
    a.release("j1-1")
    a.release("j1-1")  # idempotent
    assert a.take("j3-1", two, FOUR) == (0, 1)
    assert a.view(FOUR)["assigned"] == {"0": "j3-1", "1": "j3-1", "2": "j2-1", "3": "j2-1"}


def test_memory_needs_pick_the_smallest_device_that_fits() -> None:
    mixed = [
        GpuInfo(index=0, name="A100", memory_total_mb=81920),
        GpuInfo(index=1, name="T4", memory_total_mb=15360),
        GpuInfo(index=2, name="A10", memory_total_mb=24576),
    ]
    a = GpuAssignment()
    assert a.take("small-1", Requirements(gpu=True), mixed) == (1,)
    assert a.take("mid-1", Requirements(gpu_memory_mb=20000), mixed) == (2,)
    assert a.take("big-1", Requirements(gpu_memory_mb=40000), mixed) == (0,)


def test_misfit_names_what_the_node_lacks() -> None:
    assert misfit(Requirements(gpus=4), FOUR) == ""
    assert misfit(Requirements(), []) == ""
    assert misfit(Requirements(gpus=8), FOUR) == "needs 8 GPU(s); the node has 4"
    assert misfit(Requirements(gpu=True), []) == "needs 1 GPU(s); the node has 0"
    assert "at least 81920 MB each; the node has 0 such of 4" in misfit(
        Requirements(gpu_memory_mb=81920), FOUR
    )


def test_visible_devices_env() -> None:
    assert visible_devices_env((2, 3)) == {
        "CUDA_VISIBLE_DEVICES": "2,3",
        "NVIDIA_VISIBLE_DEVICES": "2,3",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
    }
    cpu = visible_devices_env(())
    assert cpu["CUDA_VISIBLE_DEVICES"] == "" and cpu["NVIDIA_VISIBLE_DEVICES"] == ""


def test_free_gpus_of_a_node_info() -> None:
    info = node_info("n", gpus=("A100", "A100", "T4"))
    held = info.gpus[0].__class__(index=0, name="A100", memory_total_mb=16000, assigned_to="j-1")
    info = msgspec.structs.replace(info, gpus=[held, *info.gpus[1:]])
    assert [g.index for g in free_gpus(info)] == [1, 2]
    assert free_gpus(info, min_memory_mb=16001) == []


class FakeMsg:
    """The parts of a JetStream message the gate touches, recording what was done."""

    def __init__(self, subject: str, delivered: int = 1) -> None:
        self.subject = subject
        self.metadata = SimpleNamespace(num_delivered=delivered)
        self.done: list[str] = []

    async def nak(self, delay: float | None = None) -> None:
        self.done.append(f"nak {delay}")

    async def in_progress(self) -> None:
        self.done.append("in_progress")

    async def ack(self) -> None:
        self.done.append("ack")


def gate(ack_wait_s: float = 30.0) -> GpuGate:
    cfg = convert_config(NodeAgentConfig, {"node_id": "n", "ack_wait_s": ack_wait_s})
    return GpuGate("n", "P.jobs.node.n", cast(Reporter, None), AgentStats(), lambda: cfg)


def dispatch(job_id: str, **req: Any) -> JobDispatch:
    spec = JobSpec(type="t", requirements=Requirements(**req))
    return JobDispatch(job_id=job_id, attempt=1, fencing=1, spec=spec, dispatched_at=0.0)


@pytest.mark.anyio
async def test_the_gate_parks_resumes_and_hands_back() -> None:
    g = gate(ack_wait_s=3.0)
    first, waiting = FakeMsg("P.jobs.cap.gpu"), FakeMsg("P.jobs.cap.gpu")
    assert await g.admit(cast(Msg, first), dispatch("a", gpus=3), FOUR) == (0, 1, 2)
    assert await g.admit(cast(Msg, waiting), dispatch("b", gpus=2), FOUR) is None
    assert g.parked is not None and g.gpus.waited == 1
    assert await g.resume(True, FOUR) is None  # still held by a
    g.gpus.release("a-1")
    ready = await g.resume(True, FOUR)
    assert ready is not None and ready[2] == (0, 1) and g.parked is None
    # A node that stops taking work hands its waiting dispatch back at once.
    assert await g.admit(cast(Msg, FakeMsg("x")), dispatch("c", gpus=4), FOUR) is None
    assert await g.resume(False, FOUR) is None and g.parked is None


@pytest.mark.anyio
async def test_refusals_go_back_to_the_pool_until_the_last_delivery() -> None:
    g = gate()
    pooled = FakeMsg("P.jobs.cap.gpu", delivered=1)
    assert await g.admit(cast(Msg, pooled), dispatch("big", gpus=8), FOUR) is None
    assert pooled.done == ["nak 2.0"] and g.gpus.refused == 1 and g.parked is None
    assert g.gpus.last_refusal == "big-1: needs 8 GPU(s); the node has 4"
