"""The package's layers (ARCHITECTURE.md): imports only go down, with no cycle, and the front
ends (fastconv.torch, fastconv.jax, fastconv.dask) use the public API only."""
import ast
import pathlib

import pytest

import fastconv

PACKAGE = pathlib.Path(fastconv.__file__).parent
FRONT_ENDS = ("fastconv.torch", "fastconv.jax", "fastconv.dask")
PUBLIC = ("fastconv", "fastconv.grad", "fastconv.config", "fastconv.planning",
          "fastconv.operators")


def module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")
           if "benchmarks" not in p.parts and p.name != "_build_info.py"}
COMPILED = {module_name(p) for p in PACKAGE.rglob("*.pyx")}


def imports_of(name):
    """The fastconv modules `name` imports (anywhere in its source, lazily or not)."""
    tree = ast.parse(MODULES[name].read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("fastconv")}
        elif isinstance(node, ast.ImportFrom) and node.module and \
                node.module.startswith("fastconv"):
            for alias in node.names:   # `from fastconv import grad` imports a module
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES or sub in COMPILED else node.module)
    return found - {name}


GRAPH = {name: imports_of(name) for name in MODULES}


def test_the_import_graph_has_no_cycle():
    # the package root re-exports everything: edges into it are the public API, not layers
    graph = {n: {m for m in deps if m != "fastconv" and m in GRAPH}
             for n, deps in GRAPH.items() if n != "fastconv"}
    state = {}

    def visit(node, path):
        state[node] = "open"
        for dep in graph.get(node, ()):
            if state.get(dep) == "open":
                pytest.fail("import cycle: " + " -> ".join(path + [node, dep]))
            if dep not in state:
                visit(dep, path + [node])
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node, [])


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_front_ends_import_only_the_public_api(front_end):
    private = {m for m in GRAPH[front_end]
               if any(part.startswith("_") for part in m.split("."))}
    assert not private, f"{front_end} imports private modules {sorted(private)}"
    assert GRAPH[front_end] <= set(PUBLIC) | set(FRONT_ENDS)


@pytest.mark.parametrize("layer, forbidden", [
    ("fastconv._runtime", ("fastconv._plan", "fastconv._ops") + FRONT_ENDS + PUBLIC[1:]),
    ("fastconv._plan", ("fastconv._ops",) + FRONT_ENDS + PUBLIC[1:]),
    ("fastconv._ops", FRONT_ENDS + PUBLIC[1:]),
])
def test_lower_layers_never_import_higher_ones(layer, forbidden):
    for name, deps in GRAPH.items():
        if name.startswith(layer):
            bad = {d for d in deps if d.startswith(forbidden)}
            assert not bad, f"{name} imports {sorted(bad)} from a higher layer"


@pytest.mark.parametrize("module, name, home", [
    ("fastconv.dispatch", "RULES", "fastconv.planning"),
    ("fastconv.convolution", "conv2d", "fastconv"),
    ("fastconv.conv_grad", "conv2d_input", "fastconv.grad"),
    ("fastconv.conv_transpose", "conv_transpose2d", "fastconv"),
    ("fastconv.locally_connected", "locally_connected2d", "fastconv"),
    ("fastconv.pooling", "pool_output_size", "fastconv.planning"),
    ("fastconv.resample", "interpolate_output_size", "fastconv.planning"),
])
def test_the_flat_modules_of_0_1_still_import_and_say_where_names_moved(module, name, home):
    import importlib
    import sys
    sys.modules.pop(module, None)
    with pytest.warns(DeprecationWarning, match=home.replace(".", r"\.")):
        alias = importlib.import_module(module)
    assert getattr(alias, name) is getattr(importlib.import_module(home), name)
