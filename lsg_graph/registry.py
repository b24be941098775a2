"""The vocabulary of lsg-graph: every option name and every default, defined once.

The modules that implement an option keep their own registry of implementations keyed by these names
(`lsg_graph.graph.knn.KNN_BACKENDS`, `lsg_graph.geodesics.refine.REFINE_METHODS`, `lsg_graph.walks.WALK_KINDS`,
`lsg_graph.data.DATASETS`, ...); `tests/test_registry.py` checks that their keys are exactly the names listed here.
The CLI builds its choices, their `--help` text and shell completion from this module, and every library default
below is imported from here, so a name or default cannot drift between the library, the CLI and the README.

This module imports nothing (it is light enough for the CLI to read at start-up without torch).

Seeds: functions and the CLI take ``seed`` (a non-negative int, checked by `lsg_graph._validation.check_seed`);
scikit-learn-style estimators (GeodesicKMeans, GeodesicDistance) take ``random_state`` as scikit-learn's do (None, an
int or a numpy RandomState).
"""

from __future__ import annotations

__all__ = [
    "ARCHITECTURES",
    "CLUSTER_ALGORITHMS",
    "DATA_SPECS",
    "DEFAULT_ARCHITECTURE",
    "DEFAULT_BACKEND",
    "DEFAULT_CANDIDATES",
    "DEFAULT_CLUSTER_ALGORITHM",
    "DEFAULT_DATA",
    "DEFAULT_DEVICE",
    "DEFAULT_DPI",
    "DEFAULT_EMBEDDING_COMPONENTS",
    "DEFAULT_EMBEDDING_LANDMARKS",
    "DEFAULT_HEALTH_PAIRS",
    "DEFAULT_HELD_OUT_FRACTION",
    "DEFAULT_IWAE_SAMPLES",
    "DEFAULT_LATENT_DIM",
    "DEFAULT_K",
    "DEFAULT_N_CLUSTERS",
    "DEFAULT_N_NODES",
    "DEFAULT_REFINE",
    "DEFAULT_RBF_GATE",
    "DEFAULT_SEED",
    "DEFAULT_VARIANCE",
    "DEFAULT_WALK_KIND",
    "DEVICES",
    "FIGURE_FORMATS",
    "KNN_BACKENDS",
    "RBF_GATES",
    "REFINE_METHODS",
    "VARIANCES",
    "WALK_KINDS",
]

# ---------------------------------------------------------------------------------------------------------------
# Names (name -> one-line description, in the order --help lists them)
# ---------------------------------------------------------------------------------------------------------------

CLUSTER_ALGORITHMS: dict[str, str] = {
    "auto": "embedding for codes of latent dimension 8 or more on graph distances (no landmarks), else medoids",
    "medoids": "k-medoids on graph distances (geodesic k-means as in Arvanitidis et al. 2018)",
    "embedding": "k-means in the landmark MDS embedding of the graph distances (GeodesicEmbedding)",
}

KNN_BACKENDS: dict[str, str] = {
    "auto": "kdtree for d <= 16 on the CPU, faiss beyond; faiss-gpu or torch on CUDA",
    "faiss": "faiss, exact (IVF for large approximate searches; a GPU index with faiss-gpu)",
    "torch": "brute force in torch, on any device",
    "kdtree": "the cKDTree of scipy (exact; fast for small d)",
    "faiss-ivf": "faiss IVF, approximate, CPU, for 1e5+ codes (exact below 1e4)",
    "faiss-hnsw": "faiss HNSW, approximate, CPU, for 1e5+ codes (exact below 1e4)",
}

REFINE_METHODS: dict[str, str] = {
    "auto": "Gauss-Newton on the output-space energy, polished by shooting at d <= 2",
    "gauss_newton": "Levenberg-Marquardt on the output-space discrete energy",
    "shooting": "multiple shooting from the graph path",
    "energy": "L-BFGS on the latent midpoint energy",
    "none": "the graph path itself",
}

WALK_KINDS: dict[str, str] = {
    "euclidean": "covariance s I",
    "metric": "covariance s M^-1",
    "brownian": "the metric walk plus the manifold drift",
}

VARIANCES: dict[str, str] = {
    "rbf": "the paper's RBF precision network (stage 2)",
    "standard": "the usual MLP variance head (stage 1)",
}

RBF_GATES: dict[str, str] = {
    "codes": "precision gated off beyond about gate_scale nearest-neighbour spacings from every training code",
    "none": "the RBF network of the paper alone (k-means centres; sigma can fall between codes at high d)",
    "shell": "precision gated off where the Mahalanobis radius of the codes is atypical: inside the thin shell a high-d "
             "code cloud lies on, and beyond it",
}

ARCHITECTURES: dict[str, str] = {
    "mlp": "MLP encoder and mean decoder",
    "conv": "convolutional encoder and mean decoder for images (H and W divisible by 4)",
}

DATA_SPECS: dict[str, str] = {  # data set spec prefix -> its form (lsg_graph.data.load_dataset)
    "digits": "digits",
    "idx": "idx:DIR",
    "npz": "npz:FILE",
    "npy": "npy:FILE",
    "csv": "csv:FILE[?label=last|first|none|COL][&scale=S]",
}

DEVICES: dict[str, str] = {
    "auto": "CUDA when available, else the CPU",
    "cpu": "the CPU",
    "cuda": "the current CUDA device (cuda:I for another)",
}

FIGURE_FORMATS: tuple[str, ...] = ("png", "svg", "pdf")

# ---------------------------------------------------------------------------------------------------------------
# Defaults
# ---------------------------------------------------------------------------------------------------------------

DEFAULT_K = 20  # neighbours per code: the smallest k with <= 2% median distance error (docs/results.md)
DEFAULT_N_NODES = 8  # Gauss-Legendre nodes per edge
DEFAULT_CANDIDATES = 1  # metric-aware neighbours: measure candidates * k Euclidean neighbours, keep the k shortest
DEFAULT_N_CLUSTERS = 10
DEFAULT_CLUSTER_ALGORITHM = "auto"  # GeodesicKMeans algorithm (CLUSTER_ALGORITHMS)
DEFAULT_EMBEDDING_COMPONENTS = 32  # GeodesicEmbedding output dimensions (docs/estimators.md)
DEFAULT_EMBEDDING_LANDMARKS = 1000  # GeodesicEmbedding landmark codes (Dijkstra sources), clipped to n
DEFAULT_SEED = 0
DEFAULT_BACKEND = "auto"
DEFAULT_REFINE = "auto"
DEFAULT_WALK_KIND = "metric"
DEFAULT_VARIANCE = "rbf"
DEFAULT_RBF_GATE = "none"
DEFAULT_ARCHITECTURE = "mlp"
DEFAULT_DEVICE = "auto"
DEFAULT_DATA = "digits"
DEFAULT_HELD_OUT_FRACTION = 0.2  # rows held out of training (evaluate, examples/paper_claims.py): one split
DEFAULT_LATENT_DIM = 2  # lets the geometry be drawn
DEFAULT_IWAE_SAMPLES = 256  # importance samples per point of the held-out log-likelihood bound
DEFAULT_HEALTH_PAIRS = 8  # code pairs refined by the geometry health check
DEFAULT_DPI = 100  # figures: 900 x 600 pixels for the default 9 x 6 inches
