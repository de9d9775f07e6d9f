"""The node agent's pure judgements: floors, slots, timeouts, progress, commands."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.node_agent import policy
from services.node_agent.config import NodeAgentConfig
from services.node_agent.policy import CommandError, Floors
from shared.config import convert_config
from shared.errors import ConfigError


def test_floors_hold_at_or_above_each_floor() -> None:
    floors = policy.judge_floors(
        disk_free_mb=100, memory_available_mb=50, min_free_disk_mb=100, min_memory_mb=50
    )
    assert floors == Floors(accepting=True)


def test_each_breached_floor_is_named() -> None:
    disk = policy.judge_floors(
        disk_free_mb=99, memory_available_mb=500, min_free_disk_mb=100, min_memory_mb=50
    )
    assert not disk.accepting and "disk 99 MB below the floor of 100 MB" in disk.reason
    both = policy.judge_floors(
        disk_free_mb=0, memory_available_mb=10, min_free_disk_mb=1, min_memory_mb=11
    )
    assert not both.accepting
    assert "disk" in both.reason and "memory 10 MB below the floor of 11 MB" in both.reason


@pytest.mark.parametrize(
    ("capacity", "running", "accepting", "open_", "free"),
    [
        (4, 0, True, True, 4),
        (4, 3, True, True, 1),
        (4, 4, True, True, 0),
        (4, 6, True, True, 0),  # over capacity after a config reload: never negative
        (4, 0, False, True, 0),  # below a floor
        (4, 0, True, False, 0),  # draining, paused or stopping
    ],
)
def test_free_slots(capacity: int, running: int, accepting: bool, open_: bool, free: int) -> None:
    floors = Floors(accepting=accepting, reason="" if accepting else "low disk")
    assert policy.free_slots(capacity, running, floors, intake_open=open_) == free


def test_job_timeout_is_the_smaller_of_spec_and_type_cap() -> None:
    caps = {"train": 600.0}
    assert policy.job_timeout(3600.0, "train", caps) == 600.0
    assert policy.job_timeout(60.0, "train", caps) == 60.0
    assert policy.job_timeout(3600.0, "selfplay", caps) == 3600.0


@pytest.mark.parametrize(
    ("line", "value"),
    [
        (b'{"progress": 0.4}\n', 0.4),
        ('{"progress": 1}', 1.0),
        (b'{"progress": 0, "games": 12}', 0.0),
        (b'  {"progress": 0.5}  ', 0.5),
    ],
)
def test_progress_lines(line: bytes | str, value: float) -> None:
    assert policy.parse_progress_line(line) == value


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"starting up",
        b"{not json",
        b"[0.4]",
        b'{"progress": "0.4"}',
        b'{"progress": true}',
        b'{"progress": null}',
        b'{"progress": 1.5}',
        b'{"progress": -0.1}',
        b'{"progress": NaN}',
        b'{"progress": Infinity}',
        b'{"other": 0.4}',
        b"\xff\xfe garbage",
        b"[" * 100_000,
    ],
)
def test_garbage_lines_are_no_progress(line: bytes) -> None:
    assert policy.parse_progress_line(line) is None


@given(st.binary(max_size=200))
def test_any_bytes_parse_without_raising(data: bytes) -> None:
    value = policy.parse_progress_line(data)
    assert value is None or 0.0 <= value <= 1.0


@given(st.floats(min_value=0, max_value=1))
def test_every_valid_progress_round_trips(value: float) -> None:
    assert policy.parse_progress_line(json.dumps({"progress": value})) == value


def _action(**kw: float) -> policy.ProgressAction:
    values = {
        "now": 10.0,
        "last_report_at": 9.0,
        "reported": 0.2,
        "progress": 0.2,
        "min_interval_s": 1.0,
        "heartbeat_s": 5.0,
    }
    values.update(kw)
    return policy.progress_action(**values)


def test_progress_reported_with_event_when_changed_and_interval_passed() -> None:
    assert _action(progress=0.3) == policy.ProgressAction(report=True, event=True)


def test_progress_rate_limited_within_the_interval() -> None:
    assert _action(progress=0.3, last_report_at=9.5) == policy.ProgressAction()


def test_unchanged_progress_still_reported_as_a_heartbeat() -> None:
    assert _action() == policy.ProgressAction()
    assert _action(last_report_at=5.0) == policy.ProgressAction(report=True, event=False)


def test_heartbeat_is_a_third_of_the_lease_bounded_by_ack_wait() -> None:
    assert policy.heartbeat_interval(30.0, 60.0) == pytest.approx(10.0)
    assert policy.heartbeat_interval(None, 30.0) == pytest.approx(10.0)
    assert policy.heartbeat_interval(300.0, 30.0) == pytest.approx(10.0)
    # An already lapsed lease: heartbeat fast, never zero or negative.
    assert policy.heartbeat_interval(-5.0, 30.0) == 0.2


def test_in_progress_ack_every_third_of_ack_wait() -> None:
    assert not policy.ack_due(10.0, 1.0, 30.0)
    assert policy.ack_due(11.0, 1.0, 30.0)


def test_shell_runs_args_argv_as_given() -> None:
    args = {"argv": ["echo", "{python}"]}
    argv = policy.build_argv("shell", args, {}, {"python": "/py"}, shell=True)
    assert argv == ["echo", "{python}"]  # no templating of a shell job's own argv


def test_shell_runs_only_where_enabled() -> None:
    with pytest.raises(CommandError, match="shell jobs are not enabled on this node"):
        policy.build_argv("shell", {"argv": ["true"]}, {}, {})


@pytest.mark.parametrize("args", [{}, {"argv": []}, {"argv": "echo hi"}, {"argv": ["a", 1]}])
def test_shell_needs_a_list_of_strings(args: dict[str, object]) -> None:
    with pytest.raises(CommandError, match="argv"):
        policy.build_argv("shell", args, {}, {}, shell=True)


def test_templates_fill_known_placeholders_only() -> None:
    commands = {"selfplay": ["{python}", "-m", "w", "--out", "{outputs_dir}", "{x}", "{}"]}
    values = {"python": "/usr/bin/python3", "outputs_dir": "/w/out"}
    argv = policy.build_argv("selfplay", {}, commands, values)
    assert argv == ["/usr/bin/python3", "-m", "w", "--out", "/w/out", "{x}", "{}"]


def test_unknown_type_has_no_command() -> None:
    with pytest.raises(CommandError, match="no command for job type train"):
        policy.build_argv("train", {}, {"selfplay": ["x"]}, {})


def test_a_job_gets_the_allow_listed_environment_only() -> None:
    agent = {
        "PATH": "/bin",
        "HOME": "/home/agent",
        "RINGMASTER_CREDENTIALS_FILE": "/run/secrets/nats-user",
        "RINGMASTER_NODE_AGENT_CREDENTIALS_FILE": "/run/secrets/node.user",
        "RINGMASTER_HTTP_TOKEN": "s3cret",
        "AWS_SECRET_ACCESS_KEY": "x",
        "MY_TOOL": "on",
    }
    assert policy.base_env(agent) == {"PATH": "/bin", "HOME": "/home/agent"}
    assert policy.base_env(agent, ["MY_TOOL"])["MY_TOOL"] == "on"


@pytest.mark.parametrize("name", ["RINGMASTER_TOKEN", "NATS_PASSWORD", "GH_TOKEN", "SSH_KEY"])
def test_job_env_refuses_secret_names(name: str) -> None:
    with pytest.raises(ConfigError, match="looks like a secret"):
        convert_config(NodeAgentConfig, {"job_env": [name]})


def test_job_env() -> None:
    env = policy.job_env(job_id="j1", attempt=2, args={"n": 3}, inputs_dir="/i", outputs_dir="/o")
    assert env["RINGMASTER_JOB_ID"] == "j1"
    assert env["RINGMASTER_JOB_ATTEMPT"] == "2"
    assert json.loads(env["RINGMASTER_JOB_ARGS"]) == {"n": 3}
    assert env["RINGMASTER_INPUTS_DIR"] == "/i"
    assert env["RINGMASTER_OUTPUTS_DIR"] == "/o"


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("games.npz", True),
        ("data/part-1.bin", True),
        ("", False),
        (".", False),
        ("../x", False),
        ("a/../../x", False),
        ("/etc/passwd", False),
        ("a\\b", False),
    ],
)
def test_safe_relative_names(name: str, ok: bool) -> None:
    assert policy.safe_relative_name(name) is ok


def test_failure_message_keeps_the_tail_bounded() -> None:
    assert policy.failure_message(3, []) == "exit code 3"
    msg = policy.failure_message(1, ["Traceback", "ValueError: bad\n"])
    assert msg == "exit code 1: Traceback\nValueError: bad"
    long = policy.failure_message(1, ["x" * 5000], limit=100)
    assert long.startswith("exit code 1: ...") and len(long) < 130


def test_kv_put_when_changed_or_stale() -> None:
    assert policy.kv_put_due(now=0.0, last_put_at=None, changed=False, refresh_s=10.0)
    assert not policy.kv_put_due(now=5.0, last_put_at=0.0, changed=False, refresh_s=10.0)
    assert policy.kv_put_due(now=5.0, last_put_at=0.0, changed=True, refresh_s=10.0)
    assert policy.kv_put_due(now=10.0, last_put_at=0.0, changed=False, refresh_s=10.0)
