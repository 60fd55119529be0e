"""Running the launcher as a user does, for the spine's tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
