"""Run the sync planner: ``python -m services.sync_planner`` (or ``ringmaster service``)."""

import sys
from collections.abc import Sequence

from services.sync_planner.config import SyncPlannerConfig
from services.sync_planner.service import SyncPlannerService
from shared.runner import parse_config, run_service


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the config and run the service until it is stopped."""
    config = parse_config(SyncPlannerConfig, SyncPlannerService.name, argv)
    return run_service(SyncPlannerService, config, argv)


if __name__ == "__main__":
    sys.exit(main())
