"""An input fetch that meets a transient bus error is tried again; a bad blob is not."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import anyio
import pytest
from nats.js.errors import ServiceUnavailableError

from services.node_agent.workspace import InputError, fetch_inputs
from shared.blobs import BlobError, BlobStore
from shared.jobs import DataRef

REF = DataRef(name="games.npz", sha256="0" * 64, size=1)


class Failing:
    """A blob store whose first ``failures`` fetches raise ``error``."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    async def fetch(self, ref: DataRef, dest: Path) -> Path:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        await anyio.Path(dest).write_bytes(b"x")
        return dest


def fetch(store: Failing, tmp_path: Path, retries: list[str]) -> None:
    blobs = cast(BlobStore, store)
    anyio.run(fetch_inputs, blobs, [REF], tmp_path, retries.append, (0.0, 0.0))


def test_a_server_briefly_unavailable_costs_a_retry_not_the_attempt(tmp_path: Path) -> None:
    store, retries = Failing(2, ServiceUnavailableError()), list[str]()
    fetch(store, tmp_path, retries)
    assert (tmp_path / REF.name).read_bytes() == b"x"
    assert store.calls == 3 and len(retries) == 2
    assert "games.npz" in retries[0]


def test_an_outage_longer_than_the_retries_fails_the_input(tmp_path: Path) -> None:
    store, retries = Failing(3, ServiceUnavailableError()), list[str]()
    with pytest.raises(InputError, match=r"games\.npz: cannot fetch"):
        fetch(store, tmp_path, retries)
    assert store.calls == 3 and len(retries) == 2


def test_a_bad_blob_is_not_tried_again(tmp_path: Path) -> None:
    store, retries = Failing(5, BlobError("sha256 does not match")), list[str]()
    with pytest.raises(InputError, match="does not match"):
        fetch(store, tmp_path, retries)
    assert store.calls == 1 and retries == []


def test_input_retries_are_counted_in_the_agents_health() -> None:
    from services.node_agent.reports import AgentStats

    details: dict[str, Any] = AgentStats().as_dict()
    assert details["input_retries"] == 0
