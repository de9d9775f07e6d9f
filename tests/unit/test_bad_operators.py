"""Bad operators: malformed arguments and config files get one clear line and a non-zero exit.

The subcommands, their typed options and the services are read from the parser and
the ``services`` package, so a new command or service is covered without a change here.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest

from shared.cli import COMMANDS, build_parser, main
from shared.cli.service import known_services

SERVICES = known_services()


def _children(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[Any] | None:
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    """Every command that runs, by its words: ``status``, ``jobs``, ``jobs inspect``, ...

    A command whose verb is required is only reached through its verbs.
    """
    found: dict[str, argparse.ArgumentParser] = {}

    def walk(path: str, parser: argparse.ArgumentParser) -> None:
        children = _children(parser)
        if children is None or not children.required:
            found[path] = parser
        for name, child in (children.choices if children else {}).items():
            walk(f"{path} {name}".strip(), child)

    for name, child in _children(build_parser()).choices.items():  # type: ignore[union-attr]
        walk(name, child)
    return found


def _typed_options() -> list[tuple[str, str]]:
    """(command, option) for every option of every subcommand that converts its value."""
    found = []
    for command, sub in _subparsers().items():
        for action in sub._actions:
            converts = action.type is not None and action.type is not str
            if converts and action.option_strings and action.type is not Path:
                found.append((command, action.option_strings[-1]))
    return found


def _positionals(command: str) -> list[str]:
    """The command's words and acceptable values for its required positional arguments."""
    values = command.split()
    for action in _subparsers()[command]._actions:
        if action.option_strings or action.nargs in ("?", "*", argparse.REMAINDER):
            continue
        if isinstance(action, argparse._SubParsersAction):
            continue  # optional verbs: the command runs without one
        if command == "service":  # the rest goes to the service's own parser
            values.append(SERVICES[0])
        else:
            values.append(sorted(action.choices)[0] if action.choices else "x")
    return values


def test_every_subcommand_is_covered() -> None:
    assert {command.split()[0] for command in _subparsers()} == set(COMMANDS)
    assert len(_typed_options()) >= 5


@pytest.mark.parametrize("command", sorted(_subparsers()))
def test_an_unknown_option_exits_2_with_usage(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    argv = [*_positionals(command), "--no-such-option"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ringmaster")
    last = err.strip().splitlines()[-1]
    assert "error: unrecognized arguments: --no-such-option" in last


@pytest.mark.parametrize(("command", "option"), _typed_options())
def test_a_malformed_option_value_exits_2_naming_the_option(
    capsys: pytest.CaptureFixture[str], command: str, option: str
) -> None:
    argv = [*_positionals(command), option, "not-a-value"]
    assert main(argv) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"ringmaster {command}: error: argument {option}")


# -- services with a bad config -------------------------------------------------------


def _bounded_field(name: str) -> tuple[str, object]:
    """A numeric field of the service's config with a lower bound, and a value below it."""
    from chaos.listeners import service_class

    info = mi.type_info(service_class(name).config_type)
    assert isinstance(info, mi.StructType)
    for field in info.fields:
        tp = field.type
        if isinstance(tp, (mi.IntType, mi.FloatType)) and (tp.ge is not None or tp.gt is not None):
            low = tp.ge if tp.ge is not None else tp.gt
            assert low is not None
            return field.name, low - 1
    raise AssertionError(f"{name}: no bounded field")


def _one_error_line(capsys: pytest.CaptureFixture[str], service: str) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith(f"ringmaster service {service}: "), err[0]
    return err[0]


def _run(service: str, config: Path) -> int:
    return main(["service", service, "--config", str(config)])


@pytest.mark.parametrize("service", SERVICES)
def test_a_config_file_with_an_unknown_field_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, service: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text("beacon_intervall = 1.0\n")
    assert _run(service, path) == 2
    assert "beacon_intervall" in _one_error_line(capsys, service)


@pytest.mark.parametrize("service", SERVICES)
def test_a_config_file_with_a_wrong_type_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, service: str
) -> None:
    field, _ = _bounded_field(service)
    path = tmp_path / "c.toml"
    path.write_text(f'{field} = "plenty"\n')
    assert _run(service, path) == 2
    line = _one_error_line(capsys, service)
    assert field in line and str(path) in line


@pytest.mark.parametrize("service", SERVICES)
def test_a_config_value_out_of_range_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, service: str
) -> None:
    field, value = _bounded_field(service)
    path = tmp_path / "c.toml"
    path.write_text(f"{field} = {msgspec.json.encode(value).decode()}\n")
    assert _run(service, path) == 2
    assert field in _one_error_line(capsys, service)


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("problem", ["missing", "directory", "not_toml", "unreadable"])
def test_an_unreadable_config_file_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, service: str, problem: str
) -> None:
    path = tmp_path / "c.toml"
    if problem == "directory":
        path.mkdir()
    elif problem == "not_toml":
        path.write_text("beacon_interval = = 1\n")
    elif problem == "unreadable":
        path.write_bytes(b"\xff\xfe\x00 not utf-8")
    assert _run(service, path) == 2
    assert str(path) in _one_error_line(capsys, service)


@pytest.mark.parametrize("service", SERVICES)
def test_a_bad_environment_value_exits_2_naming_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, service: str
) -> None:
    field, value = _bounded_field(service)
    var = f"RINGMASTER_{service.upper()}_{field.upper()}"
    monkeypatch.setenv(var, str(value))
    assert main(["service", service]) == 2
    assert var in _one_error_line(capsys, service)


def test_a_cluster_file_that_is_not_utf8_exits_2_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "ringmaster.toml"
    path.write_bytes(b"[cluster]\nprefix = '\xff\xfe'\n")
    assert main(["up", "--cluster", str(path), "--no-live"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ringmaster up: error: cluster file ")
    assert not (tmp_path / ".ringmaster").exists()  # nothing was started
