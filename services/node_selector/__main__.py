"""Run the node selector: ``python -m services.node_selector``."""

import sys
from collections.abc import Sequence

from services.node_selector.config import NodeSelectorConfig
from services.node_selector.service import NodeSelectorService
from shared.runner import parse_config, run_service


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the config and run the service until it is stopped."""
    config = parse_config(NodeSelectorConfig, NodeSelectorService.name, argv)
    return run_service(NodeSelectorService, config, argv)


if __name__ == "__main__":
    sys.exit(main())
