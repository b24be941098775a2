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
