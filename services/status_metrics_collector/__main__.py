"""Run the status metrics collector: ``python -m services.status_metrics_collector``."""

import sys
from collections.abc import Sequence

from services.status_metrics_collector.config import StatusMetricsCollectorConfig
from services.status_metrics_collector.service import StatusMetricsCollectorService
from shared.runner import parse_config, run_service


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the config and run the service until it is stopped."""
    config = parse_config(StatusMetricsCollectorConfig, StatusMetricsCollectorService.name, argv)
    return run_service(StatusMetricsCollectorService, config, argv)


if __name__ == "__main__":
    sys.exit(main())
