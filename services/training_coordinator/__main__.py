"""Run the training coordinator: ``python -m services.training_coordinator``."""

import sys
from collections.abc import Sequence

from services.training_coordinator.config import TrainingCoordinatorConfig
from services.training_coordinator.service import TrainingCoordinatorService
from shared.runner import parse_config, run_service


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the config and run the service until it is stopped."""
    config = parse_config(TrainingCoordinatorConfig, TrainingCoordinatorService.name, argv)
    return run_service(TrainingCoordinatorService, config, argv)


if __name__ == "__main__":
    sys.exit(main())
