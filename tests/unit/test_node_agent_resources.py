"""The node agent's config defaults, GPU parsing, resource sampling and outputs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.node_agent.config import NodeAgentConfig
from services.node_agent.gpus import GpuProbe, parse_nvidia_smi
from services.node_agent.info import node_info
from services.node_agent.policy import Floors
from services.node_agent.resources import ResourceProbe
from services.node_agent.workspace import OutputError, output_files, read_result
from shared.config import convert_config
from shared.errors import ConfigError
from shared.jobs import GpuInfo


def test_config_defaults_are_derived() -> None:
    cfg = convert_config(NodeAgentConfig, {})
    assert cfg.node_id  # the short host name
    assert cfg.capabilities == ["cpu"]  # shell (arbitrary commands) is off by default
    assert cfg.job_types == [] and not cfg.runs_shell
    assert cfg.slots == (os.cpu_count() or 1)
    assert cfg.work_dir == os.path.join(".ringmaster", "node", cfg.node_id)
    assert cfg.cache_dir == os.path.join(cfg.work_dir, "cache")
    assert cfg.hollow == 0
    assert cfg.capacity == cfg.slots


def test_max_jobs_caps_the_capacity() -> None:
    cfg = convert_config(NodeAgentConfig, {"slots": 8, "max_jobs": 3})
    assert cfg.capacity == 3


def test_declared_gpus_and_cpus() -> None:
    cfg = convert_config(
        NodeAgentConfig,
        {
            "declared_cpu_count": 6,
            "declared_gpus": [{"index": 0, "name": "A100", "memory_total_mb": 40960}],
        },
    )
    assert cfg.slots == 6
    assert cfg.declared_gpus == [GpuInfo(index=0, name="A100", memory_total_mb=40960)]


@pytest.mark.parametrize(
    "values",
    [
        {"node_id": "a.b"},
        {"capabilities": ["gpu.big"]},
        {"capabilities": []},
        {"commands": {"shell": ["sh"]}},
        {"commands": {"Bad-Type": ["x"]}},
        {"commands": {"train": []}},
        {"unknown_field": 1},
    ],
)
def test_bad_config_is_refused(values: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        convert_config(NodeAgentConfig, values)


def test_parse_nvidia_smi() -> None:
    text = (
        "0, NVIDIA A100-SXM4-40GB, 40960, 1234, 37\n"
        "1, Tesla V100, 16, big, 16160, [N/A], [N/A]\n"
        "garbage line\n"
        "\n"
    )
    gpus = parse_nvidia_smi(text)
    assert gpus[0] == GpuInfo(
        index=0,
        name="NVIDIA A100-SXM4-40GB",
        memory_total_mb=40960,
        memory_used_mb=1234,
        utilization_pct=37.0,
    )
    # A name with commas in it, and values nvidia-smi could not read.
    assert gpus[1].name == "Tesla V100, 16, big"
    assert (gpus[1].memory_total_mb, gpus[1].memory_used_mb, gpus[1].utilization_pct) == (
        16160,
        0,
        0.0,
    )
    assert len(gpus) == 2


def test_declared_gpus_when_nothing_is_detected() -> None:
    declared = [GpuInfo(index=0, name="declared", memory_total_mb=1024)]
    probe = GpuProbe(declared, detect=False)
    assert probe.source == "declared"
    assert probe.read() == declared
    assert GpuProbe(detect=False).read() == []


def test_sample_and_node_info(tmp_path: Path) -> None:
    cfg = convert_config(
        NodeAgentConfig,
        {"node_id": "n1", "work_dir": str(tmp_path), "declared_memory_mb": 64, "slots": 2},
    )
    sample = ResourceProbe(cfg, detect_gpus=False).sample()
    assert sample.cpu_count >= 1
    assert sample.memory_total_mb == 64 and 0 <= sample.memory_available_mb <= 64
    assert sample.disk_free_mb > 0
    info = node_info(
        node_id="n1",
        hostname="h",
        version="v",
        config=cfg,
        sample=sample,
        floors=Floors(accepting=True),
        free=1,
        running=["j1"],
        interval_s=1.0,
    )
    assert (info.accepting, info.slots, info.free_slots, info.running_jobs) == (
        True,
        2,
        1,
        ["j1"],
    )
    draining = node_info(
        node_id="n1",
        hostname="h",
        version="v",
        config=cfg,
        sample=sample,
        floors=Floors(accepting=True),
        free=1,
        running=[],
        interval_s=1.0,
        reason="draining",
    )
    assert (draining.accepting, draining.free_slots, draining.reason) == (False, 0, "draining")


def test_outputs_exclude_result_and_symlinks(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "sub" / "b.bin").write_bytes(b"b")
    (tmp_path / "result.json").write_text('{"score": 1}')
    (tmp_path / "sub" / "result.json").write_text("{}")  # only the top one is the result
    (tmp_path / "link").symlink_to("/etc/hostname")
    names = [name for _, name in output_files(tmp_path)]
    assert names == ["a.txt", "sub/b.bin", "sub/result.json"]
    assert read_result(tmp_path) == {"score": 1}


def test_result_must_be_a_json_object(tmp_path: Path) -> None:
    assert read_result(tmp_path) == {}
    (tmp_path / "result.json").write_text("[1, 2]")
    with pytest.raises(OutputError, match="not a JSON object"):
        read_result(tmp_path)
    (tmp_path / "result.json").write_text("{broken")
    with pytest.raises(OutputError, match="unreadable"):
        read_result(tmp_path)
