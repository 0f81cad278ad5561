"""Bounded, deterministic fuzzing for CI: one hypothesis profile, and a real server on a tiny model repository.

Every property test here runs a fixed number of examples from a fixed seed (``derandomize=True``), so a CI run is
repeatable and its time bounded: each test says ``@settings(settings.get_profile("fuzz"), max_examples=N)``. The
profile is registered, not loaded, so hypothesis tests elsewhere keep their own defaults; it writes no example
database into the checkout.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# tests/ is on sys.path (tests/conftest.py); tests/serving, whose tiny ONNX models the server fuzz serves, is not.
SERVING_TESTS = Path(__file__).resolve().parent.parent / "serving"
if str(SERVING_TESTS) not in sys.path:
    sys.path.insert(0, str(SERVING_TESTS))

settings.register_profile("fuzz", deadline=None, derandomize=True, print_blob=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="session")
def fuzz_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from serving_models import make_repo

    return make_repo(tmp_path_factory.mktemp("fuzz"))
