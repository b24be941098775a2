"""`lsg-graph serve`: answers against the library's own results, bounds, loopback default, bad requests get 4xx."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the 'serve' extra (fastapi, uvicorn) is not installed")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx (in the 'dev' extra)")
pytest.importorskip("uvicorn", reason="the 'serve' extra (fastapi, uvicorn) is not installed")

with warnings.catch_warnings():  # starlette's note that it prefers httpx2 to httpx, at import
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from lsg_graph.distances import dijkstra_rows  # noqa: E402
from lsg_graph.geodesics.shortest import shortest_path  # noqa: E402
from lsg_graph.pipeline import build_run, load_graph, load_metric, train_run  # noqa: E402
from lsg_graph.serve import DEFAULT_HOST, ServiceLimits, create_app, server_config  # noqa: E402

LIMITS = ServiceLimits(max_pairs=50, max_sources=10, max_k=40, max_image_points=200, max_body_bytes=20_000)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small run: the default VAE trained briefly on the digits, graph with k = 6."""
    run = tmp_path_factory.mktemp("serve") / "run"
    train_run(run, "digits", seed=0, progress=False, device="cpu", epochs=2, rbf_epochs=1)
    build_run(run, k=6, progress=False, device="cpu")
    return run


@pytest.fixture(scope="module")
def client(run_dir: Path) -> TestClient:
    """A TestClient over the app (the run loaded once)."""
    return TestClient(create_app(run_dir, limits=LIMITS))


@pytest.fixture(scope="module")
def truth(run_dir: Path) -> tuple:
    """The run's graph and metric loaded independently of the service."""
    graph = load_graph(run_dir)
    return graph, load_metric(run_dir, graph, "cpu")


def test_health(client: TestClient, truth: tuple) -> None:
    """/health reports the graph's size."""
    answer = client.get("/health")
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "ok" and body["n_points"] == truth[0].n_points == 1797 and body["latent_dim"] == 2


def test_distance_matches_dijkstra_and_bounds(client: TestClient, truth: tuple) -> None:
    """Distances equal exact Dijkstra; lower = output chord ||g(a) - g(b)|| <= distance = upper."""
    graph, metric = truth
    rng = np.random.default_rng(0)
    pairs = np.column_stack([rng.integers(0, graph.n_points, 40) % 10, rng.integers(0, graph.n_points, 40)])
    answer = client.post("/distance", json={"pairs": pairs.tolist()})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    exact = dijkstra_rows(graph.weights, pairs[:, 0])[np.arange(len(pairs)), pairs[:, 1]]
    np.testing.assert_allclose(body["distance"], exact, rtol=1e-12)
    np.testing.assert_array_equal(body["upper"], body["distance"])
    g = metric.stacked(graph.codes).detach().double().numpy()
    chord = np.linalg.norm(g[pairs[:, 0]] - g[pairs[:, 1]], axis=1)
    np.testing.assert_allclose(body["lower"], np.minimum(chord, exact), rtol=1e-6, atol=1e-9)
    assert np.all(np.array(body["lower"]) <= np.array(body["upper"]))
    assert np.mean(chord <= exact * (1 + 1e-6)) == 1.0  # the chord is a true lower bound of the graph length


def test_nearest_of_a_node_and_of_a_point(client: TestClient, truth: tuple) -> None:
    """k nearest by graph distance, sorted; a point is attached like `LatentGraph.attach` does."""
    graph, metric = truth
    answer = client.post("/nearest", json={"node": 7, "k": 12}).json()
    row = dijkstra_rows(graph.weights, np.array([7]))[0]
    row[7] = np.inf
    assert answer["indices"] == np.argsort(row, kind="stable")[:12].tolist()
    np.testing.assert_allclose(answer["distances"], np.sort(row)[:12], rtol=1e-12)
    point = (graph.codes[3] + graph.codes[4]) / 2
    answer = client.post("/nearest", json={"point": point.tolist(), "k": 5}).json()
    attached = graph.attach(point[None], metric)
    row = dijkstra_rows(attached.weights, np.array([graph.n_points]))[0][: graph.n_points]
    np.testing.assert_allclose(answer["distances"], np.sort(row)[:5], rtol=1e-9)
    assert set(answer["indices"]) == set(np.argsort(row, kind="stable")[:5].tolist())


def test_geodesic_graph_refined_and_images(client: TestClient, truth: tuple) -> None:
    """The graph path equals shortest_path; the refined curve is no longer than it; images are the decoded means."""
    graph, metric = truth
    target = int(np.argsort(dijkstra_rows(graph.weights, np.array([0]))[0])[40])  # a short path: a quick refinement
    answer = client.post("/geodesic", json={"source": 0, "target": target, "refine": "shooting", "images": True})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    path = shortest_path(graph, 0, target)
    assert body["nodes"] == path.nodes.tolist()
    assert body["graph_length"] == pytest.approx(path.length, rel=1e-12)
    assert body["refined"]["length"] <= body["graph_length"] * (1 + 1e-9)
    curve = np.array(body["refined"]["points"])
    np.testing.assert_allclose(curve[0], graph.codes[0], atol=1e-6)
    np.testing.assert_allclose(curve[-1], graph.codes[target], atol=1e-4)
    means = metric.decoder(metric._tensor(curve, "z"))[0].detach().double().numpy()
    np.testing.assert_allclose(np.array(body["images"]), means, rtol=1e-5, atol=1e-6)
    from_point = client.post("/geodesic", json={"source": graph.codes[0].tolist(), "target": target}).json()
    assert from_point["nodes"][0] is None and from_point["graph_length"] <= path.length * (1 + 1e-6) + 1e-9


@pytest.mark.parametrize(
    "endpoint, body, status, message",
    [
        ("/distance", b'{"pairs": [[0, 1]', 422, "JSON decode error"),
        ("/distance", {"pairs": [[0, 1]] * 51}, 422, "Too many pairs: 51; this service answers at most 50"),
        ("/distance", {"pairs": [[i, 0] for i in range(11)]}, 422, "Too many distinct source nodes"),
        ("/distance", {"pairs": [[0, 5000]]}, 422, "Unknown node 5000 in 'pairs': the graph has 1797 nodes"),
        ("/distance", {"pairs": [[-1, 2]]}, 422, "greater than or equal to 0"),
        ("/distance", {"pairs": []}, 422, "at least 1 item"),
        ("/distance", {"pairs": [[0, 1, 2]]}, 422, "Invalid request at 'pairs.0'"),
        ("/distance", {"pairs": [[0, 1]], "extra": 1}, 422, "Extra inputs are not permitted"),
        ("/nearest", b'{"point": [NaN, 0.0], "k": 3}', 422, "finite number"),
        ("/nearest", b'{"point": [Infinity, 0.0], "k": 3}', 422, "finite number"),
        ("/nearest", {"point": [0.0, 0.0, 1.0]}, 422, "'point' must have 2 coordinates; got 3"),
        ("/nearest", {"k": 3}, 422, "exactly one of 'node'"),
        ("/nearest", {"node": 1, "k": 41}, 422, "Too many k: 41"),
        ("/nearest", {"node": 1797}, 422, "Unknown node 1797 in 'node'"),
        ("/geodesic", {"source": 0, "target": 1, "refine": "magic"}, 422, "Unknown refinement method 'magic'"),
        ("/geodesic", {"source": [0.0, "a"], "target": 1}, 422, "Invalid request at 'source"),
        ("/distance", b'{"pairs": [' + b"[0, 1], " * 4000 + b"[0, 1]]}", 413, "exceeds the limit of 20000 bytes"),
    ],
)
def test_bad_requests_get_4xx_with_one_line(client: TestClient, endpoint: str, body, status: int, message: str) -> None:
    """Every bad request is answered with a 4xx and a one-line 'detail' naming the problem; the service stays up."""
    if isinstance(body, bytes):
        answer = client.post(endpoint, content=body, headers={"content-type": "application/json"})
    else:
        answer = client.post(endpoint, json=body)
    assert answer.status_code == status, answer.text
    detail = answer.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and message in detail, detail
    assert client.get("/health").status_code == 200


def test_streamed_body_over_the_limit_is_refused(client: TestClient) -> None:
    """A body sent without content-length is counted as it arrives."""

    def chunks():
        yield b'{"pairs": ['
        for _ in range(3000):
            yield b"[0, 1], "
        yield b"[0, 1]]}"

    answer = client.post("/distance", content=chunks(), headers={"content-type": "application/json"})
    assert answer.status_code == 413, answer.text


def test_run_is_read_only(client: TestClient) -> None:
    """The served graph's arrays cannot be written."""
    service = client.app.state.service
    with pytest.raises(ValueError, match="read-only"):
        service.graph.codes[0, 0] = 1.0


def test_default_bind_is_loopback(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """server_config and `lsg-graph serve` bind 127.0.0.1 unless --host names another address."""
    assert DEFAULT_HOST == "127.0.0.1"
    assert server_config(run_dir).host == "127.0.0.1"
    import uvicorn

    from cli.main import app

    bound = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, *args, **kwargs: bound.append(self.config.host))
    result = CliRunner().invoke(app, ["serve", "--run", str(run_dir)])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["serve", "--run", str(run_dir), "--host", "0.0.0.0", "--port", "9"])
    assert result.exit_code == 0, result.output
    assert bound == ["127.0.0.1", "0.0.0.0"]
    result = CliRunner().invoke(app, ["serve", "--run", str(run_dir / "missing")])
    assert result.exit_code == 1 and "Error:" in result.output
