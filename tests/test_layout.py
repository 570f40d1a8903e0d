"""The package's shape: no module imports one that imports it back (directly or around a
longer loop, function-level imports included), so each can be read and changed from the
bottom up (ARCHITECTURE.md's layout)."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent / "mlp_jax"


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: pathlib.Path, modules) -> set[str]:
    """The package's modules that ``name`` imports with relative imports, anywhere in it."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.ImportFrom) and node.level):
            continue
        base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
        target = f"{base}.{node.module}" if node.module else base
        if node.module and target in modules:
            found.add(target)
        found.update(f"{target}.{a.name}" for a in node.names
                     if f"{target}.{a.name}" in modules)
    return found - {name, "mlp_jax"}  # the top package re-exports lazily (PEP 562)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every loop of imports, each as the path that closes it (depth-first search)."""
    found, state = [], {}

    def visit(v, path):
        state[v] = "open"
        for w in sorted(edges[v]):
            if state.get(w) == "open":
                found.append(path[path.index(w):] + [w])
            elif w not in state:
                visit(w, path + [w])
        state[v] = "done"

    for v in sorted(edges):
        if v not in state:
            visit(v, [v])
    return found


def test_cycles_finds_a_loop_and_nothing_else():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_no_import_cycle():
    modules = _modules()
    assert {"mlp_jax.train", "mlp_jax.parallel", "mlp_jax.checkpoint"} <= set(modules)
    edges = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert "mlp_jax.checkpoint" in edges["mlp_jax.train"]  # function-level imports read too
    assert cycles(edges) == []
