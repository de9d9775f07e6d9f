"""A job's working directory: inputs fetched in, outputs uploaded out.

``<work_dir>/<job_id>-<attempt>/`` holds ``inputs/`` (each input under its DataRef
name, checked against its sha256 by the blob store) and ``outputs/`` (every file but
``result.json`` becomes a DataRef named by its relative path; ``result.json`` is the
job's result). Outputs are uploaded through :func:`node_blobs`: sealed by the sync
planner when the agent runs as its node's own NATS user, which may publish chunks
but never a name.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread
import nats.errors
from nats.aio.client import Client
from nats.js.errors import ServiceUnavailableError

from services.node_agent.config import NodeAgentConfig
from services.node_agent.policy import safe_relative_name
from shared.blob_seal import SealClient, SealRefused
from shared.blob_wire import WireError
from shared.blobs import BlobError, BlobStore, DataStore
from shared.credentials import credential_options
from shared.jobs import DataRef
from shared.subjects import Subjects

log = logging.getLogger("ringmaster.node_agent.workspace")

RESULT_FILE = "result.json"


class InputError(Exception):
    """An input could not be had intact; the job must not run."""


class OutputError(Exception):
    """The job's outputs or its result could not be read or stored."""


@dataclass(frozen=True)
class Workspace:
    """A job's directories."""

    root: Path
    inputs: Path
    outputs: Path

    @classmethod
    def create(cls, work_dir: Path, key: str) -> Workspace:
        """A fresh directory for one attempt (leftovers of a crashed run are removed)."""
        root = (work_dir / key).resolve()
        if root.exists():
            shutil.rmtree(root)
        workspace = cls(root=root, inputs=root / "inputs", outputs=root / "outputs")
        workspace.inputs.mkdir(parents=True)
        workspace.outputs.mkdir()
        return workspace

    def remove(self) -> None:
        """Delete the directory (blocking)."""
        shutil.rmtree(self.root, ignore_errors=True)


def seals_uploads(mode: str, credentials_file: str, subjects: Subjects, node_id: str) -> bool:
    """Whether uploads are sealed by the sync planner (see ``blob_upload``)."""
    if mode != "auto":
        return mode == "seal"
    # A node's own user (nats-config --nodes) may not write names: it must seal.
    user = credential_options(credentials_file).get("user")
    return bool(user) and user == subjects.user(f"node-{node_id}")


def node_blobs(nc: Client, store: DataStore, cfg: NodeAgentConfig, subjects: Subjects) -> BlobStore:
    """The agent's blob store: its chunks under its node id, named by the sync planner."""
    cache = Path(cfg.cache_dir)
    if not seals_uploads(cfg.blob_upload, cfg.credentials_file, subjects, cfg.node_id):
        log.info("outputs are named directly (blob_upload %s)", cfg.blob_upload)
        return BlobStore(store, cache)
    log.info("outputs are sealed by the sync planner (blob_upload %s)", cfg.blob_upload)
    sealer = SealClient(nc, subjects.api("sync_planner", "seal"), cfg.seal_timeout_s)
    return BlobStore(store, cache, sealer=sealer, namespace=cfg.node_id)


#: Waits between tries of an input whose fetch met a transient bus error: a JetStream
#: leader moving or a server's host cut off for seconds should not spend an attempt.
FETCH_RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0)
#: Bus errors worth another try: the server answered "unavailable" or did not answer.
TRANSIENT = (ServiceUnavailableError, nats.errors.TimeoutError, nats.errors.NoRespondersError)


async def fetch_inputs(
    blobs: BlobStore,
    refs: list[DataRef],
    inputs: Path,
    on_retry: Callable[[str], None] = lambda _: None,
    delays: Sequence[float] = FETCH_RETRY_DELAYS_S,
) -> None:
    """Fetch every input, verified; raises InputError naming the first that fails.

    A transient bus error is tried again after each of ``delays`` (``on_retry`` is
    told each time, for the agent's counts); a bad blob or a missing one is not.
    """
    for ref in refs:
        if not safe_relative_name(ref.name):
            raise InputError(f"input name {ref.name!r} is not a relative path inside inputs/")
        for delay in (*delays, None):
            try:
                await blobs.fetch(ref, inputs / ref.name)
                break
            except BlobError as exc:
                raise InputError(f"input {ref.name}: {exc}") from exc
            except TRANSIENT as exc:
                if delay is None:
                    raise InputError(f"input {ref.name}: cannot fetch: {exc!r}") from exc
                on_retry(f"input {ref.name}: {exc!r}; again in {delay:g} s")
                await anyio.sleep(delay)
            except (nats.errors.Error, OSError) as exc:
                raise InputError(f"input {ref.name}: cannot fetch: {exc!r}") from exc


def output_files(outputs: Path) -> list[tuple[Path, str]]:
    """Every regular file under ``outputs`` but the result, with its relative name."""
    found = []
    for path in sorted(outputs.rglob("*")):
        # Symbolic links are skipped: a job could point one anywhere on the host.
        if path.is_symlink() or not path.is_file():
            continue
        name = path.relative_to(outputs).as_posix()
        if name != RESULT_FILE:
            found.append((path, name))
    return found


def read_result(outputs: Path) -> dict[str, Any]:
    """The JSON object in ``result.json``; empty when there is none."""
    path = outputs / RESULT_FILE
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise OutputError(f"{RESULT_FILE} unreadable: {exc}") from exc
    if not isinstance(value, dict):
        raise OutputError(f"{RESULT_FILE} holds a {type(value).__name__}, not a JSON object")
    return value


async def upload_outputs(blobs: BlobStore, outputs: Path) -> tuple[list[DataRef], dict[str, Any]]:
    """Store every output file; returns their DataRefs and the job's result."""
    try:
        result = await anyio.to_thread.run_sync(read_result, outputs)
        files = await anyio.to_thread.run_sync(output_files, outputs)
        refs = [await blobs.put_file(path, name) for path, name in files]
    except (nats.errors.Error, OSError, BlobError, SealRefused, WireError) as exc:
        raise OutputError(f"uploading outputs failed: {exc!r}") from exc
    return refs, result
