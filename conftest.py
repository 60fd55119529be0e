"""Fixtures shared by every test package (plain `pytest` and Bazel's py_tests both load this file)."""

from pathlib import Path

import pytest

from tools.paths import shared_dir


@pytest.fixture(scope="session")
def shared() -> Path:
    """The read-only shared data folder (../shared beside the checkout)."""
    return shared_dir()
