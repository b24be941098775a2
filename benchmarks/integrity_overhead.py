"""Cost of run integrity: transactional saves, the reader lock and the model-checksum binding, against the plain
atomic writes and loads they wrap (same process, interleaved repeats, best of 5).

Rows: save a graph (plain `_io.save_arrays` + manifest vs `LatentGraph.save`, a run transaction), load a graph
(`LatentGraph.load` vs `pipeline.load_graph`, which also hashes the model and takes the read lock), save a model
(plain `save_tensors` vs `VAE.save`, a transaction with model.json and manifest). Writes
benchmarks/results/integrity_overhead.json.

    python benchmarks/integrity_overhead.py [--nodes 60000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_of, finish, machine, table, use_threads, write_json  # noqa: E402
from _models import untrained  # noqa: E402

from lsg_graph import _io  # noqa: E402
from lsg_graph.graph.latent_graph import GRAPH_FILE, GRAPH_KIND, LatentGraph  # noqa: E402
from lsg_graph.model import MODEL_FILE, MODEL_KIND  # noqa: E402
from lsg_graph.pipeline import load_graph, model_checksum  # noqa: E402


def random_graph(n: int, degree: int = 20) -> LatentGraph:
    rng = np.random.default_rng(0)
    rows = np.repeat(np.arange(n), degree)
    cols = (rows + rng.integers(1, n, size=rows.size)) % n
    lengths = rng.uniform(0.1, 1.0, size=rows.size)
    weights = sp.coo_matrix((np.r_[lengths, lengths], (np.r_[rows, cols], np.r_[cols, rows])), shape=(n, n)).tocsr()
    weights.sum_duplicates()
    return LatentGraph(rng.normal(size=(n, 2)), weights, np.arange(n) % 10, {"k": degree})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=60_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    use_threads(1)
    info = machine()
    root = Path(tempfile.mkdtemp(prefix="lsg-integrity-bench-"))
    run, plain = root / "run", root / "plain"
    plain.mkdir()
    model = untrained(784, n_centers=64)  # benchmarks/_models.py: random weights, the size of an MNIST model
    model.save(run)
    graph = random_graph(args.nodes)
    graph.params["model_sha256"] = model_checksum(run)
    graph.save(run)
    arrays, meta = _io.load_arrays(run / GRAPH_FILE, GRAPH_KIND)
    tensors, model_meta = _io.load_tensors(run / MODEL_FILE, MODEL_KIND)
    cpu = torch.device("cpu")

    def plain_graph_save() -> None:
        _io.save_arrays(plain / GRAPH_FILE, arrays, meta)
        _io.write_json(plain / _io.MANIFEST_NAME, {"artifacts": {"graph": {"files": {
            GRAPH_FILE: {"sha256": _io.sha256_file(plain / GRAPH_FILE)}}}}})

    rows = []
    cases = {
        "save graph": {"plain": plain_graph_save, "integrity": lambda: graph.save(run)},
        "load graph": {"plain": lambda: LatentGraph.load(run), "integrity": lambda: load_graph(run)},
        "save model": {"plain": lambda: _io.save_tensors(plain / MODEL_FILE, tensors, model_meta),
                       "integrity": lambda: model.save(run)},
    }
    for name, contenders in cases.items():
        if name == "load graph":
            model_checksum.__globals__["_CHECKSUMS"].clear()
            contenders["integrity (cold hash)"] = lambda: (model_checksum.__globals__["_CHECKSUMS"].clear(),
                                                          load_graph(run))
        times = best_of(contenders, args.repeats, cpu)
        base = min(times["plain"])
        for contender, seconds in times.items():
            rows.append({"case": name, "contender": contender, "seconds": min(seconds), "ratio": min(seconds) / base})
    print(table(f"Integrity overhead: graph of {args.nodes} nodes ({(run / GRAPH_FILE).stat().st_size / 2**20:.1f} MB), "
                f"model of {(run / MODEL_FILE).stat().st_size / 2**20:.1f} MB, best of {args.repeats}",
                [("case", "case", "str"), ("contender", "contender", "str"), ("seconds", "s", "s"),
                 ("ratio", "vs plain", "x")], rows))
    path = write_json("integrity_overhead", {"nodes": args.nodes, "repeats": args.repeats, "rows": rows,
                                              "machine": finish(info)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
