"""Configuration of the state manager."""

from __future__ import annotations

from typing import Annotated

import msgspec

from shared.config import BaseConfig


class StateManagerConfig(BaseConfig, kw_only=True, forbid_unknown_fields=True):
    """State manager settings.

    Replicas and the event stream's limits come from the base config (``replicas``,
    ``events_max_age_s``, ``events_max_bytes``) and apply to everything it provisions.
    """

    #: Seconds between two passes of the validation loop.
    validate_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    #: Per-pass bound on the validation's run time.
    validate_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    #: At most this many problems are listed in STATE_VALIDATED (the rest are counted).
    max_problems: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 100
