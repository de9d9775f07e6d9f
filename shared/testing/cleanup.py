"""Removing what tests leave on the shared test server, and checking nothing is left.

Every test works under its own cluster prefix ``P``; what it makes lives in JetStream
streams: ``P_*`` (events, jobs, logs), ``KV_P_*`` (buckets) and ``OBJ_P_*`` (object
stores), each with its consumers. Deleting a test's streams removes all of it. The
server is shared by the whole run and JetStream reserves each stream's ``max_bytes``
up front, so a prefix left behind takes space from every later test.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import anyio
import nats

__all__ = [
    "left_behind",
    "prefix_pattern",
    "remove_prefix_streams",
    "remove_streams",
    "run_sync",
    "stream_names",
]

T = TypeVar("T")


def prefix_pattern(prefix_regex: str) -> re.Pattern[str]:
    """Matches the stream names of every prefix that ``prefix_regex`` matches in full."""
    return re.compile(rf"^(?:KV_|OBJ_)?(?:{prefix_regex})_")


async def stream_names(nats_url: str) -> dict[str, int]:
    """Every stream on the server (buckets and object stores included) and its consumers."""
    client = await nats.connect(nats_url, connect_timeout=5)
    try:
        infos = await client.jetstream().streams_info()
        return {info.config.name or "": info.state.consumer_count for info in infos}
    finally:
        await client.close()


async def remove_streams(nats_url: str, pattern: re.Pattern[str]) -> list[str]:
    """Delete every stream whose name matches ``pattern``; returns the names deleted."""
    client = await nats.connect(nats_url, connect_timeout=5)
    try:
        js = client.jetstream()
        names = [info.config.name or "" for info in await js.streams_info()]
        doomed = sorted(name for name in names if pattern.search(name))
        for name in doomed:
            await js.delete_stream(name)
        return doomed
    finally:
        await client.close()


async def remove_prefix_streams(nats_url: str, prefix: str) -> list[str]:
    """Delete every stream, bucket and object store (and so consumer) of one prefix.

    Prefixes a test derives from its own by appending letters or digits (``Pb`` for a
    second cluster) go too: test prefixes are unique and of one length, so such an
    extension is never another test's prefix.
    """
    return await remove_streams(nats_url, prefix_pattern(re.escape(prefix) + "[a-z0-9]*"))


async def left_behind(nats_url: str, before: dict[str, int]) -> dict[str, int]:
    """Streams on the server now that were not there in ``before``, with their consumers."""
    return {name: n for name, n in (await stream_names(nats_url)).items() if name not in before}


def run_sync(call: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from synchronous code (a fixture's teardown).

    It runs on an event loop of its own in a worker thread, so it works whether or
    not the calling thread is inside a running loop; its exception is raised here.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-cleanup") as pool:
        return pool.submit(anyio.run, call).result()
