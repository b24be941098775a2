"""Build the API reference (HTML, from the numpydoc docstrings) with pdoc into docs/api/html; nothing is published.

    .venv/bin/python docs/build_api.py [--out docs/api/html]

CI runs it (`.ci/run`) and fails when pdoc warns (a module that does not import, a public name that does not
resolve). The package root exports its public names lazily; they are resolved first so that pdoc lists them.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def public_modules() -> list[str]:
    """lsg_graph and every submodule whose name has no leading underscore (the root's __all__ hides them from pdoc)."""
    import pkgutil

    import lsg_graph

    names = ["lsg_graph"]
    for info in pkgutil.iter_modules(lsg_graph.__path__, "lsg_graph."):  # subpackages bring their own modules
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return names


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "api" / "html")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import pdoc
    import pdoc.render

    import lsg_graph

    for name in lsg_graph.__all__:  # resolve the lazy exports, so that the root page documents them
        setattr(lsg_graph, name, getattr(lsg_graph, name))
    if args.out.exists():
        shutil.rmtree(args.out)
    pdoc.render.configure(docformat="numpy", search=False, show_source=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.pdoc(*public_modules(), output_directory=args.out)
    problems = [w for w in caught if "pdoc" in str(w.filename)]
    for warning in problems:
        print(f"pdoc: {warning.message}", file=sys.stderr)
    pages = sorted(args.out.rglob("*.html"))
    print(f"API reference: {args.out / 'index.html'} ({len(pages)} pages)")
    return 1 if problems or not (args.out / "lsg_graph.html").is_file() else 0


if __name__ == "__main__":
    sys.exit(main())
