"""herd_experiment: an experiment as a pinned Bazel target, `./bazelw run //experiments:<name>`."""

def herd_experiment(name, deps = [], data = []):
    """A py_binary running experiments/launch.py on module experiments/<name>.py.

    Its default config, experiments/configs/<name>.yaml, travels with it when it exists.
    """
    native.py_binary(
        name = name,
        srcs = ["launch.py", name + ".py"],
        main = "launch.py",
        args = [name],
        data = data + native.glob(["configs/%s.yaml" % name]),
        deps = deps + [":spine"],
    )
