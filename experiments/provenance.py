"""Provenance of a run: code version, environment, config and command line, recorded at start.

A dirty working tree is refused unless the user passes --allow-dirty (which is recorded), and a venv
whose installed packages do not match the lock file is an error: results must be reproducible from
the commit plus the lock.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import platform
import re
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

CPU_LOCK = "third_party/python/requirements_lock.txt"
GPU_LOCK = "third_party/python/requirements_gpu_lock.txt"


class ProvenanceError(RuntimeError):
    pass


def _git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=True)
    return out.stdout.decode("utf-8", "replace")


def git_state(repo: Path) -> dict[str, Any]:
    """Commit, dirty flag, changed files and a hash of the full diff (untracked files included)."""
    try:
        commit = _git(repo, "rev-parse", "HEAD").strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return {"commit": None, "dirty": True, "changed": ["<not a git checkout>"], "diff_sha256": None}
    status = _git(repo, "status", "--porcelain", "--untracked-files=normal")
    changed = [line[3:] for line in status.splitlines() if line.strip()]
    digest = hashlib.sha256(_git(repo, "diff", "HEAD", "--binary").encode())
    for name in sorted(_git(repo, "ls-files", "--others", "--exclude-standard").splitlines()):
        path = repo / name
        digest.update(name.encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return {"commit": commit, "dirty": bool(changed), "changed": changed, "diff_sha256": digest.hexdigest()}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins(lock: Path) -> dict[str, str]:
    pins = {}
    for line in lock.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", line)
        if m:
            pins[_canonical(m.group(1))] = m.group(2)
    return pins


def lock_file(repo: Path) -> Path:
    """The lock this interpreter should match: the GPU lock when torch is a CUDA build."""
    import torch

    return repo / (GPU_LOCK if torch.version.cuda else CPU_LOCK)


def venv_mismatches(lock: Path) -> list[str]:
    """Locked packages that are missing from this interpreter or installed at another version."""
    installed = {_canonical(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}
    problems = []
    for name, version in sorted(lock_pins(lock).items()):
        have = installed.get(name)
        if have is None:
            problems.append(f"{name}=={version} is not installed")
        elif have != version:
            problems.append(f"{name}: lock has {version}, installed {have}")
    return problems


def collect(repo: Path, config_hash: str, argv: list[str], allow_dirty: bool) -> dict[str, Any]:
    """Everything needed to say what produced a run. Raises ProvenanceError on a dirty tree or venv."""
    import torch

    git = git_state(repo)
    if git["dirty"] and not allow_dirty:
        shown = "\n  ".join(git["changed"][:20])
        raise ProvenanceError(
            f"the working tree at {repo} has uncommitted changes; commit them or pass --allow-dirty:\n  {shown}"
        )
    lock = lock_file(repo)
    mismatches = venv_mismatches(lock)
    if mismatches:
        raise ProvenanceError(
            f"this Python environment ({sys.prefix}) does not match {lock.relative_to(repo)}; "
            "rebuild it with ./bazelw:\n  " + "\n  ".join(mismatches[:20])
        )
    return {
        "git": git,
        "allow_dirty": allow_dirty,
        "lock_file": str(lock.relative_to(repo)),
        "lock_sha256": hashlib.sha256(lock.read_bytes()).hexdigest(),
        "config_sha256": config_hash,
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "argv": argv,
    }
