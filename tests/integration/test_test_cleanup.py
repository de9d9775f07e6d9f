"""The suite's own cleanup: a test's prefix goes at teardown, and a leftover fails the run."""

from __future__ import annotations

import nats
import pytest
from nats.js.api import KeyValueConfig, StreamConfig

from shared.embedded import EmbeddedServer
from shared.testing.cleanup import remove_prefix_streams, run_sync, stream_names
from shared.testing.server import check_nothing_left, new_prefix

pytestmark = pytest.mark.anyio


async def make_prefix(url: str, prefix: str) -> None:
    """A stream with a durable consumer, a bucket and an object store under ``prefix``."""
    client = await nats.connect(url, connect_timeout=5)
    try:
        js = client.jetstream()
        await js.add_stream(StreamConfig(name=f"{prefix}_EVENTS", subjects=[f"{prefix}.>"]))
        await js.pull_subscribe(f"{prefix}.x", durable="reader", stream=f"{prefix}_EVENTS")
        await js.create_key_value(KeyValueConfig(bucket=f"{prefix}_jobs"))
        await js.create_object_store(f"{prefix}_data")
    finally:
        await client.close()


async def test_a_prefix_and_its_extensions_go_and_no_other(nats_server: EmbeddedServer) -> None:
    mine, theirs = new_prefix(), new_prefix()
    for prefix in (mine, mine + "b", theirs):
        await make_prefix(nats_server.url, prefix)

    removed = await remove_prefix_streams(nats_server.url, mine)

    assert len(removed) == 6  # three kinds, for the prefix and its extension
    left = await stream_names(nats_server.url)
    assert sorted(left) == sorted([f"{theirs}_EVENTS", f"KV_{theirs}_jobs", f"OBJ_{theirs}_data"])
    assert left[f"{theirs}_EVENTS"] == 1  # the consumer of another prefix is untouched


def test_the_session_check_names_what_was_left_and_removes_it(
    nats_server: EmbeddedServer,
) -> None:
    url, prefix = nats_server.url, new_prefix()
    run_sync(lambda: make_prefix(url, "before"))
    before = run_sync(lambda: stream_names(url))
    run_sync(lambda: make_prefix(url, prefix))

    with pytest.raises(AssertionError) as failed:
        check_nothing_left(url, before)

    assert f"{prefix}_EVENTS (1 consumers)" in str(failed.value)
    assert f"KV_{prefix}_jobs" in str(failed.value) and f"OBJ_{prefix}_data" in str(failed.value)
    assert "before_EVENTS" not in str(failed.value)
    assert run_sync(lambda: stream_names(url)).keys() == before.keys()
    check_nothing_left(url, before)  # nothing left now: passes
