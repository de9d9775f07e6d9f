"""Configuration of the job manager."""

from __future__ import annotations

from typing import Annotated

import msgspec

from shared.config import BaseConfig, Positive


class JobManagerConfig(BaseConfig, kw_only=True, forbid_unknown_fields=True):
    """Job manager settings (seconds unless named otherwise)."""

    #: A RUNNING attempt whose agent has not reported for this long is failed.
    lease_s: Positive = 30.0
    #: A DISPATCHED attempt that no agent started within this long is failed.
    dispatch_timeout_s: Positive = 60.0
    #: The same for a dispatch queued in a capability pool, where waiting for a free
    #: slot behind the backlog is normal (the stream keeps it; this catches a lost one).
    pooled_dispatch_timeout_s: Positive = 3600.0
    #: A DISPATCHED record this instance never saw published (a dispatch cut between
    #: its write and its publish) is published again after this long (same message id).
    republish_after_s: Positive = 2.0
    #: A dispatch this old whose pool's consumer shows nothing waiting and nothing in
    #: flight on two looks ``orphan_check_s`` apart lost its message: it is retried.
    orphan_after_s: Positive = 10.0
    orphan_check_s: Positive = 5.0
    #: A node whose NodeInfo stopped for this long is LOST; its attempts are failed.
    node_lost_after_s: Positive = 5.0
    #: How often the reaper looks at the non-terminal jobs.
    reaper_interval: Positive = 0.5
    #: The reaper lease (one reaper among instances) lapses this long after its holder died.
    reaper_lease_ttl_s: Positive = 5.0
    #: Retry backoff: first delay, doubling per attempt up to the cap (with jitter).
    retry_base_s: Positive = 1.0
    retry_max_s: Positive = 30.0
    #: How long to wait for the node selector before falling back to the capability pool.
    select_timeout_s: Positive = 0.5
    #: Consecutive selector failures that open its breaker, and how long it stays open.
    selector_failure_threshold: Annotated[int, msgspec.Meta(ge=1)] = 5
    selector_recovery_s: Positive = 10.0
    #: The KV watch behind the index of non-terminal jobs is renewed this often.
    index_resync_s: Positive = 120.0
    #: Terminal records whose event is still owed (a crash, a failed emit) are announced
    #: again this often, once they are this old.
    announce_interval: Positive = 2.0
    #: Dispatches the reaper runs at once (each may wait on the selector).
    dispatch_concurrency: Annotated[int, msgspec.Meta(ge=1)] = 16
    #: A terminal job is retired to the history bucket this long after it ended
    #: (0 keeps every job in the jobs bucket); history keeps it for the bucket's ttl.
    history_after_s: Annotated[float, msgspec.Meta(ge=0)] = 3600.0
    #: How often the reaper lease holder looks for jobs to retire, and at most how many
    #: it retires per pass (each is three KV writes).
    history_interval: Positive = 10.0
    history_batch: Annotated[int, msgspec.Meta(ge=1)] = 500

    def __post_init__(self) -> None:
        if self.retry_max_s < self.retry_base_s:
            raise ValueError("retry_max_s must be >= retry_base_s")
        if self.reaper_lease_ttl_s <= self.reaper_interval:
            raise ValueError("reaper_lease_ttl_s must be > reaper_interval")
