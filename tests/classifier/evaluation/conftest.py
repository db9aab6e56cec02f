"""Fixtures of the evaluation tests: a fresh first/last-used throttle per test (its keys would
otherwise outlive each test's rolled-back rows)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _fresh_seen_cache():
    from classifier.evaluation import services

    services.clear_seen_cache()
    yield
    services.clear_seen_cache()
