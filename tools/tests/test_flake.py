"""flake.nix parses, and its outputs evaluate against a stub nixpkgs (Nix's cache is out of reach here)."""

import json
import subprocess
import tempfile

from tools import testing
from tools.paths import PACKAGE_ROOT


def nix(*args: str) -> subprocess.CompletedProcess:
    exe = testing.require("nix-instantiate", testing.NIX_INSTALL)
    # A private chroot store: /nix/store may be read-only (Bazel's sandbox) and nothing is built anyway.
    with tempfile.TemporaryDirectory() as store:
        cmd = [exe, "--store", store, *args]
        return subprocess.run(cmd, cwd=PACKAGE_ROOT, capture_output=True, text=True, timeout=120)


def test_flake_parses():
    out = nix("--parse", "flake.nix")
    assert out.returncode == 0, out.stderr


def test_flake_lock_pins_the_flake_input():
    lock = json.loads((PACKAGE_ROOT / "flake.lock").read_text())
    pinned = lock["nodes"]["nixpkgs"]
    assert lock["nodes"]["root"]["inputs"] == {"nixpkgs": "nixpkgs"}
    assert len(pinned["locked"]["rev"]) == 40 and pinned["locked"]["narHash"].startswith("sha256-")
    out = json.loads(nix("--eval", "--strict", "--json", "--readonly-mode", "tools/nix/check_flake.nix").stdout)
    ref = pinned["original"]
    assert out["inputs"]["nixpkgs"]["url"] == f"github:{ref['owner']}/{ref['repo']}/{ref['ref']}"


def test_dev_shells_have_the_toolchain():
    out = nix("--eval", "--strict", "--json", "--readonly-mode", "tools/nix/check_flake.nix")
    assert out.returncode == 0, out.stderr
    shells = json.loads(out.stdout)["devShells"]
    assert set(shells) == {"x86_64-linux", "aarch64-linux"}
    for system, pair in shells.items():
        cpu, gpu = pair["default"], pair["cuda"]
        assert cpu["system"] == gpu["system"] == system
        for shell in (cpu, gpu):
            assert {"python3.11", "bazel-4", "gcc", "git"} <= set(shell["packages"])
            assert "./bazelw" in shell["shellHook"] and "HERD_PYTHON" in shell["shellHook"]
        assert cpu["cudaSupport"] is False and "cuda_nvcc" not in cpu["packages"]
        assert cpu["HERD_LOCK"] == "third_party/python/requirements_lock.txt"
        assert gpu["cudaSupport"] is True and gpu["allowUnfree"] is True and gpu["cudaCapabilities"] == ["9.0"]
        assert {"cuda_nvcc", "cuda_cudart", "cudnn"} <= set(gpu["packages"])
        assert gpu["HERD_LOCK"] == "third_party/python/requirements_gpu_lock.txt"
        assert (PACKAGE_ROOT / gpu["HERD_LOCK"]).is_file() and (PACKAGE_ROOT / cpu["HERD_LOCK"]).is_file()
