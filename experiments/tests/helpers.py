"""Running the launcher as a user does, from a throwaway git checkout, for the experiments' tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from experiments import provenance
from tools.paths import PACKAGE_ROOT

TOY = "experiments.tests.toy"


def launch(repo: Path, *args: str, wait: bool = True, experiment: str = TOY, timeout: float = 300):
    """`python -m experiments.launch EXPERIMENT args...` with `repo` as the checkout (as `bazel run` sets it)."""
    env = dict(os.environ, BUILD_WORKSPACE_DIRECTORY=str(repo), PYTHONPATH=str(PACKAGE_ROOT))
    cmd = [sys.executable, "-m", "experiments.launch", experiment, *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=PACKAGE_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return subprocess.run(cmd, cwd=PACKAGE_ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def executions(run_dir: Path) -> list[str]:
    """The toy experiment's log of stage starts."""
    path = run_dir / "executions.log"
    return path.read_text().splitlines() if path.exists() else []


def git_checkout(repo: Path) -> Path:
    """A throwaway git checkout at `repo` holding the lock file, with runs/ ignored as in the real repository."""
    (repo / "third_party/python").mkdir(parents=True)
    shutil.copy(PACKAGE_ROOT / provenance.CPU_LOCK, repo / provenance.CPU_LOCK)
    (repo / ".gitignore").write_text("/runs/\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "init"]):
        subprocess.run([*git, *args], check=True)
    return repo
