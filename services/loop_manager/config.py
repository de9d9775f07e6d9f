"""Configuration of the loop manager."""

from __future__ import annotations

from typing import Annotated

import msgspec

from shared.config import BaseConfig


class LoopManagerConfig(BaseConfig, kw_only=True, forbid_unknown_fields=True):
    """Loop manager settings; every loop in the registry runs unless disabled.

    ``loops`` overrides a loop's interval in seconds by name; ``disabled_loops`` names
    loops not to run. A name the registry does not know is a configuration error.
    """

    loops: dict[str, Annotated[float, msgspec.Meta(gt=0)]] = msgspec.field(default_factory=dict)
    disabled_loops: list[str] = msgspec.field(default_factory=list)
    #: Fraction of a configured stream limit (bytes or messages) above which P_EVENTS
    #: counts as nearly full and the service reports DEGRADED.
    stream_usage_warn: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.8
    #: Consecutive failed runs of one loop after which the service reports DEGRADED.
    failures_degraded: Annotated[int, msgspec.Meta(ge=1)] = 3

    def __post_init__(self) -> None:
        # A misspelt loop name would silently do nothing; refuse it at load instead.
        from services.loop_manager.registry import available

        known = available()
        unknown = sorted((set(self.loops) | set(self.disabled_loops)) - set(known))
        if unknown:
            raise ValueError(
                f"unknown loops {', '.join(unknown)} in loops/disabled_loops; "
                f"known: {', '.join(sorted(known))}"
            )
