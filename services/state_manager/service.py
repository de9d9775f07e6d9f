"""The state manager service: owns the state bucket and the catalogue's provisioning.

At start it provisions every stream, bucket and object store (idempotently, with the
configured replicas and limits), refuses a cluster whose stored schema version is not
this release's (SchemaError: the process exits 2 with one line naming both versions),
and creates the cluster epoch when missing. A validation loop reads the jobs and nodes
buckets and emits STATE_VALIDATED with the problems it found. The state API reads any
bucket: ``get`` (a key's value and revision), ``list`` (keys by prefix), ``epoch``.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Self

import msgspec
from nats.js.errors import (
    InvalidKeyError,
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
)
from nats.js.kv import KeyValue

from services.state_manager.config import StateManagerConfig
from services.state_manager.policy import (
    SCHEMA_VERSION,
    Validation,
    cap_problems,
    stored_schema_version,
    validate_state,
)
from shared.codec import decode, encode
from shared.contracts import Empty, HealthCheckResult
from shared.errors import BadRequest, ConfigError, NotFound, Unavailable
from shared.events import StateValidated
from shared.kv import keys_matching, read_all
from shared.loops import Loop
from shared.provision import BUCKET_SPECS, provision_all
from shared.service import Service
from shared.snapshot import (
    EPOCH_KEY,
    SCHEMA_KEY,
    EpochRecord,
    SchemaError,
    SchemaRecord,
    StateKey,
    StateKeys,
    StateQuery,
    StateValue,
)

log = logging.getLogger("ringmaster.state_manager")


def _sole_exception(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception inside (possibly nested) groups; None when there are several."""
    inner: BaseException = group
    while isinstance(inner, BaseExceptionGroup):
        if len(inner.exceptions) != 1:
            return None
        inner = inner.exceptions[0]
    return inner


class StateManagerService(Service[StateManagerConfig]):
    """Provisioning, schema check, cluster epoch, validation loop and the state API."""

    name = "state_manager"
    description = "provisioning, cluster epoch, state validation and the state API"
    config_type = StateManagerConfig

    def __init__(
        self,
        config: StateManagerConfig,
        *,
        reload_config: Callable[[], StateManagerConfig] | None = None,
    ) -> None:
        super().__init__(config, reload_config=reload_config)
        self.buckets: dict[str, KeyValue] = {}
        self.schema_version: int | None = None
        self.epoch: EpochRecord | None = None
        self.last_validation: Validation | None = None
        self.validations = 0

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Self]:
        """The base lifecycle, with a ConfigError (a SchemaError) from setup() unwrapped.

        The base runs setup() inside its task group, which wraps what it raises in an
        exception group; the runner turns only a bare ConfigError into one line and exit 2.
        """
        try:
            async with super().running():
                yield self
        except BaseExceptionGroup as group:
            sole = _sole_exception(group)
            if isinstance(sole, ConfigError):
                raise sole from None
            raise

    async def setup(self) -> None:
        """Provision everything, check the schema, ensure the epoch, add API and loop."""
        await provision_all(self.js, self.subjects, self.config)
        for short in BUCKET_SPECS:
            self.buckets[short] = await self.js.key_value(self.subjects.bucket(short))
        self.schema_version = await self._check_schema()
        self.epoch = await self._ensure_epoch()
        log.info("schema version %d, epoch %d", self.schema_version, self.epoch.epoch)
        await self.add_endpoint("get", StateKey, self._get)
        await self.add_endpoint("list", StateQuery, self._list)
        await self.add_endpoint("epoch", Empty, self._epoch)
        self.add_loop(
            Loop(
                "validate",
                self._validate,
                interval=self.config.validate_interval_s,
                timeout=self.config.validate_timeout_s,
                max_backoff=max(300.0, self.config.validate_interval_s),
            )
        )

    async def _check_schema(self) -> int:
        """The stored version, written as ours when missing; SchemaError when incompatible."""
        kv = self.buckets["state"]
        for _ in range(3):
            try:
                entry = await kv.get(SCHEMA_KEY)
            except (KeyNotFoundError, KeyDeletedError):
                try:
                    await kv.create(SCHEMA_KEY, encode(SchemaRecord(version=SCHEMA_VERSION)))
                except KeyWrongLastSequenceError:
                    continue  # another instance wrote it first: check what it wrote
                log.info("new cluster %s: schema version %d", self.subjects.prefix, SCHEMA_VERSION)
                return SCHEMA_VERSION
            return stored_schema_version(entry.value or b"")
        raise Unavailable("state key 'schema' keeps changing; cannot check the schema")

    async def _ensure_epoch(self) -> EpochRecord:
        """The cluster epoch, created at 1 when missing (an import bumps it)."""
        kv = self.buckets["state"]
        for _ in range(3):
            current = await self._read_epoch()
            if current is not None:
                return current
            record = EpochRecord(epoch=1, created_at=time.time())
            try:
                await kv.create(EPOCH_KEY, encode(record))
            except KeyWrongLastSequenceError:
                continue
            return record
        raise Unavailable("state key 'epoch' keeps changing")

    async def _read_epoch(self) -> EpochRecord | None:
        try:
            entry = await self.buckets["state"].get(EPOCH_KEY)
        except (KeyNotFoundError, KeyDeletedError):
            return None
        try:
            self.epoch = decode(EpochRecord, entry.value or b"")
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise SchemaError(f"state key 'epoch' does not decode: {exc}") from exc
        return self.epoch

    # -- validation ------------------------------------------------------------------
    async def _validate(self) -> None:
        jobs = await read_all(self.buckets["jobs"])
        nodes = await read_all(self.buckets["nodes"])
        result = validate_state(
            {k: v for k, (v, _) in jobs.items()}, {k: v for k, (v, _) in nodes.items()}
        )
        self.last_validation = result
        self.validations += 1
        if result.problems:
            log.info("validation: %d problems in %d records", len(result.problems), result.records)
        await self.emit(
            StateValidated(
                records=result.records,
                problems=cap_problems(result.problems, self.config.max_problems),
            )
        )
        await self._read_epoch()  # an import may have bumped it: keep metrics current

    # -- API -------------------------------------------------------------------------
    def _bucket(self, short: str) -> KeyValue:
        kv = self.buckets.get(short)
        if kv is None:
            raise BadRequest(f"unknown bucket {short!r}; known: {', '.join(sorted(BUCKET_SPECS))}")
        return kv

    async def _get(self, request: StateKey) -> StateValue:
        kv = self._bucket(request.bucket)
        try:
            entry = await kv.get(request.key)
        except (KeyNotFoundError, KeyDeletedError):
            raise NotFound(f"no key {request.key!r} in bucket {request.bucket!r}") from None
        except InvalidKeyError:
            raise BadRequest(f"{request.key!r} is not a valid key") from None
        raw = entry.value or b""
        value: Any
        try:
            value, encoding = msgspec.json.decode(raw), "json"
        except msgspec.DecodeError:
            # Not every writer stores JSON; show the bytes rather than fail the read.
            value, encoding = base64.b64encode(raw).decode("ascii"), "base64"
        return StateValue(
            bucket=request.bucket,
            key=request.key,
            revision=entry.revision or 0,
            value=value,
            encoding=encoding,
        )

    async def _list(self, request: StateQuery) -> StateKeys:
        keys = await keys_matching(self._bucket(request.bucket))
        matched = [k for k in keys if k.startswith(request.prefix)]
        return StateKeys(bucket=request.bucket, keys=matched[: request.limit], total=len(matched))

    async def _epoch(self, _: Empty) -> EpochRecord:
        current = await self._read_epoch()
        if current is None:
            raise NotFound("the cluster has no epoch (state bucket emptied?)")
        return current

    # -- health ----------------------------------------------------------------------
    def health(self) -> HealthCheckResult:
        """Running once provisioned; the last validation's findings are in the details."""
        last = self.last_validation
        details: dict[str, Any] = {
            "schema_version": self.schema_version,
            "epoch": self.epoch.epoch if self.epoch else None,
            "validations": self.validations,
            "last_validation": None
            if last is None
            else {
                "records": last.records,
                "jobs": last.jobs,
                "nodes": last.nodes,
                "problems": len(last.problems),
                "first_problems": last.problems[:10],
            },
        }
        if last is not None and last.problems:
            return HealthCheckResult.ok(
                f"{len(last.problems)} problems in cluster state", **details
            )
        return HealthCheckResult.ok(**details)

    def custom_metrics(self) -> dict[str, float]:
        """Epoch, validation passes, records checked and problems found."""
        last = self.last_validation
        return {
            "epoch": float(self.epoch.epoch if self.epoch else 0),
            "validations_total": float(self.validations),
            "state_records": float(last.records if last else 0),
            "state_problems": float(len(last.problems) if last else 0),
        }
