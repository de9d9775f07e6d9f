"""The ``ringmaster`` command line without a server: arguments, names, one-line errors."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from shared.cli import main
from shared.cli.process import Orchestrator, last_log_line
from shared.cli.scaffold import class_name, render
from shared.cli.service import known_services
from shared.cli.tables import changes, problems, service_rows, snapshot
from shared.contracts import (
    ChildView,
    ClusterStatus,
    InstanceView,
    Liveness,
    ServiceStatus,
)


def _error_line(capsys: pytest.CaptureFixture[str], command: str) -> str:
    """The one error line a failed command printed on stderr."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"ringmaster {command}: error: ")
    return err[0]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["launch"], "invalid choice: 'launch'"),
        (["status", "--bogus"], "unrecognized arguments: --bogus"),
        (["status", "--timeout", "soon"], "'soon' is not a number"),
        (["status", "--timeout", "0"], "'0' must be greater than 0"),
        (["status", "--connect-timeout", "-1"], "'-1' must be greater than 0"),
        (["probe"], "the following arguments are required: NAME"),
        (["watch", "--count", "-3"], "'-3' must be 0 or more"),
        (["nats-server", "--port", "70000"], "'70000' is not between 1 and 65535"),
        (["new-service"], "the following arguments are required: NAME"),
        (["service"], "the following arguments are required: NAME"),
    ],
)
def test_bad_arguments_exit_2_with_usage(
    capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ringmaster")
    assert expected in err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("up", "service", "status", "watch", "probe", "new-service", "nats-server"):
        assert command in out


def test_unknown_service_lists_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["service", "no_such_service", "--whatever"]) == 2
    line = _error_line(capsys, "service")
    assert "unknown service 'no_such_service'; known services: " in line
    for name in known_services():
        assert name in line


def test_service_arguments_go_to_the_service(capsys: pytest.CaptureFixture[str]) -> None:
    if "orchestrator" not in known_services():
        pytest.skip("services/orchestrator does not exist yet")
    assert main(["service", "orchestrator", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ringmaster service orchestrator")
    assert "--cluster-file" in out


def test_a_broken_service_fails_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import services

    package = tmp_path / "broken_cli_probe"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text("import no_such_module_for_the_cli_test\n")
    monkeypatch.setattr(services, "__path__", [*services.__path__, str(tmp_path)])
    try:
        assert main(["service", "broken_cli_probe"]) == 1
    finally:
        sys.modules.pop("services.broken_cli_probe", None)
    line = _error_line(capsys, "service")
    assert "cannot load services.broken_cli_probe" in line
    assert "no_such_module_for_the_cli_test" in line


@pytest.mark.parametrize(
    "name",
    [
        "Bad",
        "1widget",
        "demo-widget",
        "demo__widget",
        "_demo",
        "demo_",
        "class",
        "match",
        "a" * 29,
        "demo widget",
        "",
    ],
)
def test_invalid_new_service_names_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str
) -> None:
    (tmp_path / "services").mkdir()
    assert main(["new-service", name, "--dir", str(tmp_path)]) == 2
    assert "invalid service name" in _error_line(capsys, "new-service")
    assert list((tmp_path / "services").iterdir()) == []


def test_new_service_refuses_an_existing_name(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "services" / "demo_widget").mkdir(parents=True)
    assert main(["new-service", "demo_widget", "--dir", str(tmp_path)]) == 2
    assert "services/demo_widget already exists" in _error_line(capsys, "new-service")
    assert not (tmp_path / "tests").exists()


def test_new_service_needs_a_project_root(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["new-service", "demo_widget", "--dir", str(tmp_path)]) == 2
    assert "has no services/ directory" in _error_line(capsys, "new-service")


def test_new_service_writes_every_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "services").mkdir()
    assert main(["new-service", "demo_widget", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    expected = [
        "services/demo_widget/__init__.py",
        "services/demo_widget/__main__.py",
        "services/demo_widget/config.py",
        "services/demo_widget/service.py",
        "services/demo_widget/policy.py",
        "tests/unit/test_demo_widget_policy.py",
        "tests/integration/test_demo_widget.py",
    ]
    for path in expected:
        assert (tmp_path / path).is_file(), path
        assert f"created {tmp_path / path}" in out
    assert "[services.demo_widget]" in out
    service = (tmp_path / "services/demo_widget/service.py").read_text()
    assert "class DemoWidgetService(Service[DemoWidgetConfig]):" in service
    assert 'name = "demo_widget"' in service
    # A second run must not overwrite the first one's (possibly edited) files.
    assert main(["new-service", "demo_widget", "--dir", str(tmp_path)]) == 2


def test_templates_fill_every_placeholder() -> None:
    assert class_name("demo_widget") == "DemoWidget"
    assert class_name("x2_y") == "X2Y"
    for path, text in render("demo_widget").items():
        assert "${" not in text, path
        compile(text, path, "exec")  # every generated file is valid Python


def test_status_rejects_a_bad_prefix_before_connecting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["status", "--prefix", "a.b", "--nats-url", "nats://127.0.0.1:1"]
    assert main(argv) == 2
    assert "prefix" in _error_line(capsys, "status")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "No such file"),
        ("[cluster]\nbeacon_interval = -1\n", "cluster.beacon_interval"),
        ("[cluster]\nprefx = 'x'\n", "prefx"),
        ("[services.no_such_service]\n", "services.no_such_service: no such service"),
        ("[cluster\n", "cluster file"),
    ],
)
def test_up_with_a_bad_cluster_file_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str | None, expected: str
) -> None:
    path = tmp_path / "ringmaster.toml"
    if content is not None:
        path.write_text(content)
    assert main(["up", "--cluster", str(path), "--no-live"]) == 2
    line = _error_line(capsys, "up")
    assert expected in line
    assert str(path) in line
    assert not (tmp_path / ".ringmaster").exists()  # nothing was started


def _instance(service: str, status: ServiceStatus, liveness: Liveness) -> InstanceView:
    now = time.time()
    return InstanceView(
        service=service,
        instance=f"{service}-0",
        host="h",
        pid=10,
        version="1",
        status=status,
        liveness=liveness,
        healthy=True,
        started_at=now,
        last_seen=now,
        beacon_seq=1,
        interval_s=1.0,
    )


def _child(service: str, *, running: bool = True, gave_up: bool = False) -> ChildView:
    return ChildView(
        service=service,
        instance=f"{service}-0",
        restart="permanent",
        pid=20 if running else None,
        running=running,
        restarts=2,
        gave_up=gave_up,
        last_exit_code=None if running else 1,
    )


def _status(services: list[InstanceView], children: list[ChildView]) -> ClusterStatus:
    return ClusterStatus(
        prefix="p",
        orchestrator="o-1",
        generated_at=time.time(),
        services=services,
        children=children,
    )


def test_all_well_only_when_every_instance_runs_alive_and_no_child_gave_up() -> None:
    good = _status([_instance("a", ServiceStatus.RUNNING, Liveness.ALIVE)], [_child("a")])
    assert problems(good) == []
    for bad in (
        _status([_instance("a", ServiceStatus.DEGRADED, Liveness.ALIVE)], []),
        _status([_instance("a", ServiceStatus.RUNNING, Liveness.SUSPECT)], []),
        _status(
            [_instance("a", ServiceStatus.RUNNING, Liveness.ALIVE)],
            [_child("a", running=False, gave_up=True)],
        ),
        _status([], [_child("b", running=False)]),
    ):
        assert problems(bad), bad


def test_rows_merge_beacons_with_supervised_children() -> None:
    status = _status(
        [_instance("a", ServiceStatus.RUNNING, Liveness.ALIVE)],
        [_child("a"), _child("b", running=False, gave_up=True)],
    )
    rows = service_rows(status)
    assert [(r.service, r.status, r.restarts) for r in rows] == [
        ("a", "RUNNING", 2),
        ("b", "GAVE_UP", 2),
    ]
    # Each instance's version, from its beacon; a child without beacons has none.
    assert [r.version for r in rows] == ["1", ""]
    from rich.console import Console

    from shared.cli.tables import services_table

    console = Console(width=200, record=True)
    console.print(services_table(status))
    assert "version" in console.export_text()
    before = snapshot(status)
    after = snapshot(_status([_instance("a", ServiceStatus.ERROR, Liveness.ALIVE)], []))
    lines = changes(before, after)
    assert any(line.startswith("a/a-0: ERROR ALIVE") for line in lines)
    assert "b/b-0: gone" in lines


def test_last_log_line_finds_the_error_inside_an_exception_group(tmp_path: Path) -> None:
    log = tmp_path / "orchestrator-1.log"
    log.write_text(
        "2026-01-01 INFO orchestrator: starting\n"
        "  + Exception Group Traceback (most recent call last):\n"
        "  |   File 'x.py', line 3, in run\n"
        "  | OSError: [Errno 98] Address already in use\n"
        "  +------------------------------------\n"
    )
    assert last_log_line(log) == "OSError: [Errno 98] Address already in use"
    log.write_text("just a line\n\n")
    assert last_log_line(log) == "just a line"
    log.write_text("")
    assert last_log_line(log) == "(log empty)"
    assert last_log_line(tmp_path / "missing.log").startswith("(log unreadable")


def test_orchestrator_restart_delays_back_off_and_reset(tmp_path: Path) -> None:
    orch = Orchestrator({}, tmp_path / "o.log", cwd=tmp_path)
    orch.started_at = time.monotonic()
    delays = [orch.next_delay() for _ in range(8)]
    assert delays == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    orch.started_at = time.monotonic() - 120  # it had run stably before dying
    assert orch.next_delay() == 0.0


# -- logs, loops, scheduler, nodes, jobs verbs, watch --since, completion ---------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["logs"], "name a SERVICE (or --job ID)"),
        (["logs", "bad.name"], "SERVICE: 'bad.name' must be one token"),
        (["logs", "job_manager", "--instance", "a b"], "--instance: 'a b' must be one token"),
        (["logs", "job_manager", "--attempt", "2"], "--attempt goes with --job"),
        (["logs", "job_manager", "--job", "j1"], "--job takes no SERVICE"),
        (["logs", "--job", "j1", "-f"], "--job takes no SERVICE, --instance or --follow"),
        (["watch", "--since", "last week"], "--since 'last week': not a duration"),
        (["watch", "--since", "3000-01-01T00:00:00+00:00"], "is in the future"),
        (["scheduler", "override", "5x5k4"], "give either WEIGHT or --clear"),
        (["scheduler", "override", "5x5k4", "2", "--clear"], "give either WEIGHT or --clear"),
        (["scheduler", "override", "5x5k4", "-1"], "WEIGHT -1 must be 0 or more"),
        (["nodes", "drain", "no/such"], "NODE: 'no/such' must be one token"),
    ],
)
def test_bad_operator_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    # Caught before any connection: the URL below is never dialled.
    assert main([*argv, "--nats-url", "nats://127.0.0.1:1"]) == 2
    assert expected in _error_line(capsys, argv[0])


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["logs", "job_manager", "--level", "LOUD"], "invalid choice: 'LOUD'"),
        (["logs", "job_manager", "--tail", "-1"], "'-1' must be 0 or more"),
        (["loops"], "the following arguments are required: VERB"),
        (["loops", "pause"], "the following arguments are required: LOOP"),
        (["nodes", "drain"], "the following arguments are required: NODE"),
        (["jobs", "inspect"], "the following arguments are required: JOB_ID"),
        (["completion", "fish"], "invalid choice: 'fish'"),
    ],
)
def test_bad_verbs_and_options_exit_2_with_usage(
    capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ringmaster") and expected in err


def test_version_and_exit_codes_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    import shared

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"ringmaster {shared.__version__}\n"
    for argv in (["--help"], ["logs", "--help"], ["nodes", "drain", "--help"]):
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert "3  cannot reach the cluster" in out and "2  usage" in out


def test_options_before_a_verb_are_kept() -> None:
    from shared.cli import build_parser

    args = build_parser().parse_args(["loops", "--prefix", "p1", "list", "--timeout", "2"])
    assert args.prefix == "p1" and args.timeout == 2.0
    args = build_parser().parse_args(["loops", "list", "--prefix", "p2"])
    assert args.prefix == "p2"


def test_parse_since_durations_and_times() -> None:
    from datetime import UTC, datetime, timedelta

    from shared.cli.history import parse_since

    now = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    assert parse_since("90s", now) == now - timedelta(seconds=90)
    assert parse_since("10m", now) == now - timedelta(minutes=10)
    assert parse_since("1.5h", now) == now - timedelta(minutes=90)
    assert parse_since("2d", now) == now - timedelta(days=2)
    assert parse_since("2026-12-05T11:00:00Z", now) == now - timedelta(hours=1)


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_scripts_name_every_command_and_verb(
    capsys: pytest.CaptureFixture[str], shell: str
) -> None:
    import shutil
    import subprocess

    assert main(["completion", shell]) == 0
    script = capsys.readouterr().out
    for word in ('"logs"', '"loops pause"', '"jobs inspect"', "--since", "--version"):
        assert word in script
    if shell == "bash" and shutil.which("bash"):
        subprocess.run(["bash", "-n"], input=script, text=True, check=True)
