"""Run the node agent: ``python -m services.node_agent`` or ``ringmaster service node_agent``."""

import sys
from collections.abc import Sequence

from services.node_agent.config import NodeAgentConfig
from services.node_agent.service import NodeAgentService
from shared.runner import parse_config, run_service


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the config and run the service until it is stopped."""
    config = parse_config(NodeAgentConfig, NodeAgentService.name, argv)
    return run_service(NodeAgentService, config, argv)


if __name__ == "__main__":
    sys.exit(main())
