"""Data flows one way: no module imports from a layer to its right (read with ast, not by importing)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Module -> layer; a module may import only from layers <= its own.
LAYERS = {
    "lsg_graph": 0,
    "lsg_graph.errors": 0,
    "lsg_graph._validation": 0,
    "lsg_graph._io": 0,
    "lsg_graph._threads": 0,
    "lsg_graph.progress": 0,
    "lsg_graph.registry": 0,  # names and defaults only; imports nothing
    "lsg_graph.data": 1,
    "lsg_graph.forward_mode": 2,
    "lsg_graph.decoder": 2,
    "lsg_graph.manifolds": 2,
    "lsg_graph.model": 3,
    "lsg_graph.vae": 3,  # compatibility name of lsg_graph.model (re-exports only)
    "lsg_graph.metric": 4,
    "lsg_graph.graph": 5,
    "lsg_graph.distributed": 5,
    "lsg_graph.geodesics": 6,
    "lsg_graph.cluster": 7,
    "lsg_graph.walks": 7,
    "lsg_graph.distances": 7,
    "lsg_graph.embedding": 7,
    "lsg_graph.health": 7,
    "lsg_graph.estimator_io": 7,
    "lsg_graph.plot": 8,
    "lsg_graph.pipeline": 8,
    "lsg_graph.user_model": 8,
    "lsg_graph.serve": 8,
    "cli": 9,
}


def layer_of(module: str) -> int:
    """Layer of a dotted module name: the longest registered prefix decides."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise KeyError(module)


def project_modules() -> list[tuple[str, Path]]:
    """(dotted name, path) of every module of the library and the CLI."""
    modules = []
    for package in ("lsg_graph", "cli"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules.append((name, path))
    return modules


def imported_modules(path: Path) -> list[str]:
    """Project modules imported anywhere in a file (top level or inside functions)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names if node.module == "lsg_graph"]
    return [name for name in names if name.split(".")[0] in ("lsg_graph", "cli")]


@pytest.mark.parametrize("module,path", project_modules(), ids=[name for name, _ in project_modules()])
def test_no_import_reaches_right(module: str, path: Path) -> None:
    """Every project import points to a layer at or left of the importing module's layer."""
    own = layer_of(module)
    offenders = [name for name in imported_modules(path) if name != "lsg_graph" and layer_of(name) > own]
    assert not offenders, f"{module} (layer {own}) imports from layers to its right: {offenders}"


def test_package_import_needs_no_torchvision_or_matplotlib() -> None:
    """`import lsg_graph` and its core modules load neither torchvision nor matplotlib."""
    import subprocess
    import sys

    code = (
        "import sys, lsg_graph, lsg_graph.data, lsg_graph.model, lsg_graph.metric, lsg_graph.graph.latent_graph; "
        "assert 'torchvision' not in sys.modules and 'matplotlib' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registry_imports_nothing_of_the_project() -> None:
    """lsg_graph.registry is read by the CLI at start-up: it imports no project module (and so no torch)."""
    assert imported_modules(ROOT / "lsg_graph" / "registry.py") == []
    tree = ast.parse((ROOT / "lsg_graph" / "registry.py").read_text())
    imports = [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert all(isinstance(node, ast.ImportFrom) and node.module == "__future__" for node in imports)
