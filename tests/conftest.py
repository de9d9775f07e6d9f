"""Test-suite wide fixtures: a real nats-server and service factories (shared/testing).

Hypothesis runs under the ``ringmaster`` profile: no per-example deadline, because the
suite runs on shared 2-core machines where a loaded moment would fail a property test
for its timing rather than its property; a failing example is still reported and
replayed. ``HYPOTHESIS_PROFILE=default`` restores Hypothesis's own settings. Every
property test runs under it: none carries an ``@settings`` of its own or a deadline;
a slow one may run fewer examples with ``settings(settings.default, max_examples=N)``
(tests/unit/test_hypothesis_profile.py checks this).
"""

import os

from hypothesis import HealthCheck, settings

pytest_plugins = ["shared.testing.server", "shared.testing.fixtures"]

settings.register_profile("ringmaster", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ringmaster"))
