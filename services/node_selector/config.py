"""Configuration of the node selector."""

from __future__ import annotations

from typing import Annotated

import msgspec

from services.node_selector.policy import DEFAULT_GPU_POWER, DEFAULT_UNKNOWN_GPU_POWER
from shared.config import BaseConfig
from shared.liveness import LOST_AFTER

Positive = Annotated[float, msgspec.Meta(gt=0)]


class NodeSelectorConfig(BaseConfig, kw_only=True, forbid_unknown_fields=True):
    """Node selector settings.

    A node is alive until it is LOST by the shared rule (``shared.liveness``): silent for
    ``lost_after_s``, or, when that is not set, ``lost_after_intervals`` times the
    interval the node announces.
    ``gpu_power`` entries add to or replace the built-in table (A100 = 1.0); a GPU that
    matches no entry counts as ``default_gpu_power``.
    """

    lost_after_s: Positive | None = None
    lost_after_intervals: Positive = LOST_AFTER
    #: A node silent this long is dropped from the view (and from the ``nodes`` list).
    forget_after_s: Positive = 3600.0
    gpu_power: dict[str, Annotated[float, msgspec.Meta(ge=0)]] = msgspec.field(
        default_factory=lambda: dict(DEFAULT_GPU_POWER)
    )
    default_gpu_power: Annotated[float, msgspec.Meta(ge=0)] = DEFAULT_UNKNOWN_GPU_POWER
    #: This many JOB_FAILED naming a node within the window make it unhealthy ...
    unhealthy_failures: Annotated[int, msgspec.Meta(ge=1)] = 3
    unhealthy_window_s: Positive = 60.0
    #: ... for this long; then it is recovered and starts from a clean slate.
    unhealthy_cooldown_s: Positive = 120.0
    #: How often recoveries and forgotten nodes are checked.
    sweep_interval_s: Positive = 1.0
