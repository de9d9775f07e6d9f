"""Benchmarks of the foundation: ``python -m bench`` (``make bench``) rewrites RESULTS.md."""
