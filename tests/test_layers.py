"""The package's layers, as its folders show them: each layer imports only the layers below it, and the
import graph of its modules has no cycle.

Read from the source (``ast``), so a function-level import counts as much as one at the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "kx_utils"

# lowest first: a module may import its own layer and the layers listed before it
LAYERS = ("runtime", "core", "data", "config", "experiments", "orchestration", "report", "bench", "cli")


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ("__main__", "__init__"):
        return "cli"  # the package's front: python -m kx_utils and its re-exports
    return parts[1]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[tuple[str, bool]]:
    """(imported kx_utils module, at module level?) for every import in ``path``."""
    tree = ast.parse(path.read_text())
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    top = {id(node) for node in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("kx_utils"):
                continue
            for alias in node.names:  # `from pkg import module` imports the module
                candidate = f"{target}.{alias.name}"
                known = (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(".py").exists() or \
                    (PACKAGE.parent / candidate.replace(".", "/")).is_dir()
                out.append((candidate if known else target, id(node) in top))
        elif isinstance(node, ast.Import):
            out += [(a.name, id(node) in top) for a in node.names if a.name.startswith("kx_utils")]
    return out


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def test_every_module_sits_in_a_layer_folder():
    loose = [m for m in all_modules() if layer_of(m) not in LAYERS]
    assert not loose, f"modules outside the layer folders {LAYERS}: {loose}"


def test_each_layer_imports_only_the_layers_below_it():
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    upward = []
    for module, path in all_modules().items():
        for target, _ in imports_of(path):
            if target == "kx_utils":
                continue
            if rank[layer_of(target)] > rank[layer_of(module)]:
                upward.append(f"{module} imports {target}")
    assert not upward, "imports from a higher layer:\n" + "\n".join(sorted(upward))


def test_the_algorithm_layer_imports_no_profile_cache_or_orchestration():
    """Tensors and settings objects in, results out: the runtime below it gives atomic checkpoint files
    (``fit``'s resume), never the artifact cache."""
    banned = ("kx_utils.config", "kx_utils.data", "kx_utils.experiments", "kx_utils.orchestration",
              "kx_utils.report", "kx_utils.bench")
    core = {m: p for m, p in all_modules().items() if layer_of(m) == "core"}
    found = [f"{m} imports {t}" for m, p in core.items() for t, _ in imports_of(p) if t.startswith(banned)]
    found += [f"{m} reads {word}" for m, p in core.items() for word in ("ArtifactStore", "profile.")
              if word in p.read_text()]
    assert not found, "\n".join(found)


def test_the_module_import_graph_has_no_cycle():
    modules = all_modules()
    graph = {m: sorted({t for t, top in imports_of(p) if top and t in modules and t != m}) for m, p in modules.items()}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m):
        state[m] = 1
        path.append(m)
        for t in graph[m]:
            if state.get(t) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(t):] + [t]))
            if t not in state:
                visit(t)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_the_checks_above_can_fail(tmp_path):
    """The reader sees relative, absolute and function-level imports."""
    f = PACKAGE / "core" / "_probe_for_test.py"
    try:
        f.write_text("from ..config.profiles import Profile\n\ndef g():\n    from kx_utils.orchestration import grid\n")
        found = imports_of(f)
    finally:
        f.unlink()
    assert ("kx_utils.config.profiles", True) in found and ("kx_utils.orchestration.grid", False) in found
