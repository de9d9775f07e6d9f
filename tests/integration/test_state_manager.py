"""The state manager on a real nats-server: provisioning, schema, snapshots, validation, API."""

from __future__ import annotations

import base64
import json
import sys
import time
from typing import Any

import anyio
import pytest
from nats.aio.client import Client
from nats.js.api import StreamInfo

from services.state_manager.config import StateManagerConfig
from services.state_manager.service import StateManagerService
from shared.codec import encode
from shared.config import convert_config
from shared.events import StateValidated, decode_data
from shared.jobs import JobRecord, JobSpec, JobState, NodeInfo
from shared.kv import bucket_config, ensure_bucket, read_all
from shared.provision import BUCKET_SPECS, provision_all
from shared.snapshot import (
    EPOCH_KEY,
    SCHEMA_VERSION,
    EpochRecord,
    SchemaError,
    Snapshot,
    SnapshotError,
    decode_snapshot,
    encode_snapshot,
    export_state,
    import_state,
)
from shared.subjects import Subjects
from shared.testing.builders import node_info as build_node
from shared.testing.fixtures import ServiceFactory
from shared.testing.helpers import eventually, stream_events

pytestmark = pytest.mark.anyio

MODULE = [sys.executable, "-m", "services.state_manager"]


def node_info(node_id: str) -> NodeInfo:
    return build_node(node_id, hostname=f"{node_id}.local", slots=2, free_slots=2, load_1m=0.5)


def job(job_id: str, state: JobState, node_id: str = "") -> JobRecord:
    now = time.time()
    return JobRecord(
        job_id=job_id,
        spec=JobSpec(type="selfplay"),
        state=state,
        node_id=node_id,
        submitted_at=now,
        updated_at=now,
    )


async def catalogue_infos(nc: Client, prefix: str) -> dict[str, StreamInfo]:
    subjects = Subjects(prefix)
    names = [subjects.events_stream, subjects.jobs_stream, f"OBJ_{subjects.data_store}"]
    names += [f"KV_{subjects.bucket(short)}" for short in BUCKET_SPECS]
    js = nc.jetstream()
    return {name: await js.stream_info(name) for name in names}


async def call(nc: Client, prefix: str, method: str, request: Any) -> tuple[int, Any]:
    """(code, decoded reply) of a state API call; code 200 when it is not an error."""
    subject = Subjects(prefix).api(StateManagerService.name, method)
    reply = await nc.request(subject, encode(request), timeout=5)
    code = int((reply.headers or {}).get("Nats-Service-Error-Code", 200))
    return code, json.loads(reply.data)


async def test_provisioning_twice_changes_nothing(
    start_service: ServiceFactory, nc: Client, prefix: str, nats_url: str
) -> None:
    await start_service(StateManagerService)
    before = await catalogue_infos(nc, prefix)
    # A second instance and a direct call both provision again; neither may change a thing.
    await start_service(StateManagerService)
    config = convert_config(
        StateManagerConfig,
        {"nats_url": nats_url, "prefix": prefix, "events_max_bytes": 16 << 20},
    )
    await provision_all(nc.jetstream(), Subjects(prefix), config)
    after = await catalogue_infos(nc, prefix)
    assert after.keys() == before.keys()
    for name, info in before.items():
        assert after[name].config == info.config, name
        assert after[name].created == info.created, name  # not deleted and re-created
    assert before[Subjects(prefix).events_stream].config.max_bytes == 16 << 20


async def test_export_then_import_into_a_fresh_prefix_round_trips(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    await start_service(StateManagerService)
    js, subjects = nc.jetstream(), Subjects(prefix)
    kv = {short: await js.key_value(subjects.bucket(short)) for short in BUCKET_SPECS}
    await kv["jobs"].put("j1", encode(job("j1", JobState.RUNNING, "n1")))
    await kv["jobs"].put("j2", encode(job("j2", JobState.PENDING)))
    await kv["jobs"].put("j2", encode(job("j2", JobState.COMPLETED)))  # latest value wins
    await kv["jobs"].put("gone", b"{}")
    await kv["jobs"].delete("gone")  # deleted keys are not state
    await kv["nodes"].put("n1", encode(node_info("n1")))
    await kv["models"].put("champion.3x3", b"\x00\xffnot json")
    await kv["scheduler"].put("weights", b'{"3x3": 1.0}')

    snapshot = decode_snapshot(encode_snapshot(await export_state(js, subjects)))
    assert snapshot.prefix == prefix and set(snapshot.buckets) == set(BUCKET_SPECS)
    assert "gone" not in snapshot.buckets["jobs"]

    target = Subjects(prefix + "b")  # deleted with the test's own prefix at teardown
    result = await import_state(js, target, snapshot)
    assert result.kept == 0 and result.written["jobs"] == 2
    for short in BUCKET_SPECS:
        source = await read_all(kv[short])
        copied = await read_all(await js.key_value(target.bucket(short)))
        if short == "state":
            source_epoch = EpochRecord(**json.loads(source.pop(EPOCH_KEY)[0]))
            new_epoch = EpochRecord(**json.loads(copied.pop(EPOCH_KEY)[0]))
            assert new_epoch.epoch == source_epoch.epoch + 1 == result.epoch == 2
        assert {k: v for k, (v, _) in copied.items()} == {k: v for k, (v, _) in source.items()}
    assert (await read_all(kv["models"]))["champion.3x3"][0] == b"\x00\xffnot json"


async def test_import_into_a_non_empty_cluster_needs_force(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    await start_service(StateManagerService)  # writes only schema and epoch
    js, subjects = nc.jetstream(), Subjects(prefix)
    value = base64.b64encode(encode(node_info("n9"))).decode()
    snapshot = Snapshot(
        prefix="elsewhere", created_at=time.time(), buckets={"nodes": {"n9": value}}
    )
    first = await import_state(js, subjects, snapshot)  # schema and epoch do not count
    assert first.epoch == 2
    with pytest.raises(SnapshotError, match=r"not empty: nodes \(1 keys\)"):
        await import_state(js, subjects, snapshot)
    jobs = await js.key_value(subjects.bucket("jobs"))
    await jobs.put("j1", encode(job("j1", JobState.PENDING)))
    forced = await import_state(js, subjects, snapshot, force=True)
    assert forced.epoch == 3 and forced.kept == 1  # j1 stays: an import never deletes
    assert set(await read_all(jobs)) == {"j1"}
    code, reply = await call(nc, prefix, "epoch", {})
    assert code == 200 and reply["epoch"] == 3


async def test_bad_snapshots_are_refused(nc: Client, prefix: str) -> None:
    with pytest.raises(SnapshotError, match="not a ringmaster snapshot"):
        decode_snapshot(b'{"format": 1}')
    with pytest.raises(SnapshotError, match="unknown buckets: nope"):
        decode_snapshot(b'{"prefix": "p", "created_at": 1, "buckets": {"nope": {}}}')
    schema = base64.b64encode(b'{"version": 7}').decode()
    future = Snapshot(prefix="p", created_at=1.0, buckets={"state": {"schema": schema}})
    with pytest.raises(SnapshotError, match="version 7 is not compatible"):
        await import_state(nc.jetstream(), Subjects(prefix), future)


async def test_an_incompatible_schema_stops_the_start(
    start_service: ServiceFactory, nc: Client, prefix: str, nats_url: str
) -> None:
    state = await ensure_bucket(nc.jetstream(), bucket_config(Subjects(prefix).bucket("state")))
    # A cluster written before the game rename (schema 1) is refused, not misread.
    await state.put("schema", b'{"version": 1}')
    with pytest.raises(SchemaError, match=r"schema version 1 is not compatible.*version 2"):
        await start_service(StateManagerService)
    # As a process: a non-zero exit naming both versions (2 once the runner unwraps the
    # task group's exception group; until then the line comes inside a traceback).
    result = await anyio.run_process(
        [*MODULE, "--nats-url", nats_url, "--prefix", prefix, "--connect-timeout", "5"],
        check=False,
    )
    assert result.returncode != 0
    assert b"schema version 1 is not compatible with this release's version 2" in result.stderr
    assert SCHEMA_VERSION == 2


async def test_validation_reports_unknown_nodes_and_undecodable_records(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    js, subjects = nc.jetstream(), Subjects(prefix)
    config = convert_config(StateManagerConfig, {"prefix": prefix})
    await provision_all(js, subjects, config)
    jobs = await js.key_value(subjects.bucket("jobs"))
    nodes = await js.key_value(subjects.bucket("nodes"))
    await nodes.put("n1", encode(node_info("n1")))
    await jobs.put("on-n1", encode(job("on-n1", JobState.RUNNING, "n1")))
    await jobs.put("on-ghost", encode(job("on-ghost", JobState.RUNNING, "ghost")))
    await jobs.put("done-on-ghost", encode(job("done-on-ghost", JobState.COMPLETED, "ghost")))
    await jobs.put("garbled", b"not json")
    await jobs.put("idem-0123", b'"on-n1"')  # the idempotency index is not a job record
    svc = await start_service(StateManagerService, validate_interval_s=0.2)

    async def validated() -> list[StateValidated]:
        events = await stream_events(nc, subjects.events_stream)
        found = [decode_data(e) for e in events if e.type == StateValidated.TYPE]
        return [d for d in found if isinstance(d, StateValidated)]

    report = (await eventually(validated, what="STATE_VALIDATED"))[0]
    assert report.records == 5
    assert len(report.problems) == 2
    assert "jobs/garbled: does not decode" in report.problems[0]
    assert report.problems[1].startswith("jobs/on-ghost: RUNNING on node 'ghost'")
    assert svc.custom_metrics()["state_problems"] == 2


async def test_state_api_get_list_and_errors(
    start_service: ServiceFactory, nc: Client, prefix: str
) -> None:
    await start_service(StateManagerService)
    js, subjects = nc.jetstream(), Subjects(prefix)
    nodes = await js.key_value(subjects.bucket("nodes"))
    revision = await nodes.put("n1", encode(node_info("n1")))
    await nodes.put("n2", encode(node_info("n2")))
    await nodes.put("x1", b"\x01\x02")

    code, got = await call(nc, prefix, "get", {"bucket": "nodes", "key": "n1"})
    assert code == 200 and got["revision"] == revision and got["encoding"] == "json"
    assert got["value"]["node_id"] == "n1" and got["value"]["slots"] == 2
    code, raw = await call(nc, prefix, "get", {"bucket": "nodes", "key": "x1"})
    assert code == 200 and raw["encoding"] == "base64" and raw["value"] == "AQI="
    code, missing = await call(nc, prefix, "get", {"bucket": "nodes", "key": "n7"})
    assert code == 404 and "n7" in missing["error"]["message"]
    code, _ = await call(nc, prefix, "get", {"bucket": "nope", "key": "n1"})
    assert code == 400

    code, listed = await call(nc, prefix, "list", {"bucket": "nodes", "prefix": "n"})
    assert code == 200 and listed == {"bucket": "nodes", "keys": ["n1", "n2"], "total": 2}
    code, limited = await call(nc, prefix, "list", {"bucket": "nodes", "limit": 1})
    assert limited["keys"] == ["n1"] and limited["total"] == 3
    code, empty = await call(nc, prefix, "list", {"bucket": "jobs"})
    assert code == 200 and empty["keys"] == []
    code, state = await call(nc, prefix, "list", {"bucket": "state"})
    assert state["keys"] == ["epoch", "schema"]
    code, epoch = await call(nc, prefix, "epoch", {})
    assert code == 200 and epoch["epoch"] == 1 and epoch["created_at"] > 0
