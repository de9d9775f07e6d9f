"""The node agent: runs jobs on one host (or simulates many with ``--hollow N``)."""
