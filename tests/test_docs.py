"""The documentation cannot drift: docs/results.md is the output of docs/make_results.py, and the README's links and
Python example name things that exist."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _make_results():
    spec = importlib.util.spec_from_file_location("make_results", ROOT / "docs" / "make_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_results_page_is_generated_from_the_benchmark_json() -> None:
    """docs/results.md equals what docs/make_results.py renders from benchmarks/results/*.json (rerun it if not)."""
    module = _make_results()
    assert (ROOT / "docs" / "results.md").read_text() == module.render(), "run: python docs/make_results.py"


def test_results_page_has_a_section_per_results_file() -> None:
    """Every results file has its section, naming the benchmark script that wrote it (which exists)."""
    text = _make_results().render()
    for path in sorted((ROOT / "benchmarks" / "results").glob("*.json")):
        match = re.search(rf"^## {re.escape(path.stem)}\n\n`benchmarks/results/{re.escape(path.name)}`, written by `([^`]+)`",
                          text, flags=re.M)
        assert match, path.name
        assert (ROOT / match.group(1)).is_file(), match.group(1)


def test_readme_links_and_imports_exist() -> None:
    """Every relative link of the README points to a file, and every `from lsg_graph... import` it shows works."""
    import importlib

    readme = (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\(([^)#:]+)\)", readme):
        assert (ROOT / target).exists(), target
    for module, names in re.findall(r"^from (lsg_graph[\w.]*) import (.+)$", readme, flags=re.M):
        imported = importlib.import_module(module)
        for name in names.split(","):
            assert hasattr(imported, name.strip()), (module, name)


def test_readme_is_short() -> None:
    """The README stays what a user needs (measurements and design notes live in docs/)."""
    assert len((ROOT / "README.md").read_text().splitlines()) <= 180


# Exported names whose docstrings still lack the sections (the geodesics package, being reworked in another session).
NUMPYDOC_PENDING: set[str] = set()


def test_public_api_has_numpydoc_sections() -> None:
    """Every name lsg_graph exports, and every public method of an exported class, documents its parameters and
    what it returns in numpydoc sections (classes: Parameters or Attributes; methods without arguments: Returns)."""
    import inspect

    import lsg_graph

    missing = []
    for name in lsg_graph.__all__[1:]:
        obj = getattr(lsg_graph, name)
        doc = inspect.getdoc(obj) or ""
        if inspect.isclass(obj):
            if "Parameters\n---" not in doc and "Attributes\n---" not in doc:
                missing.append(name)
            for method_name, method in vars(obj).items():
                function = getattr(method, "__func__", method)
                if method_name.startswith("_") or not inspect.isfunction(function):
                    continue
                if "Returns\n---" not in (inspect.getdoc(function) or ""):
                    missing.append(f"{name}.{method_name}")
        elif "Parameters\n---" not in doc or "Returns\n---" not in doc:
            missing.append(name)
    assert set(missing) <= NUMPYDOC_PENDING, sorted(set(missing) - NUMPYDOC_PENDING)


# Benchmarks not yet on the shared model cache (none left).
BENCHMARKS_PENDING: set[str] = set()


def test_benchmarks_get_their_models_from_one_place() -> None:
    """Only benchmarks/_models.py trains (train_vae, train_run, refit_rbf) or builds a VAE; only benchmarks/_common.py
    writes the JSON results (json.dump): one cached model and one harness for every benchmark."""
    import ast

    makers = {"train_vae", "train_run", "refit_rbf", "VAE"}
    offenders = []
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        if path.name in BENCHMARKS_PENDING | {"_models.py"}:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if called in makers or (called in ("dump", "dumps") and path.name != "_common.py"):
                    offenders.append(f"{path.name}:{node.lineno} {called}")
    assert not offenders, offenders
