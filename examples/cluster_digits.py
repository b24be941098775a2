"""Geodesic vs Euclidean clustering and kNN classification of the digits' latent codes (the default model).

Trains the default VAE on the scikit-learn digits (pixels / 16, seed 0), encodes the posterior means, and builds the
latent graph (k = 10) whose edges carry lengths under the pullback metric of the RBF-variance decoder. Then:

1. Clustering, 10 clusters, 10 seeds (mean +- std): GeodesicKMeans on the pullback graph; two controls that isolate
   where a difference comes from: GeodesicKMeans on the plain kNN graph (Euclidean edge lengths: the graph's
   shape without the metric) and Euclidean k-medoids (GeodesicKMeans on the precomputed Euclidean distance
   matrix: the same algorithm without any graph); and scikit-learn's KMeans (n_init=1) on the same codes.
   Scores: ARI, NMI and the class-to-cluster F-measure: F = sum over digits c of (n_c / n) * max over clusters k of
   F1(c, k), F1 = 2 P R / (P + R) with P = n_ck / n_k, R = n_ck / n_c (Larsen & Aone 1999; the best-matching
   cluster of each class, a cluster may match several classes).
2. 5-fold stratified CV accuracy of Pipeline(GeodesicDistance, KNeighborsClassifier(metric="precomputed")) vs the
   Euclidean KNeighborsClassifier on the codes; the graph is rebuilt on each training fold, test codes attach.
3. Why: metric/Euclidean length ratio of the graph's edges within and between digits, and the digits each method
   merges (classes that are the majority of no cluster) in its best-inertia run.

Run:  .venv/bin/python examples/cluster_digits.py [--seeds 10] [--progress]
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits
from sklearn.metrics import pairwise_distances
from sklearn.metrics.cluster import contingency_matrix
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline

from lsg_graph.cluster import GeodesicKMeans, clustering_scores
from lsg_graph.distances import GeodesicDistance
from lsg_graph.errors import DisconnectedGraphWarning
from lsg_graph.graph.latent_graph import LatentGraph, build_latent_graph
from lsg_graph.metric import PullbackMetric
from lsg_graph.model import VAEConfig, encode_codes, train_vae

N_CLUSTERS = 10
SCORES = ("ari", "nmi", "f_measure")


def cluster_methods(graph: LatentGraph, codes: np.ndarray) -> dict[str, Callable[[int], tuple[np.ndarray, float]]]:
    """Each method: seed -> (labels (n,), inertia in its own units)."""
    euclidean = pairwise_distances(codes)

    def geodesic_kmeans(**params: Any) -> Callable[[int], tuple[np.ndarray, float]]:
        def fit(seed: int) -> tuple[np.ndarray, float]:
            model = GeodesicKMeans(N_CLUSTERS, random_state=seed, **params).fit(codes)
            return model.labels_, model.inertia_

        return fit

    def precomputed(seed: int) -> tuple[np.ndarray, float]:
        model = GeodesicKMeans(N_CLUSTERS, random_state=seed, metric="precomputed").fit(euclidean)
        return model.labels_, model.inertia_

    def kmeans(seed: int) -> tuple[np.ndarray, float]:
        model = KMeans(N_CLUSTERS, n_init=1, random_state=seed).fit(codes)
        return model.labels_, model.inertia_

    return {
        "geodesic k-medoids, pullback graph": geodesic_kmeans(graph=graph),
        "geodesic k-medoids, kNN graph (Euclidean edges)": geodesic_kmeans(n_neighbors=10),
        "Euclidean k-medoids (precomputed)": precomputed,
        "Euclidean KMeans (sklearn, n_init=1)": kmeans,
    }


def clustering_table(graph: LatentGraph, codes: np.ndarray, labels: np.ndarray, seeds: int) -> dict[str, Any]:
    """Scores (mean, std over seeds) per method, and each method's best-inertia labels; prints the table."""
    print(f"\nClustering, {N_CLUSTERS} clusters, {seeds} seeds (mean +- std)")
    print(f"{'method':50s} {'ARI':>15s} {'NMI':>15s} {'F-measure':>15s} {'s/fit':>6s}")
    best: dict[str, np.ndarray] = {}
    for name, fit in cluster_methods(graph, codes).items():
        started = time.perf_counter()
        runs = [fit(seed) for seed in range(seeds)]
        seconds = (time.perf_counter() - started) / seeds
        scores = np.array([[clustering_scores(labels, run[0])[key] for key in SCORES] for run in runs])
        cells = " ".join(f"{m:7.3f} +- {s:5.3f}" for m, s in zip(scores.mean(0), scores.std(0)))
        print(f"{name:50s} {cells} {seconds:6.2f}")
        best[name] = min(runs, key=lambda run: run[1])[0]
    return best


def cv_table(vae: Any, codes: np.ndarray, labels: np.ndarray) -> None:
    """5-fold CV accuracy of geodesic (pullback and plain kNN graph) vs Euclidean kNN classifiers; prints it."""
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    decoder = vae.decoder("rbf")
    print("\n5-fold CV accuracy of kNN classifiers on the codes (mean +- std over folds)")
    print(f"{'n_neighbors':>11s} {'geodesic (pullback)':>20s} {'geodesic (kNN graph)':>21s} {'Euclidean':>16s}")
    for n_neighbors in (1, 5, 10):
        classifier = KNeighborsClassifier(n_neighbors, metric="precomputed")
        pullback = Pipeline([("geo", GeodesicDistance(decoder=decoder)), ("knn", classifier)])
        plain = Pipeline([("geo", GeodesicDistance()), ("knn", classifier)])
        cells = []
        for model in (pullback, plain, KNeighborsClassifier(n_neighbors)):
            accuracy = cross_val_score(model, codes, labels, cv=folds)
            cells.append(f"{accuracy.mean():.4f} +- {accuracy.std():.4f}")
        print(f"{n_neighbors:11d} {cells[0]:>20s} {cells[1]:>21s} {cells[2]:>16s}")


def edge_ratios(graph: LatentGraph, labels: np.ndarray) -> None:
    """Median metric / Euclidean length of the graph's edges within one digit and between two digits; prints it."""
    upper = graph.weights.tocoo()
    keep = upper.row < upper.col
    rows, cols, lengths = upper.row[keep], upper.col[keep], upper.data[keep]
    ratio = lengths / np.linalg.norm(graph.codes[rows] - graph.codes[cols], axis=1).clip(1e-12)
    same = labels[rows] == labels[cols]
    print(
        f"\nEdges: {same.sum()} within a digit, {(~same).sum()} between digits; median metric/Euclidean length "
        f"within {np.median(ratio[same]):.1f}, between {np.median(ratio[~same]):.1f} "
        f"(between/within = {np.median(ratio[~same]) / np.median(ratio[same]):.2f})"
    )


def merges(best: dict[str, np.ndarray], labels: np.ndarray) -> None:
    """Per method: each cluster's majority digit and purity; digits that are the majority of no cluster; prints it."""
    print("\nBest-inertia run of each method: cluster -> majority digit (purity); digits no cluster is mostly about")
    for name, predicted in best.items():
        table = contingency_matrix(labels, predicted)  # (digits, clusters)
        majority = table.argmax(axis=0)
        purity = table.max(axis=0) / table.sum(axis=0)
        parts = " ".join(f"{d}({p:.2f})" for d, p in sorted(zip(majority, purity), key=lambda item: item[0]))
        lost = sorted(set(range(table.shape[0])) - set(majority.tolist()))
        absorbed = {d: int(majority[table[d].argmax()]) for d in lost}
        print(f"  {name}\n    clusters: {parts}\n    merged digits (digit -> absorbed by cluster of): {absorbed}")


def main() -> None:
    """Train, build the graph, print the three tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10, help="clustering seeds")
    parser.add_argument("--progress", action="store_true", help="show a training progress bar")
    args = parser.parse_args()
    warnings.simplefilter("ignore", DisconnectedGraphWarning)

    digits = load_digits()
    images, labels = (digits.data / 16.0).astype(np.float32), digits.target
    vae, report = train_vae(images, VAEConfig(input_dim=64, seed=0), progress=args.progress)
    codes = encode_codes(vae, images).astype(np.float64)
    started = time.perf_counter()
    graph = build_latent_graph(PullbackMetric(vae.decoder("rbf")), codes, labels, k=10)
    print(
        f"digits: {len(images)} images; VAE trained in {report.seconds:.1f} s; graph over the codes in "
        f"{time.perf_counter() - started:.1f} s ({graph.n_edges} edges, {graph.params['n_bridges']} bridge(s))"
    )

    best = clustering_table(graph, codes, labels, args.seeds)
    cv_table(vae, codes, labels)
    edge_ratios(graph, labels)
    merges(best, labels)


if __name__ == "__main__":
    main()
