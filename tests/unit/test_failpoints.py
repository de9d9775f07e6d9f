"""Failpoints: the spec's grammar, the catalogue against the code and the doc, a real crash."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from shared import failpoints as fp

ROOT = Path(__file__).resolve().parents[2]
CALL = re.compile(r"""failpoint\(\s*["']([a-z_.]+)["']\s*\)""")


def test_the_spec_grammar() -> None:
    armed = fp.parse(
        "job_manager.report.after_write=crash, node_agent.ack.before=hang(0.25);"
        " sync_planner.manifest.after_write=crash(once)"
    )
    assert armed == {
        "job_manager.report.after_write": fp.Arm("crash"),
        "node_agent.ack.before": fp.Arm("hang", 0.25),
        "sync_planner.manifest.after_write": fp.Arm("crash", 1.0, once=True),
    }
    assert fp.parse("") == {}
    assert set(fp.parse("*=crash(once)")) == set(fp.POINTS)
    with pytest.raises(fp.FailpointError, match="unknown failpoint"):
        fp.parse("job_manager.nowhere=crash")
    with pytest.raises(fp.FailpointError, match="crash or hang"):
        fp.parse("node_agent.ack.before=explode")


def test_unarmed_points_do_nothing() -> None:
    fp.configure("", "")
    for name in fp.POINTS:
        fp.failpoint(name)  # would kill the test process if armed
    assert fp.armed() == {}


def test_every_point_in_the_code_is_catalogued_and_every_catalogued_point_is_placed() -> None:
    called: set[str] = set()
    for path in [*ROOT.glob("services/**/*.py"), *ROOT.glob("shared/**/*.py")]:
        called |= set(CALL.findall(path.read_text()))
    assert called == set(fp.POINTS)


def test_the_reliability_doc_lists_every_point() -> None:
    doc = (ROOT / "docs" / "reliability.md").read_text()
    listed = set(re.findall(r"^\| `([a-z_]+\.[a-z_.]+)` \|", doc, flags=re.MULTILINE))
    assert listed == set(fp.POINTS)


def test_an_armed_point_kills_its_process_once_per_directory(tmp_path: Path) -> None:
    code = "import shared.failpoints as f; f.failpoint('node_agent.ack.before'); print('ran')"
    env = {
        "RINGMASTER_FAILPOINTS": "node_agent.ack.before=crash(once)",
        "RINGMASTER_FAILPOINTS_DIR": str(tmp_path),
        "PYTHONPATH": str(ROOT),
    }
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=False)
    assert first.returncode == -9 and b"ran" not in first.stdout
    assert fp.fired(tmp_path) == {"node_agent.ack.before": 1}
    again = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=False)
    assert again.returncode == 0 and b"ran" in again.stdout  # fired once already
