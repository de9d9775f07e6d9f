"""Run the state manager: ``python -m services.state_manager``."""

import sys
from collections.abc import Sequence

from services.state_manager.config import StateManagerConfig
from services.state_manager.service import StateManagerService
from shared.runner import parse_config, run_service


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the config and run the service until it is stopped."""
    config = parse_config(StateManagerConfig, StateManagerService.name, argv)
    return run_service(StateManagerService, config, argv)


if __name__ == "__main__":
    sys.exit(main())
