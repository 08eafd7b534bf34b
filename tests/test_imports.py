"""The package's shape: no import cycles (type-only and function-level imports included), no re-export shims."""
import ast
from pathlib import Path

import pytest

TLKIT = Path(__file__).resolve().parents[1] / "tlkit"


def _module_name(path: Path) -> str:
    return "tlkit" if path.name == "__init__.py" else f"tlkit.{path.stem}"


def _tlkit_imports(tree: ast.AST) -> set[str]:
    """Every tlkit module an ``import`` anywhere in the file names (inside functions and TYPE_CHECKING too)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("tlkit.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "tlkit":
            if node.module == "tlkit":  # from tlkit import distributed -> the submodule
                found |= {f"tlkit.{a.name}" for a in node.names if (TLKIT / f"{a.name}.py").exists()}
            else:
                found.add(node.module)
    return found


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for path in sorted(TLKIT.glob("*.py")):
        name = _module_name(path)
        graph[name] = _tlkit_imports(ast.parse(path.read_text())) - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt, path + [nxt])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_find_cycle_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_tlkit_has_no_import_cycle():
    graph = import_graph()
    assert "tlkit.backbones" in graph and graph["tlkit.errors"] == set()  # the graph was read, errors is a leaf
    assert find_cycle(graph) is None


@pytest.mark.parametrize("path", sorted(TLKIT.glob("*.py")), ids=lambda p: p.name)
def test_no_module_reexports_another_modules_names(path):
    """A name in a module's ``__all__`` is defined there, not imported (no re-export shims)."""
    assert not reexported(ast.parse(path.read_text())), f"{path.name} re-exports names of other modules"


def reexported(tree: ast.Module) -> set[str]:
    """Names in the module's ``__all__`` that it imports rather than defines."""
    exported = {name for n in tree.body if isinstance(n, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "__all__" for t in n.targets)
                for name in ast.literal_eval(n.value)}
    imported = {a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names}
    return exported & imported


def test_the_reexport_check_catches_a_shim():
    assert reexported(ast.parse("from tlkit.explain import grad_cam\n__all__ = ['grad_cam', 'f']\ndef f(): pass\n")) \
        == {"grad_cam"}
    assert reexported(ast.parse("__all__ = ['f']\ndef f(): pass\n")) == set()


def test_leaf_modules_import_nothing_from_tlkit_but_leaves():
    graph = import_graph()
    assert graph["tlkit.errors"] == set()
    assert graph["tlkit.modes"] == set()
    assert graph["tlkit.storage"] <= {"tlkit.errors"}
    assert graph["tlkit.heads"] == set()
