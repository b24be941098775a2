"""One vocabulary: names and defaults come from lsg_graph.registry, the CLI and the README use exactly those, and the
validation layer has one message template, one seed check, caller-attributed warnings and no helper defined twice."""

from __future__ import annotations

import ast
import collections
import inspect
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer.main

from cli.main import app
from lsg_graph import registry
from lsg_graph.errors import InvalidInput

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------------------------
# The implementations are keyed by the registry's names, in its order
# ---------------------------------------------------------------------------------------------------------------


def test_implementation_registries_use_the_registry_names() -> None:
    """Every implementation registry has exactly the names lsg_graph.registry lists (so the CLI lists them all)."""
    from lsg_graph import data, plot, walks
    from lsg_graph.geodesics import refine
    from lsg_graph.graph import knn
    from lsg_graph.model import config

    assert list(knn.BACKEND_CHOICES) == list(registry.KNN_BACKENDS)
    assert set(refine.REFINE_METHODS) == set(registry.REFINE_METHODS)
    assert list(walks.WALK_KINDS) == list(registry.WALK_KINDS)
    assert list(data.DATASETS) == list(registry.DATA_SPECS)
    assert tuple(plot.FORMATS) == registry.FIGURE_FORMATS
    assert config.VARIANCES is registry.VARIANCES and config.RBF_GATES is registry.RBF_GATES
    assert config.ARCHITECTURES is registry.ARCHITECTURES


def _defaults() -> list[tuple[Callable[..., Any], str, Any]]:
    """(callable, parameter, registry default) for every public entry point that has the parameter."""
    from lsg_graph import health, pipeline, walks
    from lsg_graph.cluster import GeodesicKMeans, cluster_latent_graph
    from lsg_graph.data import train_test_split_indices
    from lsg_graph.distances import GeodesicDistance, geodesic_distances
    from lsg_graph.geodesics.refine import refine_geodesics, refine_path
    from lsg_graph.graph.knn import knn
    from lsg_graph.graph.latent_graph import build_latent_graph
    from lsg_graph.graph.weights import edge_lengths
    from lsg_graph.model import VAE, VAEConfig, iwae_log_likelihood, paper_claims

    R = registry
    return [
        (build_latent_graph, "k", R.DEFAULT_K), (pipeline.build_run, "k", R.DEFAULT_K),
        (pipeline.build_user_run, "k", R.DEFAULT_K), (GeodesicKMeans, "n_neighbors", R.DEFAULT_K),
        (GeodesicDistance, "n_neighbors", R.DEFAULT_K), (geodesic_distances, "n_neighbors", R.DEFAULT_K),
        (build_latent_graph, "n_nodes", R.DEFAULT_N_NODES), (edge_lengths, "n_nodes", R.DEFAULT_N_NODES),
        (pipeline.build_run, "n_nodes", R.DEFAULT_N_NODES), (GeodesicKMeans, "n_nodes", R.DEFAULT_N_NODES),
        (GeodesicDistance, "n_nodes", R.DEFAULT_N_NODES), (geodesic_distances, "n_nodes", R.DEFAULT_N_NODES),
        (build_latent_graph, "candidates", R.DEFAULT_CANDIDATES), (GeodesicKMeans, "candidates", R.DEFAULT_CANDIDATES),
        (GeodesicDistance, "candidates", R.DEFAULT_CANDIDATES), (pipeline.build_run, "candidates", R.DEFAULT_CANDIDATES),
        (build_latent_graph, "backend", R.DEFAULT_BACKEND), (knn, "backend", R.DEFAULT_BACKEND),
        (pipeline.build_run, "backend", R.DEFAULT_BACKEND),
        (GeodesicKMeans, "n_clusters", R.DEFAULT_N_CLUSTERS), (cluster_latent_graph, "n_clusters", R.DEFAULT_N_CLUSTERS),
        (pipeline.cluster_run, "n_clusters", R.DEFAULT_N_CLUSTERS),
        (refine_geodesics, "method", R.DEFAULT_REFINE), (refine_path, "method", R.DEFAULT_REFINE),
        (pipeline.geodesic_run, "refine", R.DEFAULT_REFINE), (pipeline.plot_run, "refine", R.DEFAULT_REFINE),
        (walks.random_walks, "kind", R.DEFAULT_WALK_KIND), (pipeline.walk_run, "kind", R.DEFAULT_WALK_KIND),
        (VAE.decoder, "variance", R.DEFAULT_VARIANCE), (iwae_log_likelihood, "variance", R.DEFAULT_VARIANCE),
        (VAEConfig, "latent_dim", R.DEFAULT_LATENT_DIM), (VAEConfig, "rbf_gate", R.DEFAULT_RBF_GATE),
        (VAEConfig, "architecture", R.DEFAULT_ARCHITECTURE), (VAEConfig, "seed", R.DEFAULT_SEED),
        (paper_claims, "n_samples", R.DEFAULT_IWAE_SAMPLES), (pipeline.evaluate_run, "n_samples", R.DEFAULT_IWAE_SAMPLES),
        (health.geometry_health, "n_pairs", R.DEFAULT_HEALTH_PAIRS), (pipeline.health_run, "n_pairs", R.DEFAULT_HEALTH_PAIRS),
        (pipeline.train_run, "data", R.DEFAULT_DATA), (walks.random_walks, "seed", R.DEFAULT_SEED),
        (train_test_split_indices, "held_out_fraction", R.DEFAULT_HELD_OUT_FRACTION),
    ]


@pytest.mark.parametrize("function,name,expected", _defaults(), ids=lambda v: getattr(v, "__qualname__", str(v)))
def test_library_defaults_come_from_the_registry(function: Callable[..., Any], name: str, expected: Any) -> None:
    """The same parameter has the same default everywhere (k = 20 for the graph and for both estimators, ...)."""
    assert inspect.signature(function).parameters[name].default == expected


# ---------------------------------------------------------------------------------------------------------------
# Every choice the CLI's --help or the README names is accepted by the library
# ---------------------------------------------------------------------------------------------------------------


def _accepts_device(name: str) -> None:
    from lsg_graph._validation import resolve_device

    try:
        resolve_device(name)
    except InvalidInput as exc:  # cuda on a machine without one: refused for that reason, not as an unknown name
        assert "not available" in str(exc), exc


def _accepts_data(spec: str) -> None:
    from lsg_graph.data import DATASETS

    assert spec.split(":")[0] in DATASETS, spec


def _accepts(registry_names: Any) -> Callable[[str], None]:
    def check(name: str) -> None:
        assert name in registry_names, name

    return check


# Placeholders the README and --help write inside choices, and a concrete value the library must accept for each.
PLACEHOLDERS = {"N": "3", "I": "1", "J": "2", "K": "3", "L": "4", "x": "0.5", "y": "-1.2", "HOST": "127.0.0.1",
                "PORT": "10001"}


def _concrete(choice: str) -> str:
    """The choice with its placeholders (I:J, x,y, ray://HOST:PORT, ...) replaced by concrete values."""
    return re.sub(r"\b[A-Za-z]+\b", lambda match: PLACEHOLDERS.get(match.group(), match.group()), choice)


def _accepts_curve_file(name: str) -> None:
    import tempfile

    from lsg_graph.pipeline import save_curve

    with tempfile.TemporaryDirectory() as folder:
        assert save_curve(Path(folder) / name, np.zeros((3, 2))).is_file()


def _accepts_cluster(address: str) -> None:
    from lsg_graph.distributed import RayExecutor

    RayExecutor(_concrete(address))  # checks the address; Ray itself starts only on the first call


def _validators() -> dict[str, Callable[[str], None]]:
    """Option flag -> a check that the library accepts a name for it."""
    from lsg_graph import plot, walks
    from lsg_graph.geodesics.refine import REFINE_METHODS
    from lsg_graph.graph.knn import resolve_backend
    from lsg_graph.model import VAEConfig
    from lsg_graph.pipeline import parse_pairs, parse_point

    return {
        "--refine": _accepts(REFINE_METHODS),
        "--backend": lambda name: resolve_backend(name, 2, "cpu"),
        "--kind": _accepts(walks.WALK_KINDS),
        "--architecture": lambda name: VAEConfig(input_dim=64, architecture=name, image_shape=(8, 8)),
        "--rbf-gate": lambda name: VAEConfig(input_dim=4, rbf_gate=name),
        "--device": _accepts_device,
        "--format": _accepts(plot.FORMATS),
        "--data": _accepts_data,
        "--cluster": _accepts_cluster,
        "--pairs": lambda text: parse_pairs(_concrete(text)),
        "--start": lambda text: parse_point(_concrete(text)),
        "--out": _accepts_curve_file,
        "--algorithm": _accepts_algorithm,
    }


def _accepts_algorithm(name: str) -> None:
    """GeodesicKMeans validates `name` as its algorithm (raises InvalidInput otherwise)."""
    from lsg_graph.cluster import GeodesicKMeans

    GeodesicKMeans(2, algorithm=name)._check_params()


# Quoted words in an option's help that are not choices of it.
NOT_CHOICES = {("--cluster", "ray"), ("--pairs", ";")}


def test_every_quoted_choice_in_the_option_help_is_accepted() -> None:
    """Each 'name' an option's help text quotes (--data 'idx:DIR', --cluster 'ray://HOST:PORT', ...) is accepted."""
    validators = _validators()
    checked = collections.Counter()
    for _name, command in typer.main.get_command(app).commands.items():
        for param in command.params:
            flag = max(param.opts, key=len)
            if flag not in validators:
                continue
            for quoted in re.findall(r"'([^']+)'", param.help or ""):
                if (flag, quoted) not in NOT_CHOICES:
                    validators[flag](quoted)
                    checked[flag] += 1
    assert {"--data", "--architecture", "--rbf-gate", "--device", "--backend", "--cluster", "--refine", "--kind",
            "--pairs"} <= set(checked), checked
    with pytest.raises(InvalidInput, match="ray://HOST:PORT"):
        _accepts_cluster("ray:/typo")  # the check can fail
    with pytest.raises(InvalidInput, match="--pairs"):
        validators["--pairs"]("1:2:3")


def _help_choices() -> list[tuple[str, str, list[str]]]:
    """(command, flag, choices) of every option whose --help lists its choices."""
    found = []
    for name, command in typer.main.get_command(app).commands.items():
        for param in command.params:
            metavar = getattr(param, "metavar", None) or ""
            if metavar.startswith("[") and "|" in metavar:
                flag = max(param.opts, key=len)
                found.append((name, flag, metavar.strip("[]").split("|")))
    return found


def test_help_lists_the_registry_choices_and_the_library_accepts_them() -> None:
    """The choices of --refine, --backend, --kind, --device, ... are the registry's, all accepted by the library."""
    validators = _validators()
    listed = _help_choices()
    flags = {flag for _, flag, _ in listed}
    assert {"--refine", "--backend", "--kind", "--architecture", "--rbf-gate", "--device", "--format"} <= flags
    for _command, flag, choices in listed:
        for choice in choices:
            validators[flag](choice)
    by_flag = {flag: choices for _, flag, choices in listed}
    assert by_flag["--refine"] == list(registry.REFINE_METHODS)
    assert by_flag["--backend"] == list(registry.KNN_BACKENDS)
    assert by_flag["--kind"] == list(registry.WALK_KINDS)
    assert by_flag["--algorithm"] == list(registry.CLUSTER_ALGORITHMS)
    with pytest.raises(InvalidInput, match="algorithm"):
        _accepts_algorithm("lloyd")


def test_help_text_shows_the_choices() -> None:
    """What --help prints holds the choices (the metavar) of the options."""
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["walk", "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "[euclidean|metric|brownian]" in result.output


def test_every_choice_in_the_readme_is_accepted() -> None:
    """Every 'a|b|c' list the README gives for a registry-backed option is accepted by the library."""
    readme = (ROOT / "README.md").read_text()
    validators = _validators()
    checked = 0
    for flag, choices in re.findall(r"(--[a-z-]+) ([\w:./,-]+(?:\|[\w:./,-]+)+)", readme):
        assert flag in validators, f"the README lists choices of {flag}, which this test cannot check"
        for choice in choices.split("|"):
            validators[flag](choice)
            checked += 1
    assert checked >= 25, checked  # the README's command list names the choices of at least these options


def test_cluster_count_and_neighbours_are_different_options() -> None:
    """`build --k` is neighbours; `cluster --clusters` is the number of clusters (the old `cluster --k` warns)."""
    commands = typer.main.get_command(app).commands
    build_flags = {opt for param in commands["build"].params for opt in param.opts}
    cluster = {opt: param for param in commands["cluster"].params for opt in param.opts}
    assert "--k" in build_flags and "--clusters" in cluster
    assert cluster["--k"].hidden and cluster["--clusters"].default == registry.DEFAULT_N_CLUSTERS


# ---------------------------------------------------------------------------------------------------------------
# The validation layer
# ---------------------------------------------------------------------------------------------------------------


def test_one_wording_of_the_rule_on_k() -> None:
    """The graph and the kNN search refuse k >= n with the same sentence."""
    from lsg_graph.graph.knn import knn
    from lsg_graph.graph.latent_graph import build_latent_graph
    from lsg_graph.manifolds import LinearDecoder
    from lsg_graph.metric import PullbackMetric

    codes = np.random.default_rng(0).normal(size=(12, 2))
    expected = r"^The 'k' parameter must be < the number of points \(12\); got 12\.$"
    with pytest.raises(InvalidInput, match=expected):
        knn(codes, 12)
    with pytest.raises(InvalidInput, match=expected):
        build_latent_graph(PullbackMetric(LinearDecoder(np.eye(2))), codes, k=12)
    with pytest.raises(InvalidInput, match=r"^The 'k' parameter must be <= the number of points \(12\); got 13\.$"):
        knn(codes, 13, codes[:2])


def test_estimator_messages_use_the_same_template() -> None:
    """scikit-learn-style checks name the owner but read like every other parameter error."""
    from lsg_graph._validation import check_int, check_int_param

    with pytest.raises(InvalidInput, match=r"^The 'n' parameter must be an int >= 1; got 0\.$"):
        check_int(0, "n")
    with pytest.raises(InvalidInput, match=r"^The 'n' parameter of Foo must be an int in the range \[1, inf\); got 0\.$"):
        check_int_param(0, "n", "Foo", 1)


def test_seed_check_returns_an_int_and_has_its_own_name() -> None:
    """check_seed gives an int (None -> 0); scikit-learn's check_random_state is not shadowed by a same-named helper."""
    from lsg_graph import _validation

    assert _validation.check_seed(None) == 0 and _validation.check_seed(np.int64(7)) == 7
    assert type(_validation.check_seed(np.int64(7))) is int
    assert not hasattr(_validation, "check_random_state")
    with pytest.raises(InvalidInput, match=r"The 'seed' parameter must be an int >= 0; got -1\."):
        _validation.check_seed(-1)


def test_warnings_point_at_the_callers_line() -> None:
    """A library warning is attributed to the user's line (this file), not to a line inside lsg_graph."""
    from lsg_graph.errors import DisconnectedGraphWarning
    from lsg_graph.graph.latent_graph import build_latent_graph
    from lsg_graph.manifolds import LinearDecoder
    from lsg_graph.metric import PullbackMetric

    codes = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [9.0, 9.0], [9.1, 9.0], [9.0, 9.1]])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_latent_graph(PullbackMetric(LinearDecoder(np.eye(2))), codes, k=2)
    found = [w for w in caught if issubclass(w.category, DisconnectedGraphWarning)]
    assert found and found[0].filename == __file__, [(w.filename, w.lineno) for w in caught]


def test_as_metric_does_not_change_its_argument() -> None:
    """The one coercion to a metric binds an unknown latent dimension on a copy."""
    import torch

    from lsg_graph.metric import PullbackMetric, as_metric

    metric = PullbackMetric(lambda z: torch.cat([z, z**2], dim=1))
    bound = as_metric(metric, np.zeros((3, 2)))
    assert bound.latent_dim == 2 and not metric.latent_dim_known
    assert as_metric(bound) is bound


# Names a module may define although another defines them too: module protocol hooks (PEP 562), one per package.
DEFINED_TWICE_ALLOWED = {"__getattr__", "__dir__"}


def _defined_twice(root: Path) -> dict[str, list[str]]:
    """Module-level function and class names defined more than once under `root` (two modules, or twice in one)."""
    places = collections.defaultdict(list)
    for path in sorted(root.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                places[node.name].append(str(path.relative_to(root)))
    return {name: paths for name, paths in places.items() if len(paths) > 1 and name not in DEFINED_TWICE_ALLOWED}


def test_no_helper_is_defined_twice(tmp_path: Path) -> None:
    """No module-level function or class name is defined twice in lsg_graph (a second name for one thing is an
    alias, `EuclideanDecoder = LinearDecoder.identity`, not a second definition)."""
    assert not _defined_twice(ROOT / "lsg_graph"), _defined_twice(ROOT / "lsg_graph")
    (tmp_path / "a.py").write_text("def helper():\n    pass\n\n\ndef __getattr__(name):\n    pass\n")
    (tmp_path / "b.py").write_text("class helper:\n    pass\n\n\ndef __getattr__(name):\n    pass\n")
    assert _defined_twice(tmp_path) == {"helper": ["a.py", "b.py"]}  # the check finds one; the hook is allowed


def test_paper_claims_example_and_evaluate_use_the_same_split() -> None:
    """examples/paper_claims.py holds out exactly the rows `lsg-graph train`/`evaluate` hold out (same seed)."""
    import importlib.util

    from lsg_graph.data import load_dataset
    from lsg_graph.pipeline import HELD_OUT_FRACTION, _split

    spec = importlib.util.spec_from_file_location("paper_claims_example", ROOT / "examples" / "paper_claims.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    digits = load_dataset("digits")
    train, held_out = _split(digits, 3)
    got_train, got_held_out = example.digits_split(3)
    assert HELD_OUT_FRACTION == registry.DEFAULT_HELD_OUT_FRACTION
    assert np.array_equal(got_train, digits.images[train]) and np.array_equal(got_held_out, digits.images[held_out])
