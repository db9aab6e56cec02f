from __future__ import annotations

from pathlib import Path

import pytest

from tests.hostile import Case, build_corpus


@pytest.fixture(scope="session")
def hostile_corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    """Every hostile/odd case of tests/hostile.py, written once per session, by name."""
    directory: Path = tmp_path_factory.mktemp("hostile")
    return {case.name: case for case in build_corpus(directory)}
