"""Run the job manager: ``python -m services.job_manager`` or ``ringmaster service job_manager``."""

import sys
from collections.abc import Sequence

from services.job_manager.config import JobManagerConfig
from services.job_manager.service import JobManagerService
from shared.runner import parse_config, run_service


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the config and run the service until it is stopped."""
    config = parse_config(JobManagerConfig, JobManagerService.name, argv)
    return run_service(JobManagerService, config, argv)


if __name__ == "__main__":
    sys.exit(main())
