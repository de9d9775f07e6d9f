"""``ringmaster ctl`` against real services on a real nats-server."""

from __future__ import annotations

import anyio
import pytest

from shared.cli import main
from shared.config import BaseConfig
from shared.contracts import ServiceStatus
from shared.service import Service
from shared.testing.fixtures import ServiceFactory

pytestmark = pytest.mark.anyio


class Target(Service[BaseConfig]):
    """A plain service to send commands to."""

    name = "ctl_target"
    description = "a service the ctl tests command"


async def cli(*argv: str) -> int:
    return await anyio.to_thread.run_sync(main, list(argv))


async def test_pause_and_resume_every_instance(
    start_service: ServiceFactory, nats_url: str, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    first = await start_service(Target, instance="one")
    second = await start_service(Target, instance="two")
    common = ("--nats-url", nats_url, "--prefix", prefix)

    assert await cli("ctl", "ctl_target", "pause", "--reason", "maintenance", *common) == 0
    out = capsys.readouterr().out.splitlines()
    assert sorted(line.split(":")[0] for line in out) == ["ctl_target/one", "ctl_target/two"]
    assert first.paused and second.paused
    assert all(ServiceStatus.PAUSED in line for line in out)

    assert await cli("ctl", "ctl_target", "resume", "--instance", "two", *common) == 0
    assert capsys.readouterr().out.startswith("ctl_target/two: resume done, RUNNING")
    assert first.paused and not second.paused


async def test_a_refused_command_exits_1(
    start_service: ServiceFactory, nats_url: str, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await start_service(Target, instance="one")
    # Started in-process, the service has no config source to reload from: refused.
    code = await cli("ctl", "ctl_target", "reload", "--nats-url", nats_url, "--prefix", prefix)
    assert code == 1
    assert "refused" in capsys.readouterr().out


async def test_nobody_answering_is_one_line_and_exit_3(
    nats_url: str, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ("ctl", "absent", "stop", "--timeout", "0.3", "--nats-url", nats_url, "--prefix", prefix)
    assert await cli(*argv) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ringmaster ctl: error: no instance of absent answered within 0.3s"]


@pytest.mark.parametrize(
    "argv",
    [
        ("ctl",),
        ("ctl", "svc"),
        ("ctl", "svc", "explode"),
        ("ctl", "svc", "stop", "--timeout", "0"),
        ("ctl", "bad.name", "stop"),
    ],
)
def test_bad_arguments_exit_2(argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        code = main(list(argv))
        raise SystemExit(code)
    assert exited.value.code == 2
    assert "ringmaster ctl" in capsys.readouterr().err
