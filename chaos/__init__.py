"""Chaos and bad-input suites: faults injected, invariants checked from the durable record."""
