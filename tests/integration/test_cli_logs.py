"""``ringmaster --version`` and ``ringmaster logs`` against a real nats-server.

Service logs go through ``P_LOGS``; a job's stdout and stderr through a real node
agent running a real process, kept as a blob per attempt.
"""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path

import anyio
import pytest

import shared
from services.job_manager.service import JobManagerService
from services.node_agent.service import NodeAgentService
from shared.cli import main
from shared.config import BaseConfig
from shared.logstream import LogEntry
from shared.service import Service
from shared.testing.builders import shell_agent
from shared.testing.fixtures import ServiceFactory
from shared.testing.helpers import eventually
from shared.testing.procs import Lines, spawn

pytestmark = pytest.mark.anyio

log = logging.getLogger("ringmaster.test.logs")


class Chatty(Service[BaseConfig]):
    """A service whose log lines the tests look for."""

    name = "chatty"
    description = "logs for the logs tests"


async def cli(*argv: str) -> int:
    """``ringmaster *argv`` in a worker thread (each command runs its own event loop)."""
    return await anyio.to_thread.run_sync(main, list(argv))


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"ringmaster {shared.__version__}"


async def test_service_logs_tail_level_and_instance(
    start_service: ServiceFactory,
    nats_url: str,
    prefix: str,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ringmaster")
    await start_service(JobManagerService)
    common = ["--nats-url", nats_url, "--prefix", prefix]

    async def ready_logged() -> bool:
        code = await cli("logs", "job_manager", *common)
        return code == 0 and " ready" in capsys.readouterr().out

    await eventually(ready_logged, what="job_manager's 'ready' line in P_LOGS")

    svc = await start_service(Chatty)

    async def fail() -> None:
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("it went wrong")

    # Logged from tasks of the service, as its handlers would: tagged with its name.
    svc.spawn(fail)
    for number in range(5):
        svc.spawn(lambda n=number: _info(f"line {n}"))  # type: ignore[misc]

    async def all_there() -> bool:
        await cli("logs", "chatty", *common, "--json", "--tail", "100")
        entries = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        return sum(e["message"].startswith("line ") for e in entries) == 5

    await eventually(all_there, what="five lines of chatty")
    assert await cli("logs", "chatty", *common, "--tail", "2") == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[-1].endswith("ringmaster.test.logs: line 4")
    assert f"INFO chatty/{svc.instance} " in out[-1]

    assert await cli("logs", "chatty", *common, "--level", "error", "--json") == 0
    (only,) = [LogEntry(**json.loads(x)) for x in capsys.readouterr().out.splitlines()]
    assert only.message == "it went wrong" and "ValueError: boom" in only.exception
    assert await cli("logs", "chatty", *common, "--instance", svc.instance, "--tail", "1") == 0
    assert capsys.readouterr().out.count("\n") == 1
    # The other service's lines stayed out of chatty's stream, and the reverse.
    assert await cli("logs", "job_manager", *common, "--tail", "1000") == 0
    assert "line 4" not in capsys.readouterr().out
    details = svc.health_check().details["framework"]["logs"]
    assert details["published"] >= 6 and details["dropped_full"] == 0


async def _info(text: str) -> None:
    log.info("%s", text)


async def test_logs_follow_prints_new_records_until_interrupted(
    start_service: ServiceFactory, nats_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ringmaster")
    await start_service(Chatty)  # so that P_LOGS exists and chatty has records
    argv = ["logs", "chatty", "-f", "--tail", "0", "--nats-url", nats_url, "--prefix", prefix]
    async with spawn(*argv) as proc:
        await Lines(proc.stderr).until("following")
        second = await start_service(Chatty)
        out = Lines(proc.stdout)
        await out.until(rf"chatty/{second.instance} ringmaster.service: chatty \S+ ready")
        proc.send_signal(signal.SIGINT)
        assert await proc.wait() == 0


async def test_logs_bad_input_is_one_line_with_its_code(
    start_service: ServiceFactory, nats_url: str, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--nats-url", nats_url, "--prefix", prefix]
    await start_service(Chatty)
    assert await cli("logs", "no_such_service", *common) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown service 'no_such_service'" in err[0]
    assert await cli("logs", "no_such_service", "-f", *common) == 2  # nothing to wait for
    assert "unknown service" in capsys.readouterr().err
    # A real service that has logged nothing (here: never ran) is not a usage error.
    assert await cli("logs", "sync_planner", *common) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no log records from sync_planner" in err[0]
    assert await cli("logs", "chatty", "--instance", "a.b", *common) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


async def test_job_logs_of_every_attempt_through_a_real_node_agent(
    start_service: ServiceFactory,
    nats_url: str,
    prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await start_service(JobManagerService, retry_base_s=0.1, retry_max_s=0.2)
    await start_service(NodeAgentService, **shell_agent(tmp_path / "node", "logs-node", slots=1))
    common = ["--nats-url", nats_url, "--prefix", prefix]
    script = 'echo "out $RINGMASTER_JOB_ATTEMPT"; echo "err $RINGMASTER_JOB_ATTEMPT" >&2; exit 3'
    submit = ["submit", *common, "--capability", "shell", "--pooled", "--max-attempts", "2"]
    assert await cli(*submit, "--wait", "--json", "--", "sh", "-c", script) == 1
    record = json.loads(capsys.readouterr().out)
    assert record["state"] == "FAILED" and record["attempt"] == 2
    job = record["job_id"]

    assert await cli("logs", *common, "--job", job) == 0
    out = capsys.readouterr().out
    assert f"job {job} attempt 2 on logs-node, exit code 3" in out
    assert "==> stdout (6 bytes) <==\nout 2\n" in out
    assert "==> stderr (6 bytes) <==\nerr 2\n" in out
    # The first attempt's logs are found through its JOB_LOGS_STORED event.
    assert await cli("logs", *common, "--job", job, "--attempt", "1", "--json") == 0
    first = json.loads(capsys.readouterr().out)
    assert first["attempt"] == 1 and first["stdout"]["head"] == "out 1\n"

    # A job that succeeds keeps its logs too, next to its outputs.
    ok = "echo hello; echo warn >&2"
    assert await cli("submit", *common, "--capability", "shell", "--pooled", "--wait",
                     "--json", "--", "sh", "-c", ok) == 0  # fmt: skip
    done = json.loads(capsys.readouterr().out)
    assert done["result"]["logs"]["name"] == "logs.json"
    assert await cli("logs", *common, "--job", done["job_id"]) == 0
    assert "\nhello\n" in capsys.readouterr().out

    # Bad input: no such job, an attempt it never had, a job that never ran.
    assert await cli("logs", *common, "--job", "nope") == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert await cli("logs", *common, "--job", job, "--attempt", "5") == 1
    assert "has had 2 attempts" in capsys.readouterr().err
    pinned = ["submit", *common, "--node", "absent-node", "--json", "--", "true"]
    assert await cli(*pinned) == 0
    waiting = json.loads(capsys.readouterr().out)["job_id"]
    assert await cli("logs", *common, "--job", waiting) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has not run yet" in err[0] and "no logs" in err[0]


async def test_records_a_closed_connection_refuses_are_counted(nats_url: str) -> None:
    import nats

    from shared.logstream import BusLogHandler, LogPublisher

    handler = BusLogHandler(
        owner=None, service="s", instance="i", host="h", pid=1, level="INFO", capacity=10
    )
    record = logging.LogRecord("ringmaster.x", logging.INFO, __file__, 1, "lost %d", (1,), None)
    handler.handle(record)
    handler.handle(record)
    client = await nats.connect(nats_url)
    await client.close()  # every publish from now on is refused by the client
    publisher = LogPublisher(client, "unused.log.s.i", handler)
    await publisher.publish_queued()
    details = handler.details()
    assert details["dropped_publish"] == 2 and details["published"] == 0
    assert "ConnectionClosedError" in details["last_error"]
