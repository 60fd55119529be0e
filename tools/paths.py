"""Where things are: the repository, the shared data folder, and user paths under `bazel run`."""

from __future__ import annotations

import os
from pathlib import Path

# tools/paths.py -> the repository root (or, under Bazel, the runfiles copy of it).
PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def repo_root() -> Path:
    """The source checkout: `bazel run` exports it; otherwise this file's own checkout."""
    workspace = os.environ.get("BUILD_WORKSPACE_DIRECTORY")
    return Path(workspace) if workspace else PACKAGE_ROOT


def shared_dir() -> Path:
    """The read-only shared data folder (../shared beside the checkout, or $HERD_SHARED)."""
    env = os.environ.get("HERD_SHARED")
    candidates = [Path(env)] if env else [repo_root().parent / "shared", PACKAGE_ROOT.parent / "shared"]
    for path in candidates:
        if path.is_dir():
            return path
    raise FileNotFoundError(
        "shared data folder not found (looked at " + ", ".join(map(str, candidates)) + "); set HERD_SHARED to its path"
    )


def user_path(path: str | os.PathLike) -> Path:
    """Resolve a path given on the command line: relative to where the user ran ./bazelw (which exports
    HERD_CALLER_DIR before changing into the repo root) or plain `bazel run`, else the current directory."""
    path = Path(path).expanduser()
    if path.is_absolute():
        return path
    base = os.environ.get("HERD_CALLER_DIR") or os.environ.get("BUILD_WORKING_DIRECTORY") or os.getcwd()
    return Path(base) / path
