"""Ringmaster shared library: contracts, bus, service base."""

__version__ = "0.1.0"
