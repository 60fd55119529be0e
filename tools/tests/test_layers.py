"""The layering rule of the top README, checked on every import in the tree (lazy imports inside functions too):
each package imports only the packages below it and the declared contracts, no non-test file imports test code,
and no two files import each other, directly or around a loop."""

from __future__ import annotations

import ast
from pathlib import Path

from tools.paths import PACKAGE_ROOT

PACKAGES = ("tools", "kernels", "model", "data", "training", "eval", "experiments")
# What each package may import (besides itself), bottom to top.
ALLOWED = {
    "tools": set(),
    "kernels": {"tools"},
    "model": {"tools"},
    "data": {"tools", "kernels", "model"},
    "training": {"tools", "kernels", "model"},
    "eval": {"tools", "model"},
    "experiments": {"tools", "kernels", "model", "data", "training", "eval"},
}
# How data, training and eval talk to each other: the shard format (and the mix weights it is organised by) and
# the post-training record formats (dialogs and preferences).
CONTRACTS = {"training": {"data.shards", "data.dialogs"}, "eval": {"data.shards", "data.dialogs"}}


def python_files() -> list[Path]:
    return sorted(f for pkg in PACKAGES for f in (PACKAGE_ROOT / pkg).rglob("*.py") if "__pycache__" not in f.parts)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import of one of our packages in the file, at any depth."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import name` may name a submodule: count pkg.name when that file exists.
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                is_module = (PACKAGE_ROOT / sub.replace(".", "/")).with_suffix(".py").is_file() or (
                    PACKAGE_ROOT / sub.replace(".", "/") / "__init__.py"
                ).is_file()
                out.append((node.lineno, sub if is_module else node.module))
    return [(line, m) for line, m in out if m.split(".")[0] in PACKAGES]


def is_test(module: str) -> bool:
    return ".tests." in f".{module}." or module.endswith("conftest")


def allowed(src: str, dst: str) -> bool:
    src_pkg, dst_pkg = src.split(".")[0], dst.split(".")[0]
    if is_test(dst) and not is_test(src):
        return False  # product code never imports test code
    if src_pkg == dst_pkg or dst_pkg in ALLOWED[src_pkg]:
        return True
    return any(dst == c or dst.startswith(c + ".") for c in CONTRACTS.get(src_pkg, ()))


def graph() -> dict[str, list[tuple[int, str]]]:
    return {module_name(f): imports(f) for f in python_files()}


def test_every_import_follows_the_layering_rule():
    bad = [
        f"{src.replace('.', '/')}.py:{line} imports {dst}"
        for src, edges in graph().items()
        for line, dst in edges
        if not allowed(src, dst)
    ]
    assert not bad, "imports the layering rule (README.md) does not allow:\n" + "\n".join(bad)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter[0]
                    counter[0] += 1
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(sorted(edges.get(nxt, ())))))
                elif nxt in on:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_no_file_level_import_cycles():
    g = graph()
    # An edge to a package (`from data import x` where x is not a module) is an edge to its __init__.
    edges = {src: {dst for _, dst in e if dst in g and dst != src} for src, e in g.items()}
    found = cycles(edges)
    assert not found, "files that import each other (directly or around a loop):\n" + "\n".join(
        " <-> ".join(c) for c in found
    )


def test_the_scanner_sees_lazy_imports_and_submodule_imports(tmp_path):
    f = PACKAGE_ROOT / "tools" / "tests" / "test_layers.py"
    assert (1, "tools.paths") not in imports(f)  # sanity: line numbers are real
    src = tmp_path / "x.py"
    src.write_text("def f():\n    from model import llama\n    import eval.niah\n")
    got = [m for _, m in imports(src)]
    assert got == ["model.llama", "eval.niah"]
    assert not allowed("kernels.modules", "model.llama") and not allowed("training.gates", "eval.niah")
    assert not allowed("training.benchmarks.tiny_recipe", "training.tests.helpers")
    assert allowed("training.data", "data.shards") and allowed("experiments.report", "eval.harness")
