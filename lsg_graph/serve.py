"""`lsg-graph serve`: an HTTP query service over a built run (FastAPI; the optional extra `serve`).

The run (graph, model) is loaded once at start-up and never written: its arrays are made read-only. Endpoints:

* ``GET /health``: status and the graph's size.
* ``POST /distance`` ``{"pairs": [[a, b], ...]}``: graph distances between node pairs with their bounds: the lower
  bound is the output-space chord ||g(a) - g(b)|| with g = [mu; sigma] (the decoded curve joins g(a) to g(b)), the
  upper bound is the graph distance itself (the length of an actual curve).
* ``POST /geodesic`` ``{"source": node or point, "target": node or point, "refine": "none"|"shooting"|"energy",
  "images": false}``: the graph path (latent points are attached to the graph), optionally refined by
  `refine_geodesics`, optionally with the decoded means along the curve.
* ``POST /nearest`` ``{"node": i}`` or ``{"point": [...]}`` and ``"k"``: the k geodesically nearest codes.

Inputs are validated by pydantic models (NaN and inf refused, batch sizes capped) and by the library's own checks;
bad requests get a 4xx answer whose "detail" is one line naming the bad value. The request body is capped at
`ServiceLimits.max_body_bytes` before it is parsed. JSON only, no pickle. Binding to anything but 127.0.0.1
needs an explicit host.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch

from lsg_graph.errors import InvalidInput, LsgGraphError

try:  # the optional extra: `pip install lsg-graph[serve]`
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, Field, model_validator
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "lsg-graph serve needs FastAPI and uvicorn: pip install 'lsg-graph[serve]' (fastapi, uvicorn)."
    ) from exc

DEFAULT_HOST = "127.0.0.1"  # loopback only unless the caller names another host
DEFAULT_PORT = 8000
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServiceLimits:
    """Caps on one request: pairs per /distance, distinct sources per /distance (one Dijkstra each), k of /nearest,
    curve points with decoded images, and the body size in bytes."""

    max_pairs: int = 4096
    max_sources: int = 64
    max_k: int = 1000
    max_image_points: int = 512
    max_body_bytes: int = 1 << 20


Finite = Annotated[float, Field(allow_inf_nan=False)]
NodeIndex = Annotated[int, Field(ge=0)]


class _Strict(BaseModel):
    """Request bodies: unknown fields refused."""

    model_config = ConfigDict(extra="forbid")


class DistanceRequest(_Strict):
    """Node pairs (m, 2)."""

    pairs: list[tuple[NodeIndex, NodeIndex]] = Field(min_length=1)


class GeodesicRequest(_Strict):
    """End points (node index or latent point), refinement method, whether to decode images along the curve."""

    source: NodeIndex | list[Finite]
    target: NodeIndex | list[Finite]
    refine: str = "none"
    images: bool = False


class NearestRequest(_Strict):
    """Exactly one of a node index or a latent point, and k."""

    node: NodeIndex | None = None
    point: list[Finite] | None = None
    k: int = Field(default=10, ge=1)

    @model_validator(mode="after")
    def _one_query(self) -> NearestRequest:
        """Refuse none or both of node and point."""
        if (self.node is None) == (self.point is None):
            raise ValueError("give exactly one of 'node' (a node index) or 'point' (latent coordinates)")
        return self


class _BodyLimit:
    """ASGI middleware: answer 413 when a request body exceeds `limit` bytes (declared or streamed)."""

    def __init__(self, app: Any, limit: int) -> None:
        """Wrap the ASGI `app`."""
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """Refuse an oversized body, else pass the buffered request on."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _reject(send, self.limit)
            return
        messages, received, more = [], 0, True
        while more:  # buffer the body (at most `limit` bytes), then replay it to the app
            message = await receive()
            if message["type"] != "http.request":
                messages.append(message)
                break
            received += len(message.get("body", b""))
            if received > self.limit:
                await _reject(send, self.limit)
                return
            messages.append(message)
            more = message.get("more_body", False)
        replay = iter(messages)

        async def buffered() -> dict:
            message = next(replay, None)
            return message if message is not None else await receive()

        await self.app(scope, buffered, send)


async def _reject(send: Any, limit: int) -> None:
    """Send a 413 JSON answer."""
    body = f'{{"detail": "The request body exceeds the limit of {limit} bytes."}}'.encode()
    await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


class RunService:
    """The loaded run: graph (read-only arrays), pullback metric and decoder; the queries the endpoints answer."""

    def __init__(self, run_dir: str | Path, device: str = "cpu", limits: ServiceLimits | None = None) -> None:
        """Load the run's graph and model once (lsg_graph.pipeline); freeze the graph's arrays."""
        from lsg_graph.pipeline import load_graph, load_metric

        self.run_dir = Path(run_dir)
        self.limits = limits or ServiceLimits()
        self.graph = load_graph(run_dir)
        for array in (self.graph.codes, self.graph.weights.data, self.graph.weights.indices, self.graph.weights.indptr):
            array.flags.writeable = False
        self.metric = load_metric(run_dir, self.graph, device)
        self._lock = threading.Lock()  # torch modules and scipy calls are shared by the worker threads

    # ------------------------------------------------------------------------------------------------ queries

    def health(self) -> dict[str, Any]:
        """Status and sizes."""
        graph = self.graph
        return {
            "status": "ok", "n_points": graph.n_points, "latent_dim": graph.latent_dim, "n_edges": graph.n_edges,
            "variance": graph.params.get("variance", "rbf"), "limits": self.limits.__dict__,
        }

    def distance(self, request: DistanceRequest) -> dict[str, Any]:
        """Graph distances of node pairs with lower (output chord) and upper (graph distance) bounds.

        The chord is capped at the graph distance: edge lengths are quadratures, so on a near-straight edge the
        computed length can fall below the chord by the quadrature error.
        """
        from lsg_graph.distances import dijkstra_rows

        pairs = np.asarray(request.pairs, dtype=np.int64).reshape(-1, 2)
        self._check_count(len(pairs), self.limits.max_pairs, "pairs")
        self._check_nodes(pairs.ravel(), "pairs")
        sources, rows = np.unique(pairs[:, 0], return_inverse=True)
        self._check_count(len(sources), self.limits.max_sources, "distinct source nodes in 'pairs'")
        with self._lock:
            distances = dijkstra_rows(self.graph.weights, sources)[rows.ravel(), pairs[:, 1]]
            nodes, inverse = np.unique(pairs.ravel(), return_inverse=True)
            decoded = self._stacked(self.graph.codes[nodes])[inverse.ravel()].reshape(len(pairs), 2, -1)
        chord = np.linalg.norm(decoded[:, 0] - decoded[:, 1], axis=1)
        return {
            "distance": _floats(distances), "lower": _floats(np.minimum(chord, distances)), "upper": _floats(distances),
        }

    def geodesic(self, request: GeodesicRequest) -> dict[str, Any]:
        """The graph path between two end points, optionally refined and with decoded images."""
        from lsg_graph._validation import check_choice
        from lsg_graph.geodesics.refine import REFINE_METHODS, refine_geodesics
        from lsg_graph.geodesics.shortest import shortest_path

        check_choice(request.refine, "refinement method", REFINE_METHODS)
        graph, ends, points = self.graph, [], []
        for name, end in (("source", request.source), ("target", request.target)):
            if isinstance(end, int):
                self._check_nodes(np.array([end]), name)
                ends.append(end)
            else:
                points.append(self._check_point(end, name))
                ends.append(graph.n_points + len(points) - 1)
        with self._lock:
            if points:
                graph = graph.attach(np.vstack(points), self.metric)
            path = shortest_path(graph, ends[0], ends[1])
            answer: dict[str, Any] = {
                "graph_length": float(path.length), "nodes": _node_list(path.nodes, self.graph.n_points),
                "points": path.points.tolist(), "euclidean_distance": float(path.euclidean_distance),
            }
            curve = path.points
            if request.refine != "none":
                result = refine_geodesics(self.metric, graph, [(ends[0], ends[1])], method=request.refine)[0]
                curve = result.points
                answer["refined"] = {
                    "length": float(result.length), "converged": bool(result.converged), "method": result.method,
                    "points": result.points.tolist(), "message": result.message,
                }
            if request.images:
                self._check_count(len(curve), self.limits.max_image_points, "curve points with images")
                answer["images"] = self._means(curve).tolist()
        return answer

    def nearest(self, request: NearestRequest) -> dict[str, Any]:
        """The k geodesically nearest codes of a node (itself excluded) or of a latent point."""
        from lsg_graph.distances import attached_edges, dijkstra_rows, leaf_distances_to_all

        graph = self.graph
        k = self._check_count(request.k, min(self.limits.max_k, graph.n_points - (request.node is not None)), "k")
        with self._lock:
            if request.node is not None:
                self._check_nodes(np.array([request.node]), "node")
                distances = dijkstra_rows(graph.weights, np.array([request.node]))[0]
                distances[request.node] = np.inf
            else:
                point = self._check_point(request.point, "point")
                distances = leaf_distances_to_all(graph.weights, attached_edges(graph, self.metric, point[None]))[0]
        order = np.argpartition(distances, k - 1)[:k]
        order = order[np.lexsort((order, distances[order]))]
        return {"indices": order.tolist(), "distances": _floats(distances[order])}

    # ------------------------------------------------------------------------------------------------ checks

    def _check_nodes(self, nodes: np.ndarray, name: str) -> None:
        """Refuse node indices outside [0, n)."""
        bad = nodes[(nodes < 0) | (nodes >= self.graph.n_points)]
        if bad.size:
            raise InvalidInput(
                f"Unknown node {int(bad[0])} in {name!r}: the graph has {self.graph.n_points} nodes (0 .. {self.graph.n_points - 1})."
            )

    def _check_point(self, point: list[float], name: str) -> np.ndarray:
        """A latent point of the graph's dimension (its entries are finite by the request model)."""
        if len(point) != self.graph.latent_dim:
            raise InvalidInput(f"{name!r} must have {self.graph.latent_dim} coordinates; got {len(point)}.")
        return np.asarray(point, dtype=np.float64)

    @staticmethod
    def _check_count(count: int, limit: int, name: str) -> int:
        """Refuse more than `limit` items."""
        if count > limit:
            raise InvalidInput(f"Too many {name}: {count}; this service answers at most {limit} per request.")
        return count

    def _stacked(self, codes: np.ndarray) -> np.ndarray:
        """g(z) = [mu; sigma] (n, 2D) float64."""
        with torch.no_grad():
            return self.metric.stacked(codes).double().cpu().numpy()

    def _means(self, codes: np.ndarray) -> np.ndarray:
        """Decoded means mu(z) (n, D) float64."""
        return self._stacked(codes)[:, : self.metric.output_dim]


def _floats(values: np.ndarray) -> list[float | None]:
    """JSON numbers (inf, for unreachable pairs, as null)."""
    return [float(value) if np.isfinite(value) else None for value in np.asarray(values, dtype=np.float64)]


def _node_list(nodes: np.ndarray, n_points: int) -> list[int | None]:
    """Path nodes, attached latent points (indices >= n) as null."""
    return [int(node) if node < n_points else None for node in nodes]


def _one_line(exc: RequestValidationError) -> str:
    """The first validation error as one line: where and what."""
    errors = exc.errors()
    if not errors:
        return "Invalid request."
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "body"
    more = f" (and {len(errors) - 1} more error(s))" if len(errors) > 1 else ""
    return f"Invalid request at {where!r}: {first.get('msg', 'invalid value')}{more}."


def create_app(run_dir: str | Path, device: str = "cpu", limits: ServiceLimits | None = None) -> FastAPI:
    """The FastAPI app serving `run_dir` (loaded now, once); wrap it in uvicorn or test it with TestClient."""
    service = RunService(run_dir, device, limits)
    app = FastAPI(title="lsg-graph", description="Geodesic queries over a built lsg-graph run.", docs_url=None, redoc_url=None)
    app.state.service = service

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": _one_line(exc)})

    @app.exception_handler(LsgGraphError)
    async def _library(request: Request, exc: LsgGraphError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    @app.get("/health")
    def health() -> dict[str, Any]:
        return service.health()

    @app.post("/distance")
    def distance(body: DistanceRequest) -> dict[str, Any]:
        return service.distance(body)

    @app.post("/geodesic")
    def geodesic(body: GeodesicRequest) -> dict[str, Any]:
        return service.geodesic(body)

    @app.post("/nearest")
    def nearest(body: NearestRequest) -> dict[str, Any]:
        return service.nearest(body)

    app.add_middleware(_BodyLimit, limit=service.limits.max_body_bytes)
    return app


def server_config(
    run_dir: str | Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, device: str = "cpu",
    limits: ServiceLimits | None = None,
) -> Any:
    """A uvicorn.Config for the app over `run_dir`, bound to `host` (default loopback only) and `port`."""
    import uvicorn

    from lsg_graph._validation import check_int

    if not isinstance(host, str) or not host:
        raise InvalidInput(f"host must be a non-empty string such as {DEFAULT_HOST!r}; got {host!r}.")
    port = check_int(port, "port", minimum=0, maximum=65535)
    return uvicorn.Config(create_app(run_dir, device, limits), host=host, port=port, log_level="warning", access_log=False)


def serve_run(
    run_dir: str | Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, device: str = "cpu",
    limits: ServiceLimits | None = None,
) -> None:
    """Serve `run_dir` until interrupted."""
    import uvicorn

    uvicorn.Server(server_config(run_dir, host, port, device, limits)).run()
