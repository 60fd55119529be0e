"""py_pytests: one py_test per test file, each running pytest on that single file.

List test files explicitly (no glob): //tools:test_build_coverage fails when a test file in the
tree is not named by some py_test, so BUILD files and the test tree cannot drift apart.
"""

def py_pytests(srcs, deps = [], data = [], size = "medium", timeout = None, tags = [], env = {}):
    for src in srcs:
        name = src.rsplit("/", 1)[-1][:-len(".py")]
        native.py_test(
            name = name,
            srcs = [src, "//tools:pytest_main.py"],
            main = "//tools:pytest_main.py",
            args = ["$(location %s)" % src],
            # conftest.py (in every test's data) imports tools.
            deps = deps if "//tools" in deps or ":tools" in deps else deps + ["//tools"],
            data = data + ["//:pytest_config"],
            size = size,
            timeout = timeout,
            tags = tags,
            env = env,
            python_version = "PY3",
        )
