import shutil
import subprocess

import pytest

from experiments import provenance
from tools.paths import PACKAGE_ROOT


@pytest.fixture
def checkout(tmp_path):
    """A throwaway git checkout holding the lock file, with runs/ ignored as in the real repository."""
    repo = tmp_path / "repo"
    (repo / "third_party/python").mkdir(parents=True)
    shutil.copy(PACKAGE_ROOT / provenance.CPU_LOCK, repo / provenance.CPU_LOCK)
    (repo / ".gitignore").write_text("/runs/\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)
    return repo
