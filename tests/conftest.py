"""Test-suite wide fixtures: a real nats-server and service factories (shared/testing)."""

pytest_plugins = ["shared.testing.server", "shared.testing.fixtures"]
