"""``python -m shared.cli``: the ``ringmaster`` command without the console script."""

import sys

from shared.cli import main

if __name__ == "__main__":
    sys.exit(main())
