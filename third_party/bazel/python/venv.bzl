"""A repository exposing the project's venv interpreter as the Python toolchain.

./bazelw passes the venv's absolute path as --repo_env=HERD_VENV; without it the rule falls back
to <workspace>/.venv. rules_python cannot be fetched offline, so this uses the native py_runtime.
"""

_BUILD = """
load("@bazel_tools//tools/python:toolchain.bzl", "py_runtime_pair")

py_runtime(
    name = "venv_runtime",
    interpreter_path = "{interpreter}",
    python_version = "PY3",
    # Without stub_shebang the launcher would need a `python` on PATH.
    stub_shebang = "#!/usr/bin/env python3",
)

py_runtime_pair(
    name = "venv_runtime_pair",
    py3_runtime = ":venv_runtime",
)

toolchain(
    name = "toolchain",
    toolchain = ":venv_runtime_pair",
    toolchain_type = "@bazel_tools//tools/python:toolchain_type",
)
"""

def _venv_python_impl(ctx):
    venv = ctx.os.environ.get("HERD_VENV")
    if not venv:
        venv = str(ctx.path(Label("//:WORKSPACE")).dirname) + "/.venv"
    interpreter = venv + "/bin/python3"
    if not ctx.path(interpreter).exists:
        fail("no interpreter at %s: run ./bazelw (it builds the venv from the lock)" % interpreter)
    ctx.file("WORKSPACE", 'workspace(name = "%s")\n' % ctx.name)
    ctx.file("BUILD", _BUILD.format(interpreter = interpreter))

venv_python = repository_rule(
    implementation = _venv_python_impl,
    environ = ["HERD_VENV"],
    local = True,
)
