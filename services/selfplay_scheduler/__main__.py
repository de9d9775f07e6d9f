"""Run the selfplay scheduler: ``python -m services.selfplay_scheduler``."""

import sys
from collections.abc import Sequence

from services.selfplay_scheduler.config import SelfplaySchedulerConfig
from services.selfplay_scheduler.service import SelfplaySchedulerService
from shared.runner import parse_config, run_service


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the config and run the service until it is stopped."""
    config = parse_config(SelfplaySchedulerConfig, SelfplaySchedulerService.name, argv)
    return run_service(SelfplaySchedulerService, config, argv)


if __name__ == "__main__":
    sys.exit(main())
