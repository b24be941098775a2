"""What every refinement method shares: the validated options, one pair's problem, and a method's candidate curve."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lsg_graph._validation import check_choice, check_float, check_int, check_positive_int, invalid_parameter

DEFAULT_STEPS = 32  # RK4 steps over t in [0, 1], shared among the segments
DEFAULT_TOL = 1e-8  # shooting: ||residual|| / ||b - a|| (end point, and continuity); energy: relative energy change
DEFAULT_MAX_ITER = 20  # Newton iterations (single and multiple shooting)
DEFAULT_SEGMENTS = 8  # shooting segments of the first pass (1: single shooting); the second pass uses twice as many
DEFAULT_POINTS = 64  # energy curve nodes
DEFAULT_ENERGY_ITER = 500  # L-BFGS iterations (energy method and fallback)
DEFAULT_RIDGE = 1e-8  # relative ridge added to M in the geodesic equation (and to the Gauss-Newton blocks)
DEFAULT_GN_SEGMENTS = 16  # segments (nodes - 1) of the first Gauss-Newton level
DEFAULT_GN_MAX_SEGMENTS = 128  # ... doubled per level up to this many
DEFAULT_GN_RTOL = 1e-3  # ... until two levels agree in length to this relative difference
DEFAULT_GN_TOL = 1e-4  # Gauss-Newton convergence: relative decrement (docs/geodesics.md)
DEFAULT_GN_ITER = 100  # Levenberg-Marquardt trial steps per level
DEFAULT_GN_MEMORY = 3  # Anderson extrapolation memory of the Levenberg-Marquardt solver (0: plain steps)
DEFAULT_GN_SPACING = "latent"  # where the Gauss-Newton nodes sit along the curve (GN_SPACINGS)
DEFAULT_GN_FLOAT32_JACOBIANS = True  # Gauss-Newton Jacobians of float64 VAE decoders from a float32 copy
DEFAULT_POLISH_DIM = 2  # method "auto" polishes Gauss-Newton curves by shooting up to this latent dimension
GN_SPACINGS = ("latent", "equal")
FALLBACK_NAMES = ("energy", "none")
INITIAL_NAMES = ("energy", "graph")
KEEP_RTOL = 1e-9  # a converged curve this close above the graph length means the graph path is already geodesic


@dataclass(frozen=True)
class RefineOptions:
    """Validated refinement parameters shared by every method (InvalidInput naming a bad one on construction).

    Parameters
    ----------
    tol : float, default DEFAULT_TOL
        Shooting's end-point (and continuity) error relative to ||b - a||; the energy method's relative energy
        change over its check interval.
    max_iter : int, default DEFAULT_MAX_ITER
        Newton iterations per shooting attempt.
    n_steps : int, default DEFAULT_STEPS
        RK4 steps over [0, 1], shared by the n_segments shooting segments.
    n_segments : int, default DEFAULT_SEGMENTS
        Shooting segments of the first pass (1: single shooting; the second pass uses twice as many).
    n_points, energy_iter : int
        Nodes and L-BFGS iterations of the energy method and fallback.
    fallback : {"energy", "none"}
        What runs for pairs shooting cannot solve.
    initial : {"energy", "graph"}
        Shooting's initial guess: the graph path after a short energy minimisation, or the path itself.
    ridge : float
        Relative ridge of the geodesic equation and of the Gauss-Newton blocks.
    gn_segments, gn_iter, gn_tol : int, int, float
        Segments of the first Gauss-Newton level, its trial steps per level and its convergence tolerance (the
        relative Gauss-Newton decrement, docs/geodesics.md).
    gn_max_segments, gn_rtol : int, float
        Levels double the segments up to gn_max_segments until two agree in length to gn_rtol (relative).
    gn_memory : int, default DEFAULT_GN_MEMORY
        Accepted points the Gauss-Newton solver's Anderson extrapolation combines (0: plain Levenberg-Marquardt
        steps; docs/geodesics.md).
    gn_float32_jacobians : bool, default DEFAULT_GN_FLOAT32_JACOBIANS
        For a float64 VAE decoder (one with the fused Jacobian pass), take the Gauss-Newton Jacobians from a float32
        copy; decoder values, energies, lengths and the normal equations stay float64. A gn_tol below 64 float32
        epsilons (7.6e-6) uses float64 Jacobians regardless.
    gn_spacing : {"latent", "equal"}, default DEFAULT_GN_SPACING
        Where the Gauss-Newton nodes sit along the curve: "latent", equally spaced in latent arc length (each level
        re-places them; their times follow the output-space arc length, so the discrete energy still describes a
        constant-speed curve), or "equal", at equal times (equally spaced in metric length). A spline through
        latent-spaced nodes represents a curve whose latent speed varies strongly far more accurately
        (docs/geodesics.md).
    polish_dim : int, default DEFAULT_POLISH_DIM
        Method "auto" polishes Gauss-Newton curves by shooting when the latent dimension is at most this and the
        metric computes in float64 (0: never).
    """

    tol: float = DEFAULT_TOL
    max_iter: int = DEFAULT_MAX_ITER
    n_steps: int = DEFAULT_STEPS
    n_segments: int = DEFAULT_SEGMENTS
    n_points: int = DEFAULT_POINTS
    energy_iter: int = DEFAULT_ENERGY_ITER
    fallback: str = "energy"
    initial: str = "energy"
    ridge: float = DEFAULT_RIDGE
    gn_segments: int = DEFAULT_GN_SEGMENTS
    gn_iter: int = DEFAULT_GN_ITER
    gn_tol: float = DEFAULT_GN_TOL
    gn_max_segments: int = DEFAULT_GN_MAX_SEGMENTS
    gn_rtol: float = DEFAULT_GN_RTOL
    gn_memory: int = DEFAULT_GN_MEMORY
    gn_float32_jacobians: bool = DEFAULT_GN_FLOAT32_JACOBIANS
    polish_dim: int = DEFAULT_POLISH_DIM
    gn_spacing: str = DEFAULT_GN_SPACING

    def __post_init__(self) -> None:
        """Validate every field."""
        object.__setattr__(self, "tol", check_float(self.tol, "tol", minimum=0.0, strict_minimum=True))
        check_positive_int(self.max_iter, "max_iter")
        check_positive_int(self.n_steps, "n_steps")
        check_positive_int(self.n_segments, "n_segments")
        check_int(self.n_points, "n_points", minimum=3)
        check_positive_int(self.energy_iter, "energy_iter")
        check_choice(self.fallback, "fallback", FALLBACK_NAMES)
        check_choice(self.initial, "initial guess", INITIAL_NAMES)
        object.__setattr__(self, "ridge", check_float(self.ridge, "ridge", minimum=0.0))
        check_int(self.gn_segments, "gn_segments", minimum=2)
        check_positive_int(self.gn_iter, "gn_iter")
        object.__setattr__(self, "gn_tol", check_float(self.gn_tol, "gn_tol", minimum=0.0, strict_minimum=True))
        check_int(self.gn_max_segments, "gn_max_segments", minimum=2)
        object.__setattr__(self, "gn_rtol", check_float(self.gn_rtol, "gn_rtol", minimum=0.0))
        check_int(self.gn_memory, "gn_memory", minimum=0)
        if not isinstance(self.gn_float32_jacobians, (bool, np.bool_)):
            raise invalid_parameter("gn_float32_jacobians", "True or False", repr(self.gn_float32_jacobians))
        object.__setattr__(self, "gn_float32_jacobians", bool(self.gn_float32_jacobians))
        check_int(self.polish_dim, "polish_dim", minimum=0)
        check_choice(self.gn_spacing, "gn_spacing", GN_SPACINGS)


_Options = RefineOptions


@dataclass(frozen=True)
class _Problem:
    """One pair to refine: a start curve (m, d) from a to b and its segment lengths (m - 1,); the graph path's
    length and node ids; `bound`, the length an accepted shooting curve may not exceed (graph or start curve)."""

    points: np.ndarray
    edges: np.ndarray
    graph_length: float
    source: int | None
    target: int | None
    bound: float = np.inf
    velocities: np.ndarray | None = None  # the start curve in Hermite form (points at equal times): its velocities


@dataclass
class _Candidate:
    """A curve one method produced for one problem (mutable while the methods run)."""

    points: np.ndarray
    length: float
    converged: bool
    method: str
    n_iter: int
    endpoint_error: float = 0.0
    initial_velocity: np.ndarray | None = None
    message: str = ""
    within_bound: bool = True
    velocities: np.ndarray | None = None  # Hermite velocities at the points (equal times on [0, 1]); None: polyline



def _resample(problem: _Problem, fractions: np.ndarray) -> np.ndarray:
    """Points (f, d) of the graph polyline at the given fractions of its metric length (linear within edges)."""
    cumulative = np.concatenate([[0.0], np.cumsum(problem.edges)])
    total = cumulative[-1]
    if total <= 0.0 or len(problem.points) < 2:
        return np.repeat(problem.points[:1], len(fractions), axis=0)
    return np.stack([np.interp(fractions * total, cumulative, column) for column in problem.points.T], axis=1)

