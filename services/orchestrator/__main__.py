"""Run the orchestrator: ``python -m services.orchestrator``.

Or ``ringmaster service orchestrator``.
"""

import sys
from collections.abc import Sequence

from services.orchestrator.config import OrchestratorConfig
from services.orchestrator.service import OrchestratorService
from shared.runner import parse_config, run_service


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the config and run the service until it is stopped."""
    config = parse_config(OrchestratorConfig, OrchestratorService.name, argv)
    return run_service(OrchestratorService, config, argv)


if __name__ == "__main__":
    sys.exit(main())
