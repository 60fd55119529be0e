"""Where things are: the repository and user paths under `bazel run` (vendored data: tools/assets.py)."""

from __future__ import annotations

import os
from pathlib import Path

# tools/paths.py -> the repository root (or, under Bazel, the runfiles copy of it).
PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def repo_root() -> Path:
    """The source checkout: `bazel run` exports it; otherwise this file's own checkout."""
    workspace = os.environ.get("BUILD_WORKSPACE_DIRECTORY")
    return Path(workspace) if workspace else PACKAGE_ROOT


def user_path(path: str | os.PathLike) -> Path:
    """Resolve a path given on the command line: relative to where the user ran ./bazelw (which exports
    HERD_CALLER_DIR before changing into the repo root) or plain `bazel run`, else the current directory."""
    path = Path(path).expanduser()
    if path.is_absolute():
        return path
    base = os.environ.get("HERD_CALLER_DIR") or os.environ.get("BUILD_WORKING_DIRECTORY") or os.getcwd()
    return Path(base) / path
