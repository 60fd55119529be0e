"""For tests that need a tool outside Python (Slurm, Nix): on a machine without it the test is skipped with one
line naming the tool and the command that installs it; under CI (CI=true) it fails instead, so CI never skips."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tools import cluster
from tools.paths import PACKAGE_ROOT

SLURM_INSTALL = "sudo apt-get install -y slurm-wlm munge (./bazelw test does it as root)"
NIX_INSTALL = "sudo apt-get install -y nix-bin (./bazelw test does it as root)"


def unavailable(reason: str) -> None:
    """Skip the calling test for `reason`, or fail it under CI."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason}; CI must run this test (CI is set)")
    pytest.skip(reason)


def require(tool: str, install: str) -> str:
    """The path of `tool`, or skip (fail under CI) naming it and its install command."""
    path = shutil.which(tool)
    if path is None:
        unavailable(f"{tool} is not installed (install: {install})")
    return path


def single_node_slurm() -> None:
    """A Slurm controller that answers: the one running, or tools/slurm/start.sh's single-node cluster on
    loopback, started here when this runs as root (.ci/run starts it before the tests)."""
    if cluster.answers():
        return
    require("slurmctld", SLURM_INSTALL)
    require("munged", SLURM_INSTALL)
    if os.geteuid() != 0:
        unavailable("no Slurm controller answers and starting one needs root (sudo tools/slurm/start.sh)")
    out = subprocess.run([str(PACKAGE_ROOT / "tools/slurm/start.sh")], capture_output=True, text=True)
    if out.returncode != 0 or not cluster.answers():
        raise RuntimeError(f"tools/slurm/start.sh did not bring up a controller that answers sinfo:\n{out.stderr}")
