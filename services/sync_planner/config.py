"""Configuration of the sync planner.

Every field has a default and can be set, in increasing precedence, in a TOML file
(``--config FILE``), in the environment (``RINGMASTER_SYNC_PLANNER_<FIELD>``), on the
command line (``--field-name VALUE``) or in the cluster file's
``[services.sync_planner.config]`` table.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from shared.config import BaseConfig, Positive, PositiveInt


class SyncPlannerConfig(BaseConfig, kw_only=True, forbid_unknown_fields=True):
    """Sync planner settings (seconds unless named otherwise)."""

    #: Per game, the newest entries holding this many games are never deleted.
    retain_games: PositiveInt = 50_000
    #: How often retention looks at the manifests.
    retention_interval_s: Positive = 30.0
    #: How long to wait for the job manager's answer to a prefetch submit.
    submit_timeout_s: Positive = 5.0
    #: Blobs handed out by ``training_data`` or ``prefetch`` are protected from
    #: retention this long, covering the gap until the job using them is submitted.
    handout_grace_s: Annotated[float, msgspec.Meta(ge=0)] = 900.0
    #: Consecutive job manager failures that open its breaker, and how long it stays open.
    submit_failure_threshold: PositiveInt = 5
    submit_recovery_s: Positive = 10.0
    #: Attempts and run time limit of each prefetch job.
    prefetch_max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3
    prefetch_timeout_s: Positive = 600.0
    #: How long a seal waits for each batch of an upload's chunks when reading them back.
    seal_read_timeout_s: Positive = 5.0
    #: A node upload never sealed is purged once it has lain unchanged this long (far
    #: longer than a seal may take; see ``sweep.py``).
    unsealed_grace_s: Positive = 3600.0
