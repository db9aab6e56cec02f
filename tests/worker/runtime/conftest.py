from __future__ import annotations

import pytest

from tests.hostile import Case, shared_corpus


@pytest.fixture(scope="session")
def hostile_corpus() -> dict[str, Case]:
    """Every hostile/odd case of tests/hostile.py, written once per process, by name."""
    return shared_corpus()
