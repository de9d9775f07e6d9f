"""Configuration of the status metrics collector."""

from __future__ import annotations

from typing import Annotated

import msgspec

from shared.config import BaseConfig, Positive
from shared.http_auth import check_binding


class StatusMetricsCollectorConfig(BaseConfig, kw_only=True, forbid_unknown_fields=True):
    """Collector settings.

    ``prometheus_port``: 0 binds a free port (see the service's ``prometheus_port``),
    -1 turns the HTTP endpoint off.
    """

    collect_interval: Positive = 2.0
    #: Deadline of one instance's ``metrics`` call within a round.
    call_timeout: Positive = 0.5
    #: How long one round gathers ``$SRV.STATS`` replies.
    discover_timeout: Positive = 0.3
    prometheus_host: str = "127.0.0.1"
    prometheus_port: Annotated[int, msgspec.Meta(ge=-1, le=65535)] = 9780
    #: A file holding the bearer token ``/metrics`` asks for (``/healthz`` stays open);
    #: required when ``prometheus_host`` is beyond loopback.
    prometheus_token_file: str = ""
    #: DEGRADED when more than this fraction of the last round's calls timed out or failed.
    degraded_timeout_ratio: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.2
    #: Parallel ``metrics`` calls at most, so a big cluster is not asked all at once.
    call_limit: Annotated[int, msgspec.Meta(ge=1)] = 64

    def __post_init__(self) -> None:
        if self.prometheus_port >= 0:
            check_binding(self.prometheus_host, self.prometheus_token_file, "prometheus_token_file")
