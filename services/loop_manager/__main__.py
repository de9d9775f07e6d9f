"""Run the loop manager: ``python -m services.loop_manager``."""

import sys
from collections.abc import Sequence

from services.loop_manager.config import LoopManagerConfig
from services.loop_manager.service import LoopManagerService
from shared.runner import parse_config, run_service


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the config and run the service until it is stopped."""
    config = parse_config(LoopManagerConfig, LoopManagerService.name, argv)
    return run_service(LoopManagerService, config, argv)


if __name__ == "__main__":
    sys.exit(main())
