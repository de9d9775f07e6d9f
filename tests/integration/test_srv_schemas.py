"""``$SRV`` replies against the io.nats.micro.v1 schemas, and shared.srv's lenient decoders.

The test run's real nats-server (shared/testing) answers. A nats-py micro service configured the way
Ringmaster configures one (a description, metadata, a stats handler returning a dict)
must answer PING, INFO and STATS with replies that validate against
``tests/schemas/micro/v1/*.json``; the same service with nats-py's defaults must not
(``description: null``, ``data: null``), which is the pitfall recorded in DESIGN.md.
The lenient decoders must read both, and replies shaped like a Go service's.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import nats
import pytest
from jsonschema.protocols import Validator
from nats.aio.client import Client
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import Service

from shared.config import BaseConfig
from shared.contracts import Empty
from shared.service import Service as RingmasterService
from shared.srv import (
    SrvInfo,
    SrvPing,
    SrvStats,
    decode_info,
    decode_ping,
    decode_stats,
    discover,
    srv_subject,
)
from shared.testing.fixtures import ServiceFactory

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "tests" / "schemas" / "micro" / "v1"
GUARD = 10.0  # ceiling so a broken server fails the test instead of hanging it

# ---------------------------------------------------------------------------- schemas

# jsonschema checks "date-time" only with an optional extra installed; RFC 3339 here.
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("date-time")
def _is_rfc3339(value: object) -> bool:
    if not isinstance(value, str):
        return True  # format applies to strings only
    if not _RFC3339.match(value):
        return False
    datetime.strptime(value[:19], "%Y-%m-%dT%H:%M:%S")  # ranges: month 13 raises
    return True


def validator(kind: str) -> Validator:
    schema = json.loads((SCHEMAS / f"{kind}_response.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    v: Validator = cls(schema, format_checker=FORMATS)
    return v


VALIDATORS = {kind: validator(kind) for kind in ("ping", "info", "stats")}
DECODERS: dict[str, Callable[[bytes], SrvPing | SrvInfo | SrvStats]] = {
    "ping": decode_ping,
    "info": decode_info,
    "stats": decode_stats,
}


def errors_of(kind: str, reply: dict[str, Any]) -> list[tuple[list[str | int], str]]:
    """(path, failed keyword) of every schema violation, sorted."""
    found = VALIDATORS[kind].iter_errors(reply)
    return sorted(([*e.absolute_path], str(e.validator)) for e in found)


# ------------------------------------------------------------------------- the server


@asynccontextmanager
async def connected(url: str) -> AsyncIterator[Client]:
    nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
    try:
        yield nc
    finally:
        await nc.close()


async def echo(req: Request) -> None:
    await req.respond(req.data)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def ringmaster_style(nc: Client, name: str) -> Service:
    """A service set up as DESIGN.md asks: description and a dict-returning stats handler."""
    svc = await add_service(
        nc,
        name=name,
        version="1.0.0",
        description="schema check service",
        metadata={"role": "test", "host": "localhost"},
        stats_handler=lambda ep: {"x": 1},
    )
    await svc.add_endpoint(name="echo", subject=f"{name}.echo", handler=echo, metadata={"k": "v"})
    return svc


# ---------------------------------------------------------------- replies over the bus


@pytest.mark.anyio
@pytest.mark.parametrize("verb", ["PING", "INFO", "STATS"])
async def test_configured_service_replies_validate_and_decode(nats_url: str, verb: str) -> None:
    name = unique("schema")
    async with connected(nats_url) as nc:
        svc = await ringmaster_style(nc, name)
        try:
            assert (await nc.request(f"{name}.echo", b"hi", timeout=GUARD)).data == b"hi"
            replies = await discover(nc, verb, name, timeout=GUARD, expected=1)
        finally:
            await svc.stop()

    assert len(replies) == 1
    kind = verb.lower()
    reply = json.loads(replies[0])
    assert errors_of(kind, reply) == []
    decoded = DECODERS[kind](replies[0])
    assert (decoded.name, decoded.id, decoded.version) == (name, svc.id, "1.0.0")
    assert decoded.type == f"io.nats.micro.v1.{kind}_response"
    assert decoded.metadata == {"role": "test", "host": "localhost"}
    if isinstance(decoded, SrvInfo):
        assert decoded.description == "schema check service"
        [ep] = decoded.endpoints
        assert (ep.name, ep.subject, ep.queue_group, ep.metadata) == (
            "echo",
            f"{name}.echo",
            "q",
            {"k": "v"},
        )
    if isinstance(decoded, SrvStats):
        assert _RFC3339.match(decoded.started)
        [st] = decoded.endpoints
        assert (st.name, st.num_requests, st.num_errors, st.last_error) == ("echo", 1, 0, "")
        assert st.processing_time >= st.average_processing_time >= 0
        assert st.data == {"x": 1}


@pytest.mark.anyio
async def test_nats_py_defaults_break_the_schemas(nats_url: str) -> None:
    """No description and no stats handler: INFO and STATS replies fail validation."""
    name = unique("bare")
    async with connected(nats_url) as nc:
        svc = await add_service(nc, name=name, version="1.0.0")
        await svc.add_endpoint(name="echo", handler=echo)
        try:
            ping, info, stats = [
                (await discover(nc, verb, name, timeout=GUARD, expected=1))[0]
                for verb in ("PING", "INFO", "STATS")
            ]
        finally:
            await svc.stop()

    assert json.loads(info)["description"] is None
    assert json.loads(stats)["endpoints"][0]["data"] is None
    assert errors_of("ping", json.loads(ping)) == []
    assert errors_of("info", json.loads(info)) == [(["description"], "type")]
    assert errors_of("stats", json.loads(stats)) == [(["endpoints", 0, "data"], "type")]
    # the lenient decoders still read them
    assert decode_info(info).description is None
    assert decode_info(info).endpoints[0].metadata is None
    assert decode_stats(stats).endpoints[0].data is None


@pytest.mark.anyio
async def test_discover_gathers_every_instance(nats_url: str) -> None:
    name = unique("pair")
    async with connected(nats_url) as nc:
        first, second = await ringmaster_style(nc, name), await ringmaster_style(nc, name)
        try:
            started = time.monotonic()
            early = await discover(nc, "PING", name, timeout=GUARD, expected=2)
            early_took = time.monotonic() - started
            window = await discover(nc, "INFO", name, timeout=0.3)
            everyone = await discover(nc, "PING", timeout=0.3)
        finally:
            await first.stop()
            await second.stop()

    assert early_took < GUARD / 2  # returned on the second reply, not at the timeout
    ids = {first.id, second.id}
    assert {decode_ping(r).id for r in early} == ids
    assert {decode_info(r).id for r in window} == ids
    assert ids <= {decode_ping(r).id for r in everyone}


@pytest.mark.anyio
async def test_discover_no_responders_returns_empty_at_once(nats_url: str) -> None:
    async with connected(nats_url) as nc:
        started = time.monotonic()
        assert await discover(nc, "STATS", unique("nobody"), timeout=GUARD) == []
        assert time.monotonic() - started < GUARD / 2


# ----------------------------------------------------------- Go-shaped replies, offline

GO_PING = {
    "name": "orders",
    "id": "kExStFHqQ8w3vJ1nT2aBcd",
    "version": "1.2.0",
    "metadata": {},
    "type": "io.nats.micro.v1.ping_response",
}
GO_INFO = {
    **GO_PING,
    "type": "io.nats.micro.v1.info_response",
    "metadata": None,
    "description": "",
    "endpoints": [{"name": "add", "subject": "orders.add", "queue_group": "q", "metadata": None}],
    "api_level": 2,  # an unknown field from a newer implementation
}
GO_STATS_ENDPOINT = {  # Go omits "data" when there is no stats handler
    "name": "add",
    "subject": "orders.add",
    "queue_group": "q",
    "num_requests": 12,
    "num_errors": 1,
    "last_error": "500:boom",
    "processing_time": 1_500_000,
    "average_processing_time": 125_000,
    "extra": [1, 2],
}
GO_STATS = {
    **GO_PING,
    "type": "io.nats.micro.v1.stats_response",
    "started": "2024-05-01T10:00:00.123456789Z",
    "endpoints": [GO_STATS_ENDPOINT],
}


def test_go_shaped_replies_validate_and_decode() -> None:
    for kind, reply in (("ping", GO_PING), ("info", GO_INFO), ("stats", GO_STATS)):
        assert errors_of(kind, reply) == [], kind
    info = decode_info(json.dumps(GO_INFO).encode())
    assert (info.metadata, info.description, info.endpoints[0].metadata) == (None, "", None)
    stats = decode_stats(json.dumps(GO_STATS).encode())
    ep = stats.endpoints[0]
    assert (ep.num_requests, ep.last_error, ep.data) == (12, "500:boom", None)
    assert stats.started == "2024-05-01T10:00:00.123456789Z"


def test_lenient_decoders_default_what_is_missing() -> None:
    minimal = b'{"name": "svc", "id": "abc"}'
    assert decode_ping(minimal) == SrvPing(name="svc", id="abc")
    info = decode_info(minimal)
    assert (info.version, info.description, info.metadata, info.endpoints) == ("", None, None, [])
    stats = decode_stats(b'{"name":"svc","id":"abc","endpoints":[{"name":"e","data":7}]}')
    assert (stats.started, stats.endpoints[0].num_requests, stats.endpoints[0].data) == ("", 0, 7)
    # a handler may return any JSON value; it is kept, and the schema wants an object
    assert errors_of("stats", {**GO_STATS, "endpoints": [{**GO_STATS_ENDPOINT, "data": 7}]})


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"not json", msgspec.DecodeError),
        (b'{"name": "svc"', msgspec.DecodeError),
        (b"[]", msgspec.ValidationError),
        (b'{"name": "svc"}', msgspec.ValidationError),  # no id
        (b'{"name": "svc", "id": 5}', msgspec.ValidationError),
        (b'{"name": "svc", "id": "a", "metadata": {"k": 1}}', msgspec.ValidationError),
        (b'{"name": "svc", "id": "a", "endpoints": {"name": "e"}}', msgspec.ValidationError),
    ],
)
def test_lenient_decoders_reject_garbage(payload: bytes, error: type[Exception]) -> None:
    decoders: list[Callable[[bytes], object]] = [decode_ping, decode_info, decode_stats]
    if b"endpoints" in payload:
        decoders = [decode_info, decode_stats]  # PING ignores endpoints
    for decode in decoders:
        with pytest.raises(error):
            decode(payload)


def test_schemas_reject_what_upstream_rejects() -> None:
    assert errors_of("ping", {**GO_PING, "version": "v1.2.0"}) == [(["version"], "pattern")]
    assert errors_of("ping", {**GO_PING, "type": "io.nats.micro.v1.info_response"}) == [
        (["type"], "const")
    ]
    assert errors_of("ping", {k: v for k, v in GO_PING.items() if k != "id"}) == [([], "required")]
    assert errors_of("info", {k: v for k, v in GO_INFO.items() if k != "description"}) == [
        ([], "required")
    ]
    assert errors_of("info", {**GO_INFO, "endpoints": [{"name": "add"}]}) == [
        (["endpoints", 0], "required")
    ]
    assert errors_of("stats", {**GO_STATS, "started": "yesterday"}) == [(["started"], "format")]
    assert errors_of("stats", {**GO_STATS, "metadata": {"k": 1}}) == [(["metadata"], "oneOf")]


def test_srv_subject() -> None:
    assert srv_subject("PING") == "$SRV.PING"
    assert srv_subject("INFO", "orders") == "$SRV.INFO.orders"
    assert srv_subject("STATS", "orders", "abc") == "$SRV.STATS.orders.abc"
    for bad in (("ping",), ("HELLO",), ("PING", ""), ("PING", "a.b"), ("PING", None, "abc")):
        with pytest.raises(ValueError):
            srv_subject(*bad)


# ------------------------------------------------------------- Ringmaster's own services


class SchemaDemo(RingmasterService[BaseConfig]):
    """A framework service with one endpoint, to check what shared/micro.py answers."""

    name = "schema_demo"
    description = "checks the framework's micro replies"

    async def setup(self) -> None:
        async def echo_back(req: Empty) -> Empty:
            return req

        await self.add_endpoint("echo", Empty, echo_back)


@pytest.mark.anyio
@pytest.mark.parametrize("verb", ["PING", "INFO", "STATS"])
async def test_framework_service_replies_validate(
    start_service: ServiceFactory, nats_url: str, verb: str
) -> None:
    svc = await start_service(SchemaDemo)
    async with connected(nats_url) as nc:
        await nc.request(svc.subjects.api("schema_demo", "echo"), b"{}", timeout=GUARD)
        await nc.request(svc.subjects.api("schema_demo", "echo"), b"not json", timeout=GUARD)
        for level in (
            srv_subject(verb),
            srv_subject(verb, "schema_demo"),
            srv_subject(verb, "schema_demo", svc.instance),
        ):
            replies = [json.loads(r) for r in await discover_at(nc, level)]
            mine = [r for r in replies if r.get("id") == svc.instance]
            assert len(mine) == 1, level
            assert errors_of(verb.lower(), mine[0]) == []
    if verb == "STATS":
        echo_stats = next(e for e in mine[0]["endpoints"] if e["name"] == "echo")
        assert echo_stats["num_requests"] == 2
        assert echo_stats["num_errors"] == 1
        assert echo_stats["last_error"].startswith("400")


async def discover_at(nc: Client, subject: str) -> list[bytes]:
    """Every reply to one ``$SRV`` subject within a short window."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.publish(subject, b"", reply=inbox)
    found: list[bytes] = []
    try:
        while True:
            found.append((await sub.next_msg(timeout=0.3)).data)
    except TimeoutError:
        return found
    finally:
        await sub.unsubscribe()
