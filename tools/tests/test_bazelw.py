"""./bazelw on machines that lack what it needs: it never exits silently, it names what is missing and the
command that fixes it. Each case runs a copy of the script with a PATH from which tools are hidden."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tools.paths import PACKAGE_ROOT

HIDDEN = ("bazel", "bazel-4", "bazel-4.2.3", "apt-get", "python3", "python3.11", "python", "sudo", "id")


def fake_tool(folder: Path, name: str, script: str) -> None:
    (folder / name).write_text("#!/bin/sh\n" + script + "\n")
    (folder / name).chmod(0o755)


@pytest.fixture
def machine(tmp_path):
    """A repository root holding only bazelw and a lock, and a bin folder: the system's tools minus HIDDEN."""
    root = tmp_path / "repo"
    (root / "third_party/python").mkdir(parents=True)
    shutil.copy(PACKAGE_ROOT / "bazelw", root / "bazelw")
    (root / "third_party/python/requirements_lock.txt").write_text("no-such-package-herd==1.0 --hash=sha256:00\n")
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for folder in ("/usr/local/bin", "/usr/bin", "/bin"):
        for f in Path(folder).iterdir() if Path(folder).is_dir() else []:
            if f.name not in HIDDEN and not f.name.startswith("bazel") and not (bin_ / f.name).exists():
                (bin_ / f.name).symlink_to(f)
    fake_tool(bin_, "id", 'echo 1000')  # not root unless a test says so
    return root, bin_


def run(root: Path, bin_: Path, *args: str, **env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("HERD_")}
    base.update(PATH=str(bin_), HOME=str(root.parent), **env)
    return subprocess.run(["bash", str(root / "bazelw"), *args], capture_output=True, text=True, env=base,
                          cwd=root, timeout=300)  # fmt: skip


def test_no_bazel_and_not_root_names_the_install_command(machine):
    root, bin_ = machine
    out = run(root, bin_, "run", "//experiments:llama3_tiny")
    assert out.returncode == 1
    assert "no bazel on PATH" in out.stderr
    assert "sudo apt-get update && sudo apt-get install -y bazel-bootstrap" in out.stderr


def test_no_bazel_as_root_without_apt_get_says_so(machine):
    root, bin_ = machine
    fake_tool(bin_, "id", "echo 0")
    out = run(root, bin_, "info")
    assert out.returncode == 1
    assert "this machine has no apt-get" in out.stderr and "bazel-bootstrap" in out.stderr


def test_as_root_it_installs_bazel_with_apt_get(machine):
    root, bin_ = machine
    fake_tool(bin_, "id", "echo 0")
    log = root.parent / "apt.log"
    # apt-get "installs" a bazel-4 that records its arguments; python is still missing afterwards.
    bazel = f'printf "#!/bin/sh\\necho bazel \\"\\$@\\"\\n" > {bin_}/bazel-4; chmod +x {bin_}/bazel-4'
    fake_tool(bin_, "apt-get", f'echo "$@" >> {log}\ncase "$*" in *bazel-bootstrap*) {bazel};; esac')
    out = run(root, bin_, "info")
    assert "installing bazel-bootstrap" in out.stderr
    assert "install -y -qq bazel-bootstrap" in log.read_text()
    # Python 3.11 is hidden too: apt-get is asked for it, which this fake does not provide.
    assert out.returncode == 1 and "python3.11 installed, but not found on PATH" in out.stderr


def test_no_python_311_names_the_packages(machine):
    root, bin_ = machine
    fake_tool(bin_, "bazel-4", 'echo bazel "$@"')
    out = run(root, bin_, "info")
    assert out.returncode == 1
    assert "Python 3.11 is required" in out.stderr
    assert "sudo apt-get install -y python3.11 python3.11-venv" in out.stderr
    bad = run(root, bin_, "info", HERD_PYTHON="/bin/true")
    assert bad.returncode == 1 and "HERD_PYTHON=/bin/true is not a Python 3.11 interpreter" in bad.stderr


def test_a_lock_that_cannot_install_says_how_to_retry(machine):
    root, bin_ = machine
    fake_tool(bin_, "bazel-4", 'echo bazel "$@"')
    (bin_ / "python3.11").symlink_to(sys.executable if sys.version_info[:2] == (3, 11) else shutil.which("python3.11"))
    out = run(root, bin_, "info", HERD_PIP_ARGS="--no-index")
    assert out.returncode == 1
    assert "pip could not install third_party/python/requirements_lock.txt" in out.stderr
    assert 'HERD_PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu" ./bazelw info' in out.stderr
    assert not (root / ".venv/.herd-lock-sha256").exists()  # no stamp: the next run builds again


def test_with_everything_present_it_runs_bazel_with_the_arguments(machine):
    root, bin_ = machine
    fake_tool(bin_, "bazel-4", 'echo "bazel $* from $HERD_CALLER_DIR"')
    venv = root / ".venv"
    venv.mkdir()
    digest = subprocess.run(["sha256sum", str(root / "third_party/python/requirements_lock.txt")],
                            capture_output=True, text=True).stdout.split()[0]  # fmt: skip
    (venv / ".herd-lock-sha256").write_text(digest + "\n")  # the venv matches the lock: nothing to build
    out = run(root, bin_, "run", "//experiments:llama3_tiny", "--", "seed=1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"bazel run //experiments:llama3_tiny -- seed=1 from {root}"
    assert (root / ".bazelrc.local").read_text().strip().endswith(f"HERD_VENV={venv}")
