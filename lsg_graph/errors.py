"""Exceptions and warnings raised by lsg-graph; every library error derives from LsgGraphError."""

from __future__ import annotations


class LsgGraphError(Exception):
    """Base class of every error lsg-graph raises on purpose (the CLI prints these as one line)."""


class InvalidInput(LsgGraphError, ValueError, TypeError):
    """An argument, array or file content is not what was expected; the message names it.

    It is a ValueError and a TypeError, like scikit-learn's InvalidParameterError, so code that catches the
    builtin classes scikit-learn raises for bad parameters catches lsg-graph's too.
    """


class ArtifactError(LsgGraphError):
    """A saved artifact is missing, corrupt, truncated, foreign, stale or of an unsupported version."""


class StaleArtifactError(ArtifactError):
    """An artifact does not match the inputs it records (a graph built from another model); the message says which."""


class RunLockedError(ArtifactError):
    """Another process is writing to the same run directory (its lock is held); the message names the run."""


class ResourceLimitError(InvalidInput):
    """A request would need more memory or time than the configured limit; the message names the limit and override."""


class DecoderError(LsgGraphError, ValueError):
    """A decoder returned the wrong shape or non-finite values."""


class DisconnectedGraph(LsgGraphError):
    """The latent graph has several connected components and joining them was refused."""


class NotFittedError(LsgGraphError, ValueError, AttributeError):
    """An estimator or model was used before it was fitted or trained."""


class ConvergenceWarning(UserWarning):
    """An iterative method stopped before converging; the message names the parameter to raise."""


class DisconnectedGraphWarning(UserWarning):
    """The latent graph had several components and was joined by bridges; the message says what to raise."""
