"""Every property test runs under the suite's Hypothesis profile (tests/conftest.py)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

TESTS = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(
    os.environ.get("HYPOTHESIS_PROFILE", "ringmaster") != "ringmaster",
    reason="another Hypothesis profile was asked for",
)
def test_the_ringmaster_profile_is_loaded() -> None:
    assert settings.default.deadline is None
    assert HealthCheck.too_slow in settings.default.suppress_health_check


def test_no_test_module_overrides_the_profile() -> None:
    # A per-test @settings(...) would bring a deadline (timing) back into that test. A
    # test may run fewer examples with settings(settings.default, max_examples=...).
    here = Path(__file__).resolve()
    own = [
        str(path.relative_to(TESTS))
        for path in TESTS.rglob("*.py")
        if path.name != "conftest.py"
        and path != here
        and re.search(r"@(?:hypothesis\.)?settings\(|settings\([^)]*deadline", path.read_text())
    ]
    assert own == []
