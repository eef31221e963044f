"""The layout's rule: nbtrain's modules depend on each other in one direction. A circle, even through an
import inside a function, means two modules that cannot be understood, tested or moved apart (issue 15
broke pipeline <-> kinds, bundle <-> predictor, training.progress <-> jupyter.view and the rest)."""

import ast
from pathlib import Path

import nbtrain

PACKAGE = Path(nbtrain.__file__).parent


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return name.removesuffix(".__init__")


def imports(path: Path, known: set) -> set:
    """The nbtrain modules `path` imports anywhere (functions included), less those under TYPE_CHECKING."""
    tree = ast.parse(path.read_text())
    typing_only = {id(node) for block in tree.body if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
                   for node in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found & known


def related(a: str, b: str) -> bool:
    """A package and its own submodules may import each other (a package's __init__ re-exports)."""
    return a.startswith(b + ".") or b.startswith(a + ".")


def circles(graph: dict) -> list:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v), on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1:
                groups.append(sorted(group))

    for v in graph:
        if v not in index:
            visit(v)
    return groups


def test_no_two_nbtrain_modules_import_each_other_even_lazily():
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: {m for m in imports(path, set(paths)) if m != name and not related(name, m)}
             for name, path in paths.items()}
    assert "nbtrain.pipeline" in graph and "nbtrain.kinds" in graph["nbtrain.pipeline"]  # the scan sees imports
    assert circles(graph) == []


def test_the_scan_finds_a_circle_through_an_import_inside_a_function():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]
