"""Every test file in the tree is a Bazel py_test, so `./bazelw test //...` and `pytest` run the same tests.

BUILD files are Starlark, a subset of Python: they are evaluated here with recording stand-ins for the
rule functions. Under Bazel the tree is read through //:all_sources, whose globs change whenever a
test or BUILD file is added, so this test reruns instead of being served from the cache.
"""

from __future__ import annotations

import os
from pathlib import Path

SKIP_DIRS = {".git", ".venv", ".bazel", "runs", "__pycache__", ".pytest_cache", ".ruff_cache", "third_party"}
TEST_RULES = {"py_test", "py_pytests"}


def source_root() -> Path:
    """The checkout: this file is a symlink into it under Bazel, and lives in it under plain pytest."""
    return Path(__file__).resolve().parents[2]


def walk(root: Path):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.startswith("bazel-")]
        for name in filenames:
            yield Path(dirpath) / name


def is_test_file(path: Path) -> bool:
    return path.suffix == ".py" and (path.name.startswith("test_") or path.stem.endswith("_test"))


class _Namespace(dict):
    """Names a BUILD file uses: `glob` is real, every other unknown name records its call."""

    def __init__(self, package: Path, calls: list):
        super().__init__()
        self.package, self.calls = package, calls

    def __missing__(self, name):
        if name == "glob":
            return self._glob

        def record(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return None

        return record

    def _glob(self, include, exclude=(), **_):
        found = set()
        for pattern in include:
            found.update(str(p.relative_to(self.package)) for p in self.package.glob(pattern) if p.is_file())
        for pattern in exclude:
            found.difference_update(str(p.relative_to(self.package)) for p in self.package.glob(pattern))
        return sorted(found)


def targets_of(build_file: Path) -> set[Path]:
    """Absolute paths of the files named in srcs of the test rules of one BUILD file."""
    calls: list = []
    builtins = {"len": len, "list": list, "dict": dict, "str": str, "sorted": sorted, "range": range}
    code = compile(build_file.read_text(), str(build_file), "exec")
    exec(code, {"__builtins__": builtins}, _Namespace(build_file.parent, calls))
    named = set()
    for rule, _, kwargs in calls:
        if rule in TEST_RULES:
            named.update(build_file.parent / src for src in kwargs.get("srcs", []) if ":" not in src)
    return named


def owning_build(path: Path, root: Path) -> Path | None:
    for parent in path.parents:
        if (parent / "BUILD").is_file():
            return parent / "BUILD"
        if parent == root:
            return None
    return None


def uncovered(root: Path) -> list[str]:
    files = list(walk(root))
    named = set()
    for build in (f for f in files if f.name == "BUILD"):
        named |= targets_of(build)
    problems = []
    for path in sorted(f for f in files if is_test_file(f)):
        build = owning_build(path, root)
        if build is None:
            problems.append(f"{path.relative_to(root)}: no BUILD file above it")
        elif path not in named:
            problems.append(f"{path.relative_to(root)}: not in the srcs of any py_pytests in {build.relative_to(root)}")
    return problems


def test_every_test_file_is_a_bazel_test():
    root = source_root()
    problems = uncovered(root)
    assert not problems, "test files Bazel would not run:\n  " + "\n  ".join(problems)


def test_an_unlisted_test_file_is_reported(tmp_path):
    (tmp_path / "pkg" / "tests").mkdir(parents=True)
    (tmp_path / "pkg" / "BUILD").write_text(
        'load("//tools:pytest.bzl", "py_pytests")\n'
        'py_library(name = "pkg", srcs = glob(["*.py"]))\n'
        'py_pytests(srcs = ["tests/test_listed.py"], deps = [":pkg"])\n'
    )
    (tmp_path / "pkg" / "tests" / "test_listed.py").write_text("def test_x(): pass\n")
    assert uncovered(tmp_path) == []
    (tmp_path / "pkg" / "tests" / "test_forgotten.py").write_text("def test_y(): pass\n")
    (tmp_path / "loose").mkdir()
    (tmp_path / "loose" / "test_orphan.py").write_text("def test_z(): pass\n")
    assert uncovered(tmp_path) == [
        "loose/test_orphan.py: no BUILD file above it",
        "pkg/tests/test_forgotten.py: not in the srcs of any py_pytests in pkg/BUILD",
    ]


def test_bazel_sees_every_build_and_test_file():
    """Under Bazel, //:all_sources must carry every BUILD and test file (else edits would not rerun us)."""
    runfiles = os.environ.get("TEST_SRCDIR")
    root = source_root()
    wanted = {p.relative_to(root) for p in walk(root) if p.name == "BUILD" or is_test_file(p)}
    if runfiles:
        here = Path(runfiles) / os.environ.get("TEST_WORKSPACE", "herd")
        seen = {p for p in wanted if (here / p).exists()}
    else:
        seen = {p for p in wanted if (root / p).exists()}
    assert wanted - seen == set(), f"missing from //:all_sources: {sorted(map(str, wanted - seen))}"
