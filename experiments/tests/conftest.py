import pytest

from experiments.tests.helpers import git_checkout


@pytest.fixture
def checkout(tmp_path):
    """A throwaway git checkout holding the lock file, with runs/ ignored as in the real repository."""
    return git_checkout(tmp_path / "repo")
