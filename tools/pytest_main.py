"""Entry point of every py_test made by py_pytests: runs pytest on the file(s) given as arguments."""

import os
import sys

import pytest


def main() -> int:
    tmp = os.environ.get("TEST_TMPDIR")
    if tmp:
        # Keep library caches (matplotlib, torch, triton, HF) inside the test's own scratch space.
        os.environ.setdefault("XDG_CACHE_HOME", os.path.join(tmp, "cache"))
        os.environ.setdefault("MPLCONFIGDIR", os.path.join(tmp, "mpl"))
        os.environ.setdefault("TRITON_CACHE_DIR", os.path.join(tmp, "triton"))
        os.environ.setdefault("HF_HOME", os.path.join(tmp, "hf"))
    args = ["-p", "no:cacheprovider", *sys.argv[1:]]
    if os.environ.get("XML_OUTPUT_FILE"):
        args += ["--junitxml", os.environ["XML_OUTPUT_FILE"]]
    return pytest.main(args)


if __name__ == "__main__":
    sys.exit(main())
