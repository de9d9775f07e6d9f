"""``ringmaster submit``, ``jobs``, ``cancel`` and ``state`` against real services."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import anyio
import pytest
from nats.aio.client import Client

from services.job_manager.service import JobManagerService
from services.node_agent.service import NodeAgentService
from shared.cli import main
from shared.testing.builders import shell_agent
from shared.testing.fixtures import ServiceFactory
from shared.testing.helpers import eventually

pytestmark = pytest.mark.anyio


async def cli(*argv: str) -> int:
    """``ringmaster *argv`` in a worker thread (each command runs its own event loop)."""
    return await anyio.to_thread.run_sync(main, list(argv))


async def test_submit_wait_list_cancel_and_state_round_trip(
    start_service: ServiceFactory,
    nats_url: str,
    prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    nc: Client,
) -> None:
    await start_service(JobManagerService)
    await start_service(NodeAgentService, **shell_agent(tmp_path / "node", "cli-node", slots=2))
    common = ["--nats-url", nats_url, "--prefix", prefix]
    source = tmp_path / "in.txt"
    source.write_text("hello")
    script = 'tr a-z A-Z < "$RINGMASTER_INPUTS_DIR/in.txt" > "$RINGMASTER_OUTPUTS_DIR/out.txt"'
    code = await cli(
        "submit",
        *common,
        "--capability",
        "shell",
        "--pooled",
        "--wait",
        "--input",
        str(source),
        "--json",
        "--",
        "sh",
        "-c",
        script,
    )
    record = json.loads(capsys.readouterr().out)
    assert code == 0 and record["state"] == "COMPLETED"
    (output,) = record["result"]["outputs"]
    blob = await (await nc.jetstream().object_store(f"{prefix}_data")).get(output["sha256"])
    assert blob.data == b"HELLO"

    assert (
        await cli(
            "submit", *common, "--capability", "shell", "--pooled", "--json", "--", "sleep", "60"
        )
        == 0
    )
    long_job = json.loads(capsys.readouterr().out)["job_id"]

    async def running() -> bool:
        await cli("jobs", *common, "--state", "RUNNING", "--json")
        listed = json.loads(capsys.readouterr().out)
        return any(j["job_id"] == long_job for j in listed["jobs"])

    await eventually(running, what="the long job RUNNING")
    assert await cli("cancel", *common, long_job) == 0
    assert f"{long_job} CANCELLED" in capsys.readouterr().out
    assert await cli("cancel", *common, long_job) == 1  # already terminal: a 409, one line
    assert "409" in capsys.readouterr().err

    snapshot = tmp_path / "state.json"
    assert await cli("state", *common, "export", str(snapshot)) == 0
    exported = json.loads(snapshot.read_text())
    assert record["job_id"] in exported["buckets"]["jobs"]
    assert await cli("state", *common, "import", str(snapshot)) == 1  # running: refused
    assert "cluster is running (job_manager/" in capsys.readouterr().err
    assert await cli("state", *common, "import", "--force", str(snapshot)) == 0
    assert "imported " in capsys.readouterr().out
    other = prefix + "b"  # a second cluster: the prefix fixture deletes it with its own
    # One record that is not its bucket's Struct spoils the file: nothing is written.
    bad = json.loads(snapshot.read_text())
    bad["buckets"]["jobs"][record["job_id"]] = base64.b64encode(b'{"state": 7}').decode()
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    other_args = ["state", "--nats-url", nats_url, "--prefix", other]
    assert await cli(*other_args, "import", str(tmp_path / "bad.json")) == 2
    err = capsys.readouterr().err
    assert f"bad.json: nothing imported; jobs/{record['job_id']}: " in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert await cli(*other_args, "import", str(snapshot)) == 0
    out = capsys.readouterr().out
    assert out.startswith("imported ") and f"jobs {len(exported['buckets']['jobs'])}" in out
    assert (
        await cli(
            "state",
            "--nats-url",
            nats_url,
            "--prefix",
            other,
            "export",
            str(tmp_path / "again.json"),
        )
        == 0
    )
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["buckets"]["jobs"] == exported["buckets"]["jobs"]


def test_bad_submit_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["submit", "--arg", "novalue", "--", "true"]) == 2
    assert main(["submit", "--timeout", "-1", "--", "true"]) == 2
    assert "usage" in capsys.readouterr().err
