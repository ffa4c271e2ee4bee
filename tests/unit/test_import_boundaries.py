"""The import graph of gainrl/, read from the source (ast): pure math stays pure, collectives stay in dist.py,
nothing depends on the trainer, and there are no cycles."""
import ast
import os
import sys

from tests.helpers import REPO

PACKAGE = os.path.join(REPO, "gainrl")
# function-local imports of gainrl's own modules, each buying start-up time (matplotlib, or datasets + math_verify)
LAZY_INTERNAL = {("gainrl.trainer", "gainrl.plots"), ("gainrl.scorer", "gainrl.plots"),
                 ("gainrl.slurm", "gainrl.evaluation.config"), ("gainrl.slurm", "gainrl.evaluation.report"),
                 ("gainrl.slurm", "gainrl.evaluation.benchmarks"), ("gainrl.slurm", "gainrl.evaluation.evaluate")}


def module_name(path: str) -> str:
    rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
    return rel.removesuffix(".__init__")


def sources() -> dict[str, str]:
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                found[module_name(os.path.join(folder, name))] = os.path.join(folder, name)
    return found


def imports(module: str, path: str) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import statement of the file, relative ones resolved."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.append((base, id(node) in top_level))
            # `from . import dist` imports the module gainrl.dist; `from torch import distributed` likewise
            found += [(f"{base}.{alias.name}", id(node) in top_level) for alias in node.names]
    return found


def internal_graph() -> dict[str, set[str]]:
    modules = sources()
    return {name: {target for target, _ in imports(name, path) if target in modules and target != name}
            for name, path in modules.items()}


def test_algo_and_angles_import_only_torch_and_the_standard_library():
    allowed_roots = set(sys.stdlib_module_names) | {"torch", "__future__"}
    for name, path in sources().items():
        if name.startswith("gainrl.algo") or name == "gainrl.angles":
            bad = {target for target, _ in imports(name, path)
                   if target.split(".")[0] not in allowed_roots and not target.startswith("gainrl.algo")}
            bad -= {t for t in bad if t.rpartition(".")[0] in bad}  # `from x import y` lists x.y too
            assert not bad, f"{name} imports {sorted(bad)}"


def uses_torch_distributed_attribute(path: str) -> bool:
    """`torch.distributed.x` reached through a plain `import torch`."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    return any(isinstance(node, ast.Attribute) and node.attr == "distributed" and isinstance(node.value, ast.Name)
               and node.value.id == "torch" for node in ast.walk(tree))


def test_only_dist_imports_torch_distributed():
    users = {name for name, path in sources().items()
             if any(target == "torch.distributed" or target.startswith("torch.distributed.")
                    for target, _ in imports(name, path)) or uses_torch_distributed_attribute(path)}
    assert users == {"gainrl.dist"}


def test_no_module_imports_the_trainer():
    importers = {name for name, targets in internal_graph().items() if "gainrl.trainer" in targets}
    assert not importers, f"{sorted(importers)} import gainrl.trainer"


def test_no_import_cycles_even_through_function_local_imports():
    graph = internal_graph()
    for name in graph:  # packages import their children by design: an edge from a child to its parent is no cycle
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(target):] + [target]))
            if target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_internal_imports_are_at_module_level_unless_they_buy_start_up_time():
    modules = sources()
    lazy = {(name, target) for name, path in modules.items() for target, top in imports(name, path)
            if not top and target in modules}
    assert lazy <= LAZY_INTERNAL, f"function-local imports of gainrl modules: {sorted(lazy - LAZY_INTERNAL)}"


def test_the_graph_reader_sees_the_edges_it_is_meant_to_catch():
    graph = internal_graph()  # a checker that found no edges would pass everything above
    assert {"gainrl.dist", "gainrl.checkpoint", "gainrl.rollout", "gainrl.algo"} <= graph["gainrl.trainer"]
    assert "gainrl.models" in graph["gainrl.export"] | graph["gainrl.checkpoint"]
    assert ("torch.distributed", True) in imports("gainrl.dist", os.path.join(PACKAGE, "dist.py"))
